"""The frozen CLIP backbone: loading, freezing, tokenising and fingerprinting.

A backbone comes from a hub name (``openai/clip-vit-base-patch32``) or a local
folder saved by ``save_pretrained``. Its **fingerprint** is the sha256 of the
sorted ``(name, dtype, shape, bytes)`` of the weights as stored in the file,
plus the image and text preprocessing settings. Every prompt set records it,
and loading a prompt set onto a backbone with another fingerprint is refused.
The weight hash is computed once per file and cached under
``$VOPSTORE_HOME/cache/fingerprints`` keyed by (realpath, size, mtime_ns).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vopstore.core import atomic_write_bytes, canonical_json
from vopstore.errors import (BackboneMismatchError, ConfigError, FileMissingError, NotFoundError,
                             PermissionDeniedError, StoreUnavailableError)
from vopstore.home import cache_dir
from vopstore.tokenizer import clip_tokenizer, save_clip_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class Backbone:
    """A frozen CLIP plus everything needed to feed it.

    Attributes:
        name: the hub name or the absolute folder path it was loaded from.
        model: the ``transformers.CLIPModel``, in eval mode, every parameter frozen.
        tokenizer: its ``CLIPTokenizer``.
        image_size: the square crop size the vision tower expects.
        image_mean, image_std: per-channel normalisation of pixel values.
        fingerprint: sha256 hex of weights + preprocessing (see module docstring).
        device, dtype: where and in which precision the model lives.
        resize_size: the shortest-edge resize before the centre crop.
    """

    name: str
    model: Any
    tokenizer: Any
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    resize_size: int = 224
    context_length: int = 77
    eot_token_id: int = 49407
    extra: dict = field(default_factory=dict)

    def tokenize(self, texts: list[str], n_prompts: int = 0) -> torch.Tensor:
        """Token ids (B, L) padded to the longest text, on ``self.device``.

        Texts are truncated to ``context_length - n_prompts`` ids so that the
        prompts fit into CLIP's 77 positions; truncation keeps SOT ... EOT.
        """
        max_len = self.context_length - n_prompts
        if max_len < 2:
            raise ConfigError(f"{n_prompts} text prompts leave no room for SOT/EOT in {self.context_length} tokens")
        if isinstance(texts, str):
            texts = [texts]
        batch = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=max_len,
                               return_tensors="pt")
        return batch["input_ids"].to(self.device)

    @property
    def preprocessing(self) -> dict:
        """The preprocessing settings that are part of the fingerprint."""
        return preprocessing_settings(self)


def preprocessing_settings(backbone: Backbone) -> dict:
    return {"image_size": backbone.image_size, "image_mean": list(backbone.image_mean),
            "image_std": list(backbone.image_std), "resize_size": backbone.resize_size,
            "context_length": backbone.context_length, "eot_token_id": backbone.eot_token_id,
            "vocab_size": len(backbone.tokenizer)}


def load_backbone(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> Backbone:
    """Load a frozen CLIP from a hub name or a local folder.

    Args:
        name_or_path: ``openai/clip-vit-base-patch32`` (read from the HF cache
            when offline) or a folder written by ``save_pretrained``.
        device: where to put the model.
        dtype: the model's precision (the fingerprint hashes the stored weights,
            so it does not depend on this).

    Returns:
        A :class:`Backbone` whose model has ``requires_grad=False`` everywhere.

    Raises:
        FileMissingError: the folder does not exist or holds no CLIP weights,
            or the hub name is not in the local cache while offline.
    """
    from transformers import CLIPModel

    folder = resolve_folder(name_or_path)
    model = CLIPModel.from_pretrained(str(folder), dtype=dtype).to(device).eval()
    model.requires_grad_(False)
    image = read_image_settings(folder, model.config.vision_config.image_size)
    tokenizer = load_tokenizer(folder)
    backbone = Backbone(name=_display_name(name_or_path, folder), model=model, tokenizer=tokenizer,
                        fingerprint="", device=torch.device(device), dtype=dtype,
                        context_length=model.config.text_config.max_position_embeddings,
                        eot_token_id=_eot_id(model.config, tokenizer), **image)
    backbone.fingerprint = fingerprint(folder, preprocessing_settings(backbone))
    return backbone


def _display_name(name_or_path: str | os.PathLike, folder: Path) -> str:
    return str(folder.resolve()) if Path(name_or_path).is_dir() else str(name_or_path)


def _eot_id(config: Any, tokenizer: Any) -> int:
    eos = getattr(config.text_config, "eos_token_id", None)
    # Configs written before transformers#24773 say 2; the tokenizer knows the real id.
    return int(tokenizer.eos_token_id if eos in (None, 2) else eos)


def resolve_folder(name_or_path: str | os.PathLike) -> Path:
    """The local folder holding the backbone: the path itself, or its HF cache snapshot."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if weight_file(path) is None:
            raise FileMissingError(f"{path}: no model.safetensors or pytorch_model.bin; pass a folder "
                                   "written by CLIPModel.save_pretrained or a hub name")
        return path
    if path.exists() or str(name_or_path).startswith((".", "/", "~")):
        raise FileMissingError(f"{path}: not a folder; pass a CLIP folder or a hub name like "
                               "openai/clip-vit-base-patch32")
    return _hub_snapshot(str(name_or_path))


