"""Import a checkpoint released outside vopstore: its CLIP becomes a backbone folder, its prompts a version.

``import_checkpoint("VoP_msrvtt9k.pth", "msrvtt")`` reads the authors' file (``FORMATS``
names the layouts understood), converts the OpenAI-layout CLIP inside it into a
transformers folder, loads that folder as the backbone (so the version records its
fingerprint, like any version trained here), and registers the prompts as the next
``vop`` version of the task with the ``released`` text layout.

Where the backbone goes: ``backbone_out`` when given, else
``$VOPSTORE_HOME/backbones/clip-<16 hex digits of its weights' sha256>``. The name comes
from the content, so importing again, or importing another checkpoint trained on the
same CLIP, reuses the folder and its fingerprint; an existing folder is reused only if
it holds exactly these weights. Load the version with that folder as the backbone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from vopstore.backbone import load_backbone, weight_file, weights_digest
from vopstore.core import sha256_file
from vopstore.errors import ConfigError
from vopstore.home import home_dir
from vopstore.openai_clip import save_as_transformers
from vopstore.prompts.released import ReleasedCheckpoint, read_modelscope, released_prompt_set
from vopstore.refs import DEFAULT_TENANT, parse_task
from vopstore.store import open_store
from vopstore.store.info import VersionInfo

FORMATS: dict[str, Callable[[str | os.PathLike], ReleasedCheckpoint]] = {"modelscope": read_modelscope}


@dataclass(frozen=True)
class ImportResult:
    """What an import made: the version, and the backbone folder its prompts need."""

    info: VersionInfo
    backbone_dir: Path
    backbone_fingerprint: str

    def to_dict(self) -> dict:
        return {**self.info.to_dict(), "backbone_dir": str(self.backbone_dir)}


def import_checkpoint(path: str | os.PathLike, task: str, *, store: Any = None, format: str = "modelscope",
                      backbone_out: str | os.PathLike | None = None, message: str | None = None) -> ImportResult:
    """Register the prompts of a released checkpoint as the next version of ``task``.

    Args:
        path: the checkpoint file.
        task: the task (``[tenant/]name``) to add a version to.
        store: the registry to add to (default: the local store).
        format: one of ``FORMATS``.
        backbone_out: where to write the converted CLIP (default: see the module docstring).
        message: the version's message (default: where it was imported from).

    Raises:
        ConfigError: an unknown format, or a ``backbone_out`` holding other weights.
        InvalidCheckpointError, FileMissingError: the file is not such a checkpoint.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown checkpoint format {format!r}; choose one of {', '.join(FORMATS)}")
    parse_task(task, DEFAULT_TENANT)  # a bad task name fails before minutes of conversion
    checkpoint = FORMATS[format](path)
    with _quiet_transformers():
        folder = place_backbone(checkpoint.clip, backbone_out, checkpoint.source)
        backbone = load_backbone(folder)
    method = released_prompt_set(checkpoint, backbone)
    store = store if store is not None else open_store()
    origin = {"format": format, "file": Path(path).name, "sha256": sha256_file(path)}
    with tempfile.TemporaryDirectory(prefix="vopstore-import-") as tmp:
        prompts = Path(tmp) / "prompts.safetensors"
        method.save(prompts, backbone)
        info = store.add(task, prompts, message=message or f"imported from {origin['file']} ({format})",
                         training_config={"method": "vop", "backbone": str(folder), "imported_from": origin})
    return ImportResult(info=info, backbone_dir=folder, backbone_fingerprint=backbone.fingerprint)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers draws a progress bar for each save and load of a tiny folder; the import reports in one line."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def place_backbone(weights: dict, backbone_out: str | os.PathLike | None, source: str) -> Path:
    """Convert the OpenAI CLIP ``weights`` into a backbone folder (see the module docstring); return it."""
    parent = Path(backbone_out).expanduser().resolve().parent if backbone_out else home_dir() / "backbones"
    parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".importing-", dir=parent))  # same file system: the rename is atomic
    try:
        save_as_transformers(weights, staged, source)
        digest = weights_digest(weight_file(staged))
        target = Path(backbone_out).expanduser().resolve() if backbone_out else parent / f"clip-{digest[:16]}"
        if _holds_weights(target) and weights_digest(weight_file(target)) != digest:
            raise ConfigError(f"{target} already holds another backbone; pass an empty or new --backbone-out folder")
        if not _holds_weights(target):
            _replace_empty(target, staged)
        return target
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _holds_weights(folder: Path) -> bool:
    return folder.is_dir() and weight_file(folder) is not None


def _replace_empty(target: Path, staged: Path) -> None:
    if target.is_dir() and any(target.iterdir()):
        raise ConfigError(f"{target} is a folder with other files in it; pass an empty or new --backbone-out folder")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file; pass a folder path as --backbone-out")
    if target.is_dir():
        target.rmdir()
    staged.rename(target)
