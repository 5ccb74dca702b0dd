"""A small CLIP pretrained on synthetic image-caption pairs, for the offline demo.

No CLIP weights can be downloaded here, and a random-init CLIP makes zero-shot
retrieval meaningless. So the demo pretrains, once, a tiny CLIP (real CLIP
tokenizer, full 49,408-token vocabulary) with CLIP's own contrastive loss on
single frames (colour / shape / position), saves it as an ordinary HF folder
and caches it under ``VOPSTORE_HOME/cache/demo-backbone/<config digest>/``.
Single frames carry no temporal order, which is exactly what VoP's video prompts
then have to learn.

A real CLIP has seen long, varied captions, so it takes prompt tokens before a
caption (which push the words to later positions) and extra tokens in its vision
tower in its stride. A tiny CLIP trained on nine-token captions has never used
its later position embeddings, and a freshly initialised prompt set drops its
retrieval to near chance. So a share of the pretraining steps (``prompt_noise``)
runs through the prompted forward with a random, untrained VoP prompt set, as a
real CLIP's breadth would have it: prompt tuning then starts from the zero-shot
level, as it does on CLIP.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from vopstore.backbone import CLIP_MEAN, CLIP_STD, Backbone, load_tokenizer, save_random_backbone
from vopstore.core import short_digest
from vopstore.errors import ConfigError
from vopstore.prompts import build_method, encode_text, encode_video
from vopstore.trainer.data.synthetic import sample_static_pairs
from vopstore.trainer.loss import contrastive_loss

MARKER = "vopstore-pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    """Size of the demo CLIP and of its pretraining run."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    image_size: int = 64
    patch_size: int = 16
    projection_dim: int = 128
    max_text_len: int = 77
    pairs: int = 4096
    steps: int = 300  # colour+shape top-1 on held-out pairs: 70% after 200 steps, 91% after 300
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    two_objects: float = 0.5  # share of images with two objects ("X at ... and Y at ..."): the clips' sequences name two
    prompt_noise: float = 0.5  # share of steps run with a random VoP prompt set (1..max_noise_prompts tokens)
    max_fillers: int = 8  # each caption gets 0..max_fillers random vocabulary tokens right after SOT
    max_noise_prompts: int = 8  # the paper's prompt length

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError(f"hidden {self.hidden} must be divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        if min(self.layers, self.pairs, self.steps, self.batch_size) < 1 or self.lr <= 0:
            raise ConfigError("layers, pairs, steps, batch_size and lr must be positive")
        if not 0 <= self.prompt_noise <= 1 or self.max_noise_prompts < 1:
            raise ConfigError("prompt_noise must be in [0, 1] and max_noise_prompts >= 1")

    def digest(self) -> str:
        """Short stable hash of the settings: the name of the cached backbone's folder."""
        return short_digest(dataclasses.asdict(self))


def clip_config(cfg: PretrainConfig):
    """The transformers ``CLIPConfig`` of the demo backbone (CLIP's token ids and vocabulary)."""
    from transformers import CLIPConfig

    common = dict(hidden_size=cfg.hidden, intermediate_size=4 * cfg.hidden, num_hidden_layers=cfg.layers,
                  num_attention_heads=cfg.heads, projection_dim=cfg.projection_dim)
    text = dict(common, vocab_size=49408, max_position_embeddings=cfg.max_text_len,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    vision = dict(common, image_size=cfg.image_size, patch_size=cfg.patch_size)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim)


def _pixel_values(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (N, 3, H, W) -> normalised float (N, 3, H, W)."""
    x = images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)
    x = x.float() / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def pretrain_clip(model, tokenize: Callable[[list[str]], torch.Tensor], images: torch.Tensor,
                  captions: list[str], cfg: PretrainConfig, mean, std,
                  on_step: Callable[[int, float], None] | None = None, backbone=None) -> list[float]:
    """Train every weight of ``model`` with CLIP's loss on (image, caption) pairs; returns the losses.

    ``backbone`` (a :class:`~vopstore.backbone.Backbone` around ``model``) enables the
    steps with random prompts (``cfg.prompt_noise``); without it every step is plain CLIP.
    """
    from transformers import get_cosine_schedule_with_warmup

    pixels = _pixel_values(torch.as_tensor(images), mean, std)
    ids = tokenize(list(captions))
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1, fused=True)  # fused: the 49k-token embedding
    sched = get_cosine_schedule_with_warmup(opt, max(1, cfg.steps // 10), cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for step in range(cfg.steps):
        idx = torch.randint(0, len(captions), (cfg.batch_size,), generator=gen)
        batch_ids = _with_fillers(_trim(ids[idx]), cfg.max_fillers, gen)
        if backbone is not None and float(torch.rand(1, generator=gen)) < cfg.prompt_noise:
            text, image = _random_prompt_features(backbone, batch_ids, pixels[idx], cfg, gen)
        else:
            text = _emb(model.get_text_features(input_ids=batch_ids))
            image = _emb(model.get_image_features(pixel_values=pixels[idx]))
        loss = contrastive_loss(text, image, model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():  # CLIP clamps its temperature at 100
            model.logit_scale.clamp_(0, 4.6052)
        losses.append(float(loss.detach()))
        if on_step:
            on_step(step, losses[-1])
    model.eval()
    return losses


def _with_fillers(ids: torch.Tensor, max_fillers: int, gen: torch.Generator) -> torch.Tensor:
    """Insert 0..``max_fillers`` random vocabulary tokens after each row's SOT (rows re-padded with EOT)."""
    if max_fillers < 1:
        return ids
    eos, rows = 49407, []
    counts = torch.randint(0, max_fillers + 1, (ids.shape[0],), generator=gen)
    for row, n in zip(ids, counts.tolist()):
        fillers = torch.randint(0, 49406, (n,), generator=gen)  # any token but SOT/EOT
        rows.append(torch.cat([row[:1], fillers, row[1:]]))
    return _trim(torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=eos))


def _random_prompt_features(backbone, ids: torch.Tensor, pixels: torch.Tensor, cfg: PretrainConfig,
                            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Text and image features through a fresh, untrained VoP prompt set of random lengths."""
    n_text, n_visual = (int(n) for n in torch.randint(1, cfg.max_noise_prompts + 1, (2,), generator=gen))
    method = build_method("vop", backbone, seed=int(torch.randint(0, 2**31, (1,), generator=gen)),
                          text_prompts=n_text, visual_prompts=n_visual).requires_grad_(False)
    return encode_text(backbone, ids, method), encode_video(backbone, pixels[:, None], method)


def _emb(out) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; older ones a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _trim(ids: torch.Tensor) -> torch.Tensor:
    """Drop padding columns every row has (captions are short; 77 positions would waste time)."""
    eos = 49407
    last = int((ids != eos).sum(dim=1).max()) + 1
    return ids[:, : min(ids.shape[1], last)]


def _training_backbone(model, tokenizer, cfg: PretrainConfig):
    """A :class:`Backbone` around the model being pretrained (not frozen), for the prompted forward."""
    return Backbone(name="pretraining", model=model, tokenizer=tokenizer, image_size=cfg.image_size,
                    image_mean=CLIP_MEAN, image_std=CLIP_STD, fingerprint="", device=torch.device("cpu"),
                    dtype=torch.float32, resize_size=cfg.image_size, context_length=cfg.max_text_len)


def demo_backbone_dir(home: Path, cfg: PretrainConfig) -> Path:
    return home / "cache" / "demo-backbone" / cfg.digest()


def ensure_demo_backbone(home: Path, cfg: PretrainConfig = PretrainConfig(),
                         log: Callable[[str], None] = print) -> Path:
    """The cached pretrained demo backbone folder, pretraining it first if it is missing.

    The folder is built in a temporary sibling and renamed into place, so a killed
    pretraining never leaves a half-written backbone that a later run would trust.
    """
    final = demo_backbone_dir(home, cfg)
    if (final / MARKER).is_file():
        log(f"demo backbone: cached at {final}")
        return final
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    stats = _build(tmp, cfg, log)
    (tmp / MARKER).write_text(json.dumps(stats, indent=2, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log(f"demo backbone: saved to {final}")
    return final


def _build(folder: Path, cfg: PretrainConfig, log: Callable[[str], None]) -> dict:
    from transformers import CLIPModel

    save_random_backbone(folder, clip_config(cfg), seed=cfg.seed)
    model = CLIPModel.from_pretrained(str(folder))
    tokenizer = load_tokenizer(folder)
    images, captions = sample_static_pairs(cfg.pairs, seed=cfg.seed, size=cfg.image_size,
                                           two_objects=cfg.two_objects)
    log(f"demo backbone: pretraining a {cfg.layers}-layer, {cfg.hidden}-wide CLIP on {cfg.pairs} "
        f"synthetic image-caption pairs ({cfg.steps} steps, once; cached afterwards)")
    start = time.perf_counter()

    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding="longest", truncation=True, max_length=cfg.max_text_len,
                         return_tensors="pt")["input_ids"]

    def on_step(step: int, loss: float) -> None:
        if step % 50 == 0 or step == cfg.steps - 1:
            log(f"  pretrain step {step + 1}/{cfg.steps}  loss {loss:.3f}")

    losses = pretrain_clip(model, tokenize, images, captions, cfg, CLIP_MEAN, CLIP_STD, on_step,
                           _training_backbone(model, tokenizer, cfg))
    model.save_pretrained(str(folder))
    seconds = time.perf_counter() - start
    log(f"demo backbone: pretrained in {seconds:.0f} s (loss {losses[0]:.2f} -> {losses[-1]:.2f})")
    return {"config": dataclasses.asdict(cfg), "seconds": round(seconds, 1),
            "first_loss": losses[0], "last_loss": losses[-1]}
