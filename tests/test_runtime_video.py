"""Serving's video decoding and preprocessing follow the trainer's evaluation pipeline exactly."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

from tests.test_runtime_mixed import _one_thread  # noqa: F401


class _Counting:
    """An ``av`` container that counts the frames it decodes."""

    def __init__(self, container, counts: list) -> None:
        self._container, self._counts = container, counts

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._container.close()

    def decode(self, *args):
        for frame in self._container.decode(*args):
            self._counts[-1] += 1
            yield frame


def test_frame_count_falls_back_to_duration_like_the_trainer(make_video, tmp_path, monkeypatch):
    import av

    from vopstore.trainer.data.frames import load_frames
    from vopstore.video import decode_frames

    path = make_video(tmp_path / "clip.mkv", frames=16)  # Matroska: no frame count in the header, a duration
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    counts, real_open = [], av.open

    def counting_open(*args, **kwargs):
        counts.append(0)
        return _Counting(real_open(*args, **kwargs), counts)

    monkeypatch.setattr(av, "open", counting_open)
    got = decode_frames(path, 2)  # frames 3 and 11 of 16 (duration x rate): stop after frame 11
    assert counts == [12]
    monkeypatch.undo()
    assert (got == load_frames(path, 2)).all()


def test_serving_and_eval_resize_to_resize_size_then_crop(tiny_backbone, synthetic_clips):
    from vopstore.trainer.batches import make_dataset
    from vopstore.trainer.data import Sample
    from vopstore.trainer.data.frames import load_frames
    from vopstore.trainer.data.transforms import preprocess_frames
    from vopstore.video import load_videos

    backbone = dataclasses.replace(tiny_backbone, resize_size=tiny_backbone.image_size + 16)  # CLIP: 256 -> 224
    clip = synthetic_clips[0]
    served = load_videos([clip.path], backbone, 4)[0]
    evaluated = preprocess_frames(load_frames(clip.path, 4), backbone.image_size, backbone.image_mean,
                                  backbone.image_std, resize_size=backbone.resize_size)
    cfg = SimpleNamespace(frame_cache=False, num_frames=4, on_error="raise", hflip=False, seed=0, image_size=0)
    item = make_dataset([Sample(clip.path, clip.caption, "c0")], cfg, backbone, train=False)[0][0]
    assert served.shape == (4, 3, backbone.image_size, backbone.image_size)
    torch.testing.assert_close(served, evaluated, atol=0, rtol=0)
    torch.testing.assert_close(item, served, atol=0, rtol=0)
    plain = load_videos([clip.path], tiny_backbone, 4)[0]  # the resize really matters here
    assert (plain - served).abs().max() > 1e-2
