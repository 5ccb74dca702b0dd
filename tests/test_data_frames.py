"""Frame sampling, PyAV decoding and CLIP preprocessing (torch only, no torchvision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vopstore.errors import ConfigError, DataError
from vopstore.trainer.data import FrameSampler, load_frames, preprocess_frames, render_clip
from vopstore.trainer.data import frames as frames_mod
from vopstore.trainer.data.frames import candidate_indices, frame_indices
from vopstore.trainer.data.transforms import crop_box

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def xpool_uniform(vlen: int, num_frames: int) -> list[int]:
    """X-Pool's ``video_capture.py`` uniform rule, transcribed: ranges (a, b - 1), middle (a + b') // 2."""
    acc_samples = min(num_frames, vlen)
    intervals = np.linspace(start=0, stop=vlen, num=acc_samples + 1).astype(int)
    ranges = [(interv, intervals[idx + 1] - 1) for idx, interv in enumerate(intervals[:-1])]
    idxs = [(x[0] + x[1]) // 2 for x in ranges]
    return idxs + [idxs[-1]] * (num_frames - len(idxs))  # X-Pool pads short videos with the last frame


def test_uniform_takes_the_lower_middle_of_each_range():
    # hand-computed: [0,2) [2,4) ... -> 0, 2, ...; even ranges take the lower middle (a + b - 1) // 2
    assert frame_indices(24, 12).tolist() == list(range(0, 24, 2))
    assert frame_indices(16, 4).tolist() == [1, 5, 9, 13]
    assert frame_indices(10, 4).tolist() == [0, 3, 5, 8]  # edges 0, 2, 5, 7, 10
    assert frame_indices(12, 12).tolist() == list(range(12))
    assert frame_indices(5, 12).tolist() == [0, 1, 2, 3, 4] + [4] * 7  # padded with the last
    assert frame_indices(100, 4, "uniform").tolist() == [12, 37, 62, 87]
    for vlen in (1, 7, 12, 13, 31, 100, 901):
        assert frame_indices(vlen, 12).tolist() == xpool_uniform(vlen, 12), vlen


def test_train_offsets_stay_inside_their_range():
    edges = np.linspace(0, 50, 13).astype(int)
    draws = np.stack([frame_indices(50, 12, "random", np.random.default_rng(s)) for s in range(60)])
    assert ((draws >= edges[:-1]) & (draws < edges[1:])).all()
    assert len({tuple(d) for d in draws}) > 30
    assert (draws.min(0) == edges[:-1]).all() and (draws.max(0) == edges[1:] - 1).all()


def test_unknown_sampling_is_refused():
    with pytest.raises(ConfigError, match="frame sampling must be one of uniform, random, got 'middle'"):
        frame_indices(10, 4, "middle")
    with pytest.raises(ConfigError, match="frame sampling must be one of"):
        FrameSampler(sampling="rand")


def test_candidates_include_the_uniform_frame():
    cand = candidate_indices(50, 12, 3)
    assert cand.shape == (12, 3)
    assert cand[:, 1].tolist() == xpool_uniform(50, 12)
    assert candidate_indices(16, 4, 1).tolist() == [[1], [5], [9], [13]]
    assert candidate_indices(16, 4, 2).tolist() == [[0, 2], [4, 6], [8, 10], [12, 14]]  # a + (4(2k+1)-1)//4
    assert candidate_indices(3, 12, 4).tolist() == [[0] * 4, [1] * 4] + [[2] * 4] * 10


def test_decoded_frames_match_the_chosen_indices(synthetic_clips):
    clip = synthetic_clips[0]
    truth = render_clip(clip.spec, clip.size, clip.frames).astype(int)
    got = load_frames(clip.path, num_frames=4).astype(int)
    assert got.shape == (4, 32, 32, 3)
    for k, i in enumerate(frame_indices(16, 4)):
        errs = [np.abs(got[k] - truth[j]).mean() for j in range(16)]
        assert np.argmin(errs) == i or errs[i] < 6
    assert np.abs(got - truth[[1, 5, 9, 13]]).mean() < 6
    small = FrameSampler(num_frames=3, short_side=16)(clip.path)
    assert small.shape == (3, 16, 16, 3)


def test_end_s_keeps_the_first_seconds(tmp_path, make_video, monkeypatch):
    from vopstore.trainer.data.synthetic import ClipSpec

    moving = ClipSpec("move", (("red", "circle"),), "left to right")  # every frame differs
    path = make_video(tmp_path / "long.mp4", frames=32, spec=moving)  # 8 fps: 4 s
    truth = render_clip(moving, 32, 32).astype(int)
    first_two_s = load_frames(path, num_frames=4, end_s=2.0).astype(int)  # frames 0..15: middles 1, 5, 9, 13
    assert np.abs(first_two_s - truth[[1, 5, 9, 13]]).mean() < 6
    whole = load_frames(path, num_frames=4).astype(int)  # frames 0..31: middles 3, 11, 19, 27
    assert np.abs(whole - truth[[3, 11, 19, 27]]).mean() < 6
    np.testing.assert_array_equal(load_frames(path, 4, end_s=60.0), load_frames(path, 4))  # longer than the clip
    with pytest.raises(ConfigError, match="end_s must be > 0"):
        FrameSampler(end_s=0)
    monkeypatch.setattr(frames_mod, "frame_count", lambda stream, container: 0)  # no count: decode, then cut
    np.testing.assert_array_equal(load_frames(path, 4, end_s=2.0), first_two_s.astype(np.uint8))


def test_short_video_and_other_container(tmp_path, make_video):
    path = make_video(tmp_path / "short.avi", frames=3)
    got = load_frames(path, num_frames=6)
    assert got.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(got[2], got[5])


def test_header_without_count_or_overcounting(synthetic_clips, monkeypatch):
    path = synthetic_clips[1].path
    expected = load_frames(path, num_frames=5)
    monkeypatch.setattr(frames_mod, "frame_count", lambda stream, container: 0)
    np.testing.assert_array_equal(load_frames(path, num_frames=5), expected)
    monkeypatch.setattr(frames_mod, "frame_count", lambda stream, container: 64)  # claims 4x the frames
    over = load_frames(path, num_frames=4)  # wants 7, 23, 39, 55: only 7 exists, the rest padded
    np.testing.assert_array_equal(over[1], over[3])


@pytest.mark.parametrize("content", [b"", b"not a video at all", bytes(range(256)) * 40])
def test_undecodable_file_names_the_file(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=r"cannot decode video .*broken\.mp4"):
        load_frames(bad)
    with pytest.raises(DataError, match=r"video not found: .*absent\.mp4"):
        load_frames(tmp_path / "absent.mp4")


def test_eval_preprocessing_resizes_crops_and_normalises():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[..., :40, 0] = 255  # left half red, right half blue
    frames[..., 40:, 2] = 255
    out = preprocess_frames(frames, 20, MEAN, STD, train=False)
    assert out.shape == (2, 3, 20, 20) and out.dtype == torch.float32
    red = (1 - MEAN[0]) / STD[0]
    # 40x80 -> 20x40, center crop keeps columns 10..30: the colour edge sits in the middle
    assert out[0, 0, :, :8].allclose(torch.full((20, 8), red), atol=1e-4)
    assert out[0, 0, :, 12:].allclose(torch.full((20, 8), -MEAN[0] / STD[0]), atol=1e-4)
    flat = np.full((1, 30, 20, 3), 128, np.uint8)
    got = preprocess_frames(flat, 16, MEAN, STD, train=False)
    want = (128 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert got.shape == (1, 3, 16, 16)
    assert got[0].permute(1, 2, 0).allclose(want.expand(16, 16, 3), atol=1e-5)


def test_matches_transformers_clip_image_processor():
    from transformers import CLIPImageProcessor

    try:
        proc = CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    except ImportError as exc:  # a "fast" processor that wants torchvision
        pytest.skip(f"no PIL-based CLIP processor here: {exc}")
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    want = torch.as_tensor(np.asarray(proc(images=[img], return_tensors="np")["pixel_values"]))
    got = preprocess_frames(img[None], 24, proc.image_mean, proc.image_std, train=False)
    assert got.shape == want.shape
    assert (got - want).abs().mean() < 0.05


def test_train_crop_is_shared_by_all_frames_and_seeded():
    yy, xx = np.mgrid[0:48, 0:64]
    base = np.stack([xx * 3, yy * 4, xx + yy], -1).astype(np.uint8)
    frames = np.stack([base + 10 * k for k in range(4)]).astype(np.uint8)
    out = preprocess_frames(frames, 16, MEAN, STD, train=True, rng=np.random.default_rng(1))
    for k in range(1, 4):  # same box for every frame: the difference is the brightness offset only
        shift = (10 * k / 255) / torch.tensor(STD).view(3, 1, 1)
        assert (out[k] - out[0]).allclose(shift.expand(3, 16, 16), atol=1e-4)
    again = preprocess_frames(frames, 16, MEAN, STD, train=True, rng=np.random.default_rng(1))
    assert torch.equal(out, again)
    other = preprocess_frames(frames, 16, MEAN, STD, train=True, rng=np.random.default_rng(2))
    assert not torch.equal(out, other)


def test_flip_is_optional():
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (64, 1, 3))[None]  # bright to the right

    def rising(flip, seed):
        x = preprocess_frames(ramp, 16, MEAN, STD, train=True, rng=np.random.default_rng(seed), flip=flip)
        return bool(x[0, 0, 8, -1] > x[0, 0, 8, 0])

    assert all(rising(False, s) for s in range(20))
    flips = [rising(True, s) for s in range(20)]
    assert 3 <= flips.count(False) <= 17


def test_crop_box_follows_scale_and_ratio():
    rng = np.random.default_rng(0)
    for h, w in [(64, 64), (30, 90), (90, 30), (7, 5)]:
        for _ in range(50):
            top, left, ch, cw = crop_box(h, w, rng)
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
            if (h, w) == (64, 64):
                assert 0.45 <= ch * cw / (h * w) <= 1.0 and 0.7 <= cw / ch <= 1.4


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(DataError, match=r"sound\.mp4: no video stream"):
        load_frames(path)
