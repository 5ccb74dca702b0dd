"""The training feed: the resumable step sampler, DataLoader workers, and a frame cache shared between processes."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch

from vopstore.trainer.batches import StepSampler, train_batches
from vopstore.trainer.data import Sample, VideoTextDataset
from vopstore.trainer.data.cache import FrameCache


def distributed_order(n: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """DistributedSampler(shuffle=True, drop_last=True), written out: randperm seeded seed + epoch, strided."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per_rank = n // world
    return perm[:per_rank * world][rank::world]


def test_step_sampler_walks_epochs_and_starts_where_a_run_stopped():
    # 10 samples, micro-batch 2, 2 micro-batches per step, one rank: 2 steps per epoch (2 samples dropped)
    sampler = StepSampler(10, micro=2, grad_accum=2, steps_per_epoch=2, seed=7, start=0, end=5)
    got = list(sampler)
    assert len(got) == len(sampler) == 10
    for step in range(5):
        epoch, within = divmod(step, 2)
        order = distributed_order(10, epoch, 7, 0, 1)
        for k in range(2):
            first = (within * 2 + k) * 2
            assert got[step * 2 + k] == [(epoch, i) for i in order[first:first + 2]], (step, k)
    resumed = StepSampler(10, micro=2, grad_accum=2, steps_per_epoch=2, seed=7, start=3, end=5)
    assert list(resumed) == got[6:]


def test_step_sampler_ranks_take_their_share_of_each_epoch():
    ranks = [list(StepSampler(9, 2, 1, 2, seed=1, rank=r, world_size=2, start=0, end=4)) for r in (0, 1)]
    for r in (0, 1):
        for epoch in (0, 1):
            order = distributed_order(9, epoch, 1, r, 2)
            assert [i for batch in ranks[r][2 * epoch:2 * epoch + 2] for e, i in batch] == order
            assert {e for batch in ranks[r][2 * epoch:2 * epoch + 2] for e, _ in batch} == {epoch}


@pytest.fixture
def dataset(synthetic_clips):
    samples = [Sample(c.path, c.caption, c.path.stem) for c in synthetic_clips]
    return VideoTextDataset(samples, num_frames=4, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, train=True,
                            seed=11, sampling="random")


def test_two_workers_feed_the_same_batches_as_the_training_process(dataset):
    def feed(workers):
        sampler = StepSampler(len(dataset), micro=2, grad_accum=2, steps_per_epoch=1, seed=3, start=1, end=4)
        return list(train_batches(dataset, sampler, workers))

    in_process, workers = feed(0), feed(2)
    assert len(in_process) == len(workers) == 3 and all(len(step) == 2 for step in workers)
    for step_a, step_b in zip(in_process, workers):
        for a, b in zip(step_a, step_b):
            assert a["index"].tolist() == b["index"].tolist() and a["captions"] == b["captions"]
            assert a["pixel_values"].shape == (2, 4, 3, 16, 16)
            assert torch.equal(a["pixel_values"], b["pixel_values"])
    step1 = StepSampler(len(dataset), 2, 2, 1, seed=3, start=1, end=2)
    (epoch, i), _ = next(iter(step1))
    assert torch.equal(in_process[0][0]["pixel_values"][0], dataset[(epoch, i)][0])  # keyed by (epoch, index)
    assert not torch.equal(in_process[0][0]["pixel_values"][0], dataset[(epoch + 1, i)][0])


def _write_often(root, key, value, rounds):
    cache, frames = FrameCache(root), np.full((64, 64, 64, 3), value, np.uint8)
    for _ in range(rounds):
        cache.put(key, frames)


def test_concurrent_writers_of_one_key_never_expose_a_partial_file(tmp_path):
    cache, key = FrameCache(tmp_path), "ab" + "0" * 62
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_write_often, args=(tmp_path, key, 7, 15)) for _ in range(3)]
    for w in writers:
        w.start()
    seen = []
    while any(w.is_alive() for w in writers):
        got = cache.get(key)
        if got is not None:
            seen.append(got.shape == (64, 64, 64, 3) and bool((got == 7).all()))
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert all(seen) and cache.get(key) is not None
    assert sorted(p.name for p in (tmp_path / "ab").iterdir()) == [f"{key}.npy"]  # no temp file left


def test_a_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        FrameCache(tmp_path).put("cd" + "1" * 62, np.zeros((2, 2, 2, 3), np.uint8))
    assert list((tmp_path / "cd").iterdir()) == []
