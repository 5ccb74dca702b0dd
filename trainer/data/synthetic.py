"""A synthetic video-text task that needs temporal order, written as real mp4 files.

Three kinds of clip, each with a temporal twin that shows the same frames in
reverse order (same colours, shapes, positions):

* ``move``: "a red circle moves from left to right" / "... from right to left" (also top/bottom);
* ``size``: "a blue square grows larger" / "a blue square shrinks";
* ``sequence``: "a red circle appears, then a green triangle" / the reverse order.

The mean over frames of a clip and of its twin are (nearly) the same image, so
a model that averages frame embeddings cannot tell the twins apart; the test
split always holds both twins, with distinct captions. Horizontal flip
augmentation would turn "left to right" into "right to left" without changing
the caption, so train on this task with ``flip=False``.

:func:`sample_static_pairs` gives single images with captions of their static
content (colour, shape, position) for pretraining a tiny CLIP in the demo.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vopstore.core import atomic_write_bytes
from vopstore.errors import ConfigError
from vopstore.trainer.data.mp4 import write_video
from vopstore.trainer.data.render import BACKGROUND, COLOURS, SHAPES, blank, draw

KINDS = ("move", "size", "sequence")
DIRECTIONS = {  # name -> (start, end) centre as fractions of the side
    "left to right": ((0.2, None), (0.8, None)),
    "right to left": ((0.8, None), (0.2, None)),
    "top to bottom": ((None, 0.2), (None, 0.8)),
    "bottom to top": ((None, 0.8), (None, 0.2)),
}
_REVERSE = {"left to right": "right to left", "right to left": "left to right",
            "top to bottom": "bottom to top", "bottom to top": "top to bottom",
            "grows": "shrinks", "shrinks": "grows", "": ""}
FORMATS = ("jsonl", "csv", "msrvtt")


@dataclass(frozen=True)
class ClipSpec:
    """What happens in one synthetic clip.

    Attributes:
        kind: ``move``, ``size`` or ``sequence``.
        objects: ``((colour, shape),)``; two objects for ``sequence`` (shown in that order).
        direction: a :data:`DIRECTIONS` key (move), ``grows``/``shrinks`` (size), ``""`` (sequence).
        lane: the cross-axis position of the object, a fraction of the side (caption-neutral jitter).
        radius: object radius as a fraction of the side (caption-neutral jitter).
    """

    kind: str
    objects: tuple[tuple[str, str], ...]
    direction: str = ""
    lane: float = 0.5
    radius: float = 0.14

    def reversed(self) -> "ClipSpec":
        """The temporal twin: the same frames played backwards, with its own caption."""
        if self.kind == "sequence":
            return replace(self, objects=self.objects[::-1])
        return replace(self, direction=_REVERSE[self.direction])


def _a(colour: str, shape: str) -> str:
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


def caption(spec: ClipSpec) -> str:
    """The caption of a clip: colours, shapes and what happens over time."""
    names = [_a(colour, shape) for colour, shape in spec.objects]
    if spec.kind == "move":
        start, end = spec.direction.split(" to ")
        return f"{names[0]} moves from {start} to {end}"
    if spec.kind == "size":
        return f"{names[0]} grows larger" if spec.direction == "grows" else f"{names[0]} shrinks"
    return f"{names[0]} appears, then {names[1]}"


def render_clip(spec: ClipSpec, size: int = 64, frames: int = 32,
                background: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """Render a clip as a (frames, size, size, 3) uint8 array; pure and deterministic.

    ``background`` is the RGB of the empty canvas (the pretraining images' by default).
    """
    out = np.empty((frames, size, size, 3), np.uint8)
    for i in range(frames):
        t = i / max(frames - 1, 1)
        out[i] = _render_frame(spec, size, t, i, frames, background)
    return out


def _render_frame(spec: ClipSpec, size: int, t: float, i: int, frames: int,
                  background: tuple[int, int, int]) -> np.ndarray:
    canvas = blank(size, background)
    colour, shape = spec.objects[0]
    if spec.kind == "move":
        (x0, y0), (x1, y1) = DIRECTIONS[spec.direction]
        x = spec.lane if x0 is None else x0 + (x1 - x0) * t
        y = spec.lane if y0 is None else y0 + (y1 - y0) * t
        return draw(canvas, colour, shape, x, y, spec.radius)
    if spec.kind == "size":
        small, large = 0.05, 0.32
        r = small + (large - small) * (t if spec.direction == "grows" else 1 - t)
        return draw(canvas, colour, shape, 0.5, spec.lane, r)
    colour, shape = spec.objects[0 if i < frames / 2 else 1]
    return draw(canvas, colour, shape, 0.5, spec.lane, spec.radius * 1.4)


def _objects(rng: np.random.Generator, n: int) -> tuple[tuple[str, str], ...]:
    colours, shapes = list(COLOURS), list(SHAPES)
    while True:
        objs = tuple((colours[rng.integers(len(colours))], shapes[rng.integers(len(shapes))]) for _ in range(n))
        if len(set(objs)) == n:
            return objs


def sample_spec(rng: np.random.Generator) -> ClipSpec:
    """Draw one random clip (kind, objects, direction, jitter)."""
    kind = KINDS[rng.integers(len(KINDS))]
    lane = float(rng.uniform(0.3, 0.7))
    radius = float(rng.uniform(0.11, 0.16))
    if kind == "move":
        direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        return ClipSpec(kind, _objects(rng, 1), direction, lane, radius)
    if kind == "size":
        return ClipSpec(kind, _objects(rng, 1), ("grows", "shrinks")[rng.integers(2)], lane, radius)
    return ClipSpec(kind, _objects(rng, 2), "", lane, radius)


def max_distinct() -> int:
    """How many clips a distinct test split can hold: one twin pair per object, one per unordered object pair."""
    n_obj = len(COLOURS) * len(SHAPES)
    return 2 * n_obj + n_obj * (n_obj - 1)


def static_content(spec: ClipSpec) -> frozenset:
    """What a clip shows regardless of time: its objects. A clip and its temporal twin share it."""
    return frozenset(spec.objects)


def sample_twins(n: int, rng: np.random.Generator, distinct: bool) -> list[ClipSpec]:
    """``n`` specs in temporal-twin pairs (spec, spec.reversed()), adjacent in the list.

    With ``distinct`` every twin pair shows objects no other pair shows (one pair per object,
    one per unordered object pair), so no caption repeats and a test query has one right answer
    whose only look-alike, frame for frame, is its twin: static content finds the pair, time the clip.
    """
    if distinct and n > max_distinct():
        raise ConfigError(f"cannot draw {n} distinct synthetic clips; ask for at most {max_distinct()}")
    specs: list[ClipSpec] = []
    used: set[frozenset] = set()
    for _ in range(50 * n + 100):
        if len(specs) >= n:
            break
        spec = sample_spec(rng)
        if distinct and static_content(spec) in used:
            continue
        used.add(static_content(spec))
        specs.extend([spec, spec.reversed()])
    if len(specs) < n:
        raise ConfigError(f"cannot draw {n} distinct synthetic clips; ask for at most {len(specs)}")
    return specs[:n]


@dataclass(frozen=True)
class SyntheticTask:
    """Where :func:`generate_synthetic_task` wrote a task, and how to read it back.

    ``train``/``test`` hold (video path relative to root, caption, spec) per clip.
    """

    root: Path
    format: str
    train: list
    test: list


def generate_synthetic_task(root: Path | str, n_train: int = 64, n_test: int = 32, seed: int = 0,
                            size: int = 64, frames: int = 32, fmt: str = "jsonl",
                            background: tuple[int, int, int] = BACKGROUND) -> SyntheticTask:
    """Write a seeded synthetic video-text task: mp4 clips plus annotation files.

    Args:
        root: output folder (created).
        n_train, n_test: clips per split; the test captions are all distinct and come in temporal twins.
        seed: the same seed writes the same clips and captions.
        size: frame side in pixels (even). frames: frames per clip.
        fmt: ``jsonl``/``csv`` (the generic format: ``{split}.jsonl``/``.csv`` + ``videos/``) or
            ``msrvtt`` (MSR-VTT layout, for reader tests: 9k list, data json, JSFusion test csv).
        background: RGB of every clip's background, train and test alike. The default is the
            pretraining images' (:func:`sample_static_pairs`); another one is a shift of visual domain
            between a backbone pretrained on those images and this task (the demo's).

    Returns:
        A :class:`SyntheticTask`; read it with ``read_split(task.format, task.root, split)``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if size % 2 or size < 16 or frames < 2 or n_train < 0 or n_test < 0:
        raise ConfigError(f"need an even size >= 16, frames >= 2 and n >= 0; got size={size}, frames={frames}")
    background = _check_rgb(background)
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = {"train": sample_twins(n_train, rng, distinct=False), "test": sample_twins(n_test, rng, distinct=True)}
    written = {}
    for split, specs in splits.items():
        written[split] = [_write_clip(root, _video_name(fmt, split, i, n_train), s, size, frames, background)
                          for i, s in enumerate(specs)]
    _write_annotations(root, fmt, written)
    return SyntheticTask(root, "msrvtt" if fmt == "msrvtt" else "generic", written["train"], written["test"])


def _check_rgb(colour) -> tuple[int, int, int]:
    values = tuple(colour) if isinstance(colour, (tuple, list)) else ()
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values):
        raise ConfigError(f"background must be three integers in 0..255 (R, G, B), got {colour!r}")
    return values


def _video_name(fmt: str, split: str, i: int, n_train: int) -> str:
    if fmt == "msrvtt":
        return f"videos/all/video{i + (n_train if split == 'test' else 0)}.mp4"
    return f"videos/{split}_{i:05d}.mp4"


def _write_clip(root: Path, rel: str, spec: ClipSpec, size: int, frames: int,
                background: tuple[int, int, int]) -> tuple[str, str, ClipSpec]:
    write_video(root / rel, render_clip(spec, size, frames, background))
    return rel, caption(spec), spec


def _write_annotations(root: Path, fmt: str, written: dict) -> None:
    if fmt == "msrvtt":
        return _write_msrvtt(root, written)
    for split, rows in written.items():
        if fmt == "jsonl":
            lines = [json.dumps({"video": rel, "caption": cap}) for rel, cap, _ in rows]
            _atomic_text(root / f"{split}.jsonl", "".join(line + "\n" for line in lines))
        else:
            _atomic_text(root / f"{split}.csv", _csv_text([["video", "caption"]] + [[r, c] for r, c, _ in rows]))


def _write_msrvtt(root: Path, written: dict) -> None:
    vid = lambda rel: Path(rel).stem  # noqa: E731
    train_ids = "".join(f"{vid(rel)}\n" for rel, _, _ in written["train"])
    _atomic_text(root / "MSRVTT_train.9k.csv", "video_id\n" + train_ids)
    sentences = [{"caption": cap, "video_id": vid(rel), "sen_id": i} for i, (rel, cap, _) in
                 enumerate(written["train"] + written["test"])]
    _atomic_text(root / "MSRVTT_data.json", json.dumps({"sentences": sentences}))
    rows = [["key", "vid_key", "video_id", "sentence"]]
    rows += [[f"ret{i}", f"msr{vid(rel)[5:]}", vid(rel), cap] for i, (rel, cap, _) in enumerate(written["test"])]
    _atomic_text(root / "MSRVTT_JSFUSION_test.csv", _csv_text(rows))


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)  # quotes captions with commas
    return buf.getvalue()


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