def _hub_snapshot(name: str) -> Path:
    """The HF cache snapshot of hub repo ``name``, downloaded if missing and the Hub is reachable.

    A disk or permission error while writing the cache propagates as the OSError it is.
    """
    # huggingface_hub costs ~0.4 s to import: only a backbone given by hub name needs it.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError)

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.txt", "model.safetensors"]))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):  # offline, or the Hub unreachable, and not cached
        raise FileMissingError(f"backbone {name!r} is not in the local Hugging Face cache and could not be "
                               "downloaded; download it once while online or pass a local folder") from None
    except GatedRepoError:
        raise PermissionDeniedError(f"backbone {name!r} is gated on the Hugging Face Hub; accept its terms on "
                                    "huggingface.co and log in (HF_TOKEN or 'hf auth login')") from None
    except RepositoryNotFoundError:
        raise NotFoundError(f"no backbone {name!r} on the Hugging Face Hub (or it is private: log in with HF_TOKEN "
                            "or 'hf auth login'); check the name or pass a local folder") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        kind = PermissionDeniedError if status in (401, 403) else StoreUnavailableError
        raise kind(f"the Hugging Face Hub refused backbone {name!r} ({_first_line(exc)}); check HF_TOKEN, "
                   "or pass a local folder") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def weight_file(folder: Path) -> Path | None:
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def read_image_settings(folder: Path, default_size: int) -> dict:
    """Image size, mean, std and resize from preprocessor_config.json, CLIP defaults otherwise."""
    settings = {"image_size": default_size, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                "resize_size": default_size}
    config_path = folder / "preprocessor_config.json"
    if not config_path.is_file():
        return settings
    raw = json.loads(config_path.read_text())
    settings["image_size"] = _edge(raw.get("crop_size"), default_size)
    settings["resize_size"] = _edge(raw.get("size"), settings["image_size"])
    settings["image_mean"] = tuple(float(v) for v in raw.get("image_mean", CLIP_MEAN))
    settings["image_std"] = tuple(float(v) for v in raw.get("image_std", CLIP_STD))
    return settings


def _edge(value: Any, default: int) -> int:
    """Preprocessor configs spell sizes as an int or as {shortest_edge|height|width: int}."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("shortest_edge", "height", "width"):
            if isinstance(value.get(key), int):
                return value[key]
    return default


def load_tokenizer(folder: Path):
    """The folder's own tokenizer when it ships one, else the vendored CLIP tokenizer."""
    if any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(folder))
    return clip_tokenizer()


# --- fingerprint -----------------------------------------------------------------------------------------------


def fingerprint(folder: Path, preprocessing: dict) -> str:
    """sha256 of the stored weights' hash and the canonical preprocessing settings."""
    digest = hashlib.sha256()
    digest.update(weights_digest(weight_file(folder)).encode())
    digest.update(canonical_json(preprocessing).encode())
    return digest.hexdigest()


def require_same_backbone(record: Any, backbone: Backbone, source: str, *,
                          hint: str = "load the backbone it was trained on") -> None:
    """Refuse a prompt set trained on another backbone than ``backbone``.

    Args:
        record: what says where it was trained: checkpoint metadata or a store record
            (anything with ``backbone_name`` and ``backbone_fingerprint``).
        backbone: the backbone it is about to run on.
        source: how the message names the prompt set (a path or a ref).
        hint: what the user should do instead.

    Raises:
        BackboneMismatchError: the fingerprints differ.
    """
    if record.backbone_fingerprint != backbone.fingerprint:
        raise BackboneMismatchError(
            f"{source} was trained on backbone {record.backbone_name} ({record.backbone_fingerprint[:12]}), "
            f"not on {backbone.name} ({backbone.fingerprint[:12]}); {hint}")


def weights_digest(path: Path) -> str:
    """sha256 over sorted (name, dtype, shape, bytes) of a weight file, cached per file version."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    cache = _cache_dir() / f"{key}.json"
    if cache.is_file():
        try:
            return json.loads(cache.read_text())["weights_sha256"]
        except (ValueError, KeyError):
            pass  # a corrupt cache entry is recomputed and overwritten
    value = _hash_tensors(_read_weights(path))
    _write_cache(cache, {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                         "weights_sha256": value})
    return value


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _hash_tensors(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        header = f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0"
        digest.update(header.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _cache_dir() -> Path:
    return cache_dir() / "fingerprints"


def _write_cache(path: Path, record: dict) -> None:
    try:
        atomic_write_bytes(path, json.dumps(record).encode())
    except OSError:
        pass  # a read-only home only costs a recomputation next time


# --- building backbones (tests, demo, trainer) -------------------------------------------------------------------


def save_random_backbone(folder: str | os.PathLike, config: Any, seed: int = 0) -> Path:
    """Save a randomly initialised CLIP (+ tokenizer + preprocessor config) that ``load_backbone`` can load.

    Args:
        folder: where to write; created if missing.
        config: a ``transformers.CLIPConfig``.
        seed: initialisation seed; the same seed gives the same weights.

    Returns:
        The folder, as a Path.
    """
    from transformers import CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(str(folder))
    save_clip_tokenizer(folder)
    size = config.vision_config.image_size
    preprocessor = {"crop_size": {"height": size, "width": size}, "size": {"shortest_edge": size},
                    "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_center_crop": True,
                    "do_resize": True, "do_normalize": True, "resample": 3, "image_processor_type": "CLIPImageProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return folder
