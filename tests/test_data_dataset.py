"""VideoTextDataset: items, the frame cache, undecodable videos, DataLoader workers and collate."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vopstore.errors import DataError
from vopstore.trainer.data import Sample, VideoTextCollate, VideoTextDataset
from vopstore.trainer.data import dataset as dataset_mod

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def samples_of(clips):
    return [Sample(c.path, c.caption, c.path.stem) for c in clips]


def make(samples, train=False, **kw):
    return VideoTextDataset(samples, num_frames=4, image_size=16, mean=MEAN, std=STD, train=train, **kw)


def fake_tokenize(captions):
    return {"input_ids": torch.tensor([[len(c.split()), len(c)] for c in captions])}


def test_items_and_seeded_training_draws(synthetic_clips):
    ds = make(samples_of(synthetic_clips[:2]), train=True, flip=False, seed=5)
    pixels, caption, index = ds[1]
    assert pixels.shape == (4, 3, 16, 16) and pixels.dtype == torch.float32
    assert (caption, index) == (synthetic_clips[1].caption, 1)
    assert torch.equal(ds[1][0], pixels)  # (seed, epoch, index) fixes the draw
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], pixels)
    evaluation = make(samples_of(synthetic_clips[:2]))
    assert torch.equal(evaluation[0][0], evaluation[0][0])


def test_eval_cache_gives_the_same_pixels_without_decoding(synthetic_clips, tmp_path, monkeypatch):
    samples = samples_of(synthetic_clips[:2])
    plain = make(samples)[0][0]
    cached = make(samples, cache_dir=tmp_path / "cache")
    assert torch.equal(cached[0][0], plain)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1

    def no_decoding(*a, **k):
        raise AssertionError("decoded although the frames are cached")

    monkeypatch.setattr(dataset_mod, "load_frames", no_decoding)
    assert torch.equal(make(samples, cache_dir=tmp_path / "cache")[0][0], plain)


def test_training_cache_draws_among_candidates(tmp_path, make_video, monkeypatch):
    from vopstore.trainer.data.synthetic import ClipSpec

    moving = ClipSpec("move", (("red", "circle"),), "left to right")  # every frame differs
    samples = [Sample(make_video(tmp_path / "m.mp4", frames=16, spec=moving), "x", "m")]
    ds = make(samples, train=True, cache_dir=tmp_path / "cache", cache_candidates=3, flip=False,
              sampling="random")
    ds[0]
    (npy,) = (tmp_path / "cache").rglob("*.npy")
    cand = np.load(npy)
    assert cand.shape == (4, 3, 32, 32, 3)
    monkeypatch.setattr(dataset_mod, "load_candidates", lambda *a, **k: pytest.fail("decoded again"))
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        rng = np.random.default_rng((ds.seed, epoch, 0))
        frames = ds.frames(0, rng)
        for f in range(4):
            match = [c for c in range(3) if np.array_equal(frames[f], cand[f, c])]
            assert len(match) == 1
            seen.add((f, match[0]))
    assert len(seen) > 4  # different candidates over epochs: the training jitter survives caching


def test_uniform_training_frames_are_the_eval_frames_and_share_their_cache(synthetic_clips, tmp_path):
    samples = samples_of(synthetic_clips[:1])
    evaluation = make(samples, cache_dir=tmp_path / "cache")
    training = make(samples, train=True, cache_dir=tmp_path / "cache")  # uniform is the default
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(training.frames(0, rng), evaluation.frames(0, rng))
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1


def test_epoch_index_keys_draw_like_set_epoch(synthetic_clips):
    ds = make(samples_of(synthetic_clips[:3]), train=True, seed=3)
    ds.set_epoch(2)
    by_epoch = ds[1][0]
    ds.set_epoch(0)
    assert torch.equal(ds[(2, 1)][0], by_epoch) and not torch.equal(ds[1][0], by_epoch)
    assert ds[(2, 1)][1:] == (synthetic_clips[1].caption, 1)


def test_cache_follows_edits_and_survives_a_torn_file(synthetic_clips, tmp_path, make_video):
    video = make_video(tmp_path / "v.mp4", frames=8, spec=synthetic_clips[2].spec)
    ds = make([Sample(video, "x", "v")], cache_dir=tmp_path / "cache")
    first = ds[0][0]
    (npy,) = (tmp_path / "cache").rglob("*.npy")
    npy.write_bytes(b"torn")
    assert torch.equal(ds[0][0], first)  # unreadable cache entry: decoded again and rewritten
    make_video(video, frames=8, spec=synthetic_clips[3].spec)
    os.utime(video, ns=(1, 1))  # the mtime in the key changes, whatever the clock resolution
    assert not torch.equal(ds[0][0], first)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2


def test_undecodable_video_skip_or_raise(synthetic_clips, tmp_path):
    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    samples = [synthetic_clips[0], synthetic_clips[1]]
    items = [samples_of(samples)[0], Sample(bad, "broken", "random"), samples_of(samples)[1]]
    ds = make(items)
    pixels, caption, index = ds[1]
    assert (caption, index) == (synthetic_clips[1].caption, 2)  # replaced by the next decodable one
    assert len(ds.skipped) == 1 and "random.mp4" in str(ds.skipped[0])
    with pytest.raises(DataError, match=r"cannot decode video .*random\.mp4"):
        make(items, on_error="raise")[1]


def test_dataloader_with_two_workers_matches_in_process(synthetic_clips):
    ds = make(samples_of(synthetic_clips[:4]), train=True, flip=False)
    in_process = ds[2][0]  # decoded here BEFORE the workers fork, as a trainer's evaluation does: with
    # FFmpeg's automatic scaler threads, a worker forked after that hung in its first frame (PyAV 18)
    collate = VideoTextCollate(fake_tokenize)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate, timeout=120)
    batches = list(loader)
    assert len(batches) == 2
    b = batches[1]
    assert b["pixel_values"].shape == (2, 4, 3, 16, 16)
    assert b["index"].tolist() == [2, 3] and b["captions"] == [c.caption for c in synthetic_clips[2:4]]
    assert b["text"]["input_ids"].tolist() == fake_tokenize(b["captions"])["input_ids"].tolist()
    assert torch.equal(b["pixel_values"][0], in_process)  # same draw in a worker as in this process
    assert "text" not in VideoTextCollate()([ds[0]])