POSITIONS = {  # caption words -> (x, y) centre as fractions of the side
    "top left": (0.25, 0.25), "top": (0.5, 0.25), "top right": (0.75, 0.25),
    "left": (0.25, 0.5), "center": (0.5, 0.5), "right": (0.75, 0.5),
    "bottom left": (0.25, 0.75), "bottom": (0.5, 0.75), "bottom right": (0.75, 0.75),
}


def static_caption(colour: str, shape: str, position: str) -> str:
    """Caption of one still image: "a red circle at the top left" / "... in the center"."""
    where = "in the center" if position == "center" else f"at the {position}"
    return f"{_a(colour, shape)} {where}"


def sample_static_pairs(n: int, seed: int = 0, size: int = 64,
                        two_objects: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """``n`` single images (N, size, size, 3) uint8 with captions of colour, shape and position.

    For pretraining a tiny CLIP on the synthetic domain (the demo); same vocabulary as the clips.
    A share ``two_objects`` of the images shows two objects at two places, captioned
    "<first> and <second>", so the backbone has seen two things named in one caption.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    captions = []
    for i in range(n):
        count = 2 if rng.uniform() < two_objects else 1
        canvas, parts = blank(size), []
        places = rng.choice(len(POSITIONS), size=count, replace=False)
        for (colour, shape), place in zip(_objects(rng, count), places):
            position = list(POSITIONS)[place]
            x, y = POSITIONS[position]
            jitter = rng.uniform(-0.06, 0.06, 2)
            draw(canvas, colour, shape, x + jitter[0], y + jitter[1], float(rng.uniform(0.1, 0.18)))
            parts.append(static_caption(colour, shape, position))
        images[i] = canvas
        captions.append(" and ".join(parts))
    return images, captions
