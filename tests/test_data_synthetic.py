"""The synthetic task: deterministic, real mp4 files, and temporal twins a frame average cannot separate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vopstore.errors import ConfigError
from vopstore.trainer.data import generate_synthetic_task, load_frames, read_split, render_clip, sample_static_pairs
from vopstore.trainer.data.synthetic import ClipSpec, caption


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return generate_synthetic_task(tmp_path_factory.mktemp("syn"), n_train=6, n_test=8, seed=3, size=32, frames=16)


def test_same_seed_same_task(task, tmp_path):
    again = generate_synthetic_task(tmp_path, n_train=6, n_test=8, seed=3, size=32, frames=16)
    assert [(r, c) for r, c, _ in again.test] == [(r, c) for r, c, _ in task.test]
    other = generate_synthetic_task(tmp_path / "o", n_train=6, n_test=8, seed=4, size=32, frames=16)
    assert [c for _, c, _ in other.test] != [c for _, c, _ in task.test]


def test_test_split_is_distinct_twins(task):
    captions = [c for _, c, _ in task.test]
    assert len(set(captions)) == len(captions)
    for (_, cap_a, a), (_, cap_b, b) in zip(task.test[::2], task.test[1::2]):
        assert b == a.reversed() and cap_a != cap_b
        assert sorted(cap_a.split()) == sorted(cap_b.split()) or a.kind == "size"
        clip_a, clip_b = render_clip(a, 32, 16), render_clip(b, 32, 16)
        # played backwards it is the twin: same frames, same mean image, opposite order
        np.testing.assert_array_equal(clip_a[::-1], clip_b)
        assert not np.array_equal(clip_a, clip_b)
    # no other pair shows the same objects: static content finds the pair, only time the clip
    objects = [frozenset(spec.objects) for _, _, spec in task.test[::2]]
    assert len(set(objects)) == len(objects)


def test_distinct_test_splits_reach_exactly_the_counted_maximum():
    from vopstore.trainer.data.render import COLOURS, SHAPES
    from vopstore.trainer.data.synthetic import max_distinct, sample_twins

    n_obj = len(COLOURS) * len(SHAPES)
    singles, pairs = n_obj, n_obj * (n_obj - 1) // 2  # a twin pair per object, per unordered pair of objects
    assert max_distinct() == 2 * (singles + pairs)
    specs = sample_twins(max_distinct(), np.random.default_rng(0), distinct=True)
    assert len({frozenset(s.objects) for s in specs}) == singles + pairs
    with pytest.raises(ConfigError, match="distinct"):
        sample_twins(max_distinct() + 2, np.random.default_rng(0), distinct=True)


def test_background_colours_every_empty_pixel(tmp_path):
    spec = ClipSpec("move", (("red", "circle"),), "left to right")
    clip = render_clip(spec, 32, 4, background=(100, 110, 120))
    assert (clip[:, 0, 0] == (100, 110, 120)).all() and (clip[:, -1, -1] == (100, 110, 120)).all()
    for bad in ((100, 100), (0, 0, 256), (1.5, 0, 0), "grey"):
        with pytest.raises(ConfigError, match="background must be three integers"):
            generate_synthetic_task(tmp_path, 2, 2, size=16, frames=2, background=bad)


@pytest.mark.parametrize("spec, text", [
    (ClipSpec("move", (("red", "circle"),), "left to right"), "a red circle moves from left to right"),
    (ClipSpec("size", (("orange", "square"),), "grows"), "an orange square grows larger"),
    (ClipSpec("sequence", (("blue", "square"), ("green", "triangle"))),
     "a blue square appears, then a green triangle"),
])
def test_captions_and_motion(spec, text):
    assert caption(spec) == text
    clip = render_clip(spec, 32, 8)
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    if spec.kind == "move":  # the red object's centre of mass goes right
        xs = [np.nonzero(f[..., 0] > 200)[1].mean() for f in clip]
        assert xs[0] < 12 < 20 < xs[-1]
    if spec.kind == "size":
        areas = [(f.max(-1) > 100).sum() for f in clip]
        assert areas == sorted(areas) and areas[0] < areas[-1]


def test_mp4_decodes_to_the_rendered_frames(task):
    rel, _, spec = task.test[0]
    decoded = load_frames(task.root / rel, num_frames=16)
    err = np.abs(decoded.astype(int) - render_clip(spec, 32, 16)).mean()
    assert err < 6, err  # lossy yuv420p, but the same picture


def test_generic_and_msrvtt_layouts_read_back(task, tmp_path):
    rows = [json.loads(line) for line in (task.root / "test.jsonl").read_text().splitlines()]
    assert [r["caption"] for r in rows] == [c for _, c, _ in task.test]
    assert len(read_split(task.format, task.root, "train")) == 6
    m = generate_synthetic_task(tmp_path, n_train=2, n_test=2, seed=0, size=16, frames=4, fmt="msrvtt")
    assert m.format == "msrvtt"
    assert [s.caption for s in read_split("auto", m.root, "test")] == [c for _, c, _ in m.test]
    csv = generate_synthetic_task(tmp_path / "c", n_train=2, n_test=2, seed=0, size=16, frames=4, fmt="csv")
    assert [s.caption for s in read_split("auto", csv.root, "train")] == [c for _, c, _ in csv.train]


def test_static_pairs():
    images, captions = sample_static_pairs(12, seed=1, size=32)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8 and len(captions) == 12
    again, captions2 = sample_static_pairs(12, seed=1, size=32)
    np.testing.assert_array_equal(images, again)
    assert captions == captions2
    for img, cap in zip(images, captions):
        assert cap.split()[2] in ("circle", "square", "triangle")
        ys, xs = np.nonzero(img.max(-1) > 60)
        if cap.endswith("left"):
            assert xs.mean() < 16
        if cap.endswith("right"):
            assert xs.mean() > 16
        if "at the top" in cap:
            assert ys.mean() < 16


def test_two_object_images_show_both_named_colours_where_their_captions_say():
    from vopstore.trainer.data.render import COLOURS

    images, captions = sample_static_pairs(24, seed=2, size=64, two_objects=1.0)
    for img, cap in zip(images, captions):
        first, second = cap.split(" and ")
        for part in (first, second):
            colour = part.split()[1]
            ys, xs = np.nonzero((img == COLOURS[colour]).all(-1))
            assert len(xs) > 20, (cap, colour)  # painted (a later shape may cover part of it, not all)
        assert first.split()[1:3] != second.split()[1:3]  # two different objects
    singles = sample_static_pairs(24, seed=2, size=64)[1]
    assert not any(" and " in cap for cap in singles)


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="fmt"):
        generate_synthetic_task(tmp_path, 2, 2, fmt="parquet")
    with pytest.raises(ConfigError, match="even size"):
        generate_synthetic_task(tmp_path, 2, 2, size=33)
    with pytest.raises(ConfigError, match="distinct"):
        generate_synthetic_task(tmp_path, 0, 5000, size=16, frames=2)
