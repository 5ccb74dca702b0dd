"""Retriever forwards: mixed-task and mixed-method batches in both towers equal each task run alone.

Oracles: the methods package's own single-set forward (``encode_text`` / ``encode_video``
with the prompt set loaded from its file), and transformers' CLIP for rows without a task.
"""

from __future__ import annotations

import pytest
import torch

from vopstore.store import open_store

# Tiny settings (3-layer CLIP, 4 frames); init_std 0.5 makes the tasks' prompts clearly different.
TINY_METHODS = {
    "vop": dict(text_prompts=2, visual_prompts=2),
    "vop-p": dict(text_prompts=2, shared_prompts=2, position_prompts=2, num_frames=4),
    "vop-c": dict(text_prompts=2, generic_prompts=2, generated_prompts=2, cmm_hidden=8),
    "vop-f": dict(text_prompts=2, visual_prompts=2, k_shallow=2, video_prompts=2, num_frames=4),
    "vop-f+p": dict(text_prompts=2, shared_prompts=2, position_prompts=2, num_frames=4, k_shallow=2, video_prompts=2),
    "vop-f+c": dict(text_prompts=2, generic_prompts=2, generated_prompts=2, cmm_hidden=8, k_shallow=2,
                    video_prompts=2, num_frames=4),
}
TEXTS = ["a man opens a door", "a dog", "two people dance in the rain at night", "cat", "a red car turns left",
         "someone cooks pasta"]
ATOL = 1e-5


def publish(registry, backbone, tmp_path, task: str, method: str, seed: int, **overrides):
    """Build a seeded prompt set, save it, add it to ``registry`` as ``task``; return (info, file path)."""
    from vopstore.prompts import build_method

    config = {**TINY_METHODS[method], "init_std": 0.5, **overrides}
    path = tmp_path / f"{task.replace('/', '_')}-{seed}.safetensors"
    build_method(method, backbone, seed=seed, **config).save(path, backbone)
    return registry.add(task, path), path


def pixels(batch: int, frames: int = 4, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 spinning threads are ~100x slower for tiny ops."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def store():
    registry = open_store()  # the real local store in this test's VOPSTORE_HOME
    yield registry
    registry.close()


@pytest.fixture
def retriever(tiny_backbone, store):
    from vopstore import Retriever

    return Retriever(tiny_backbone, store=store)


def oracle_text(backbone, path, texts):
    from vopstore.prompts import encode_text, load_prompt_set

    method = load_prompt_set(path, backbone)
    with torch.inference_mode():
        return encode_text(backbone, backbone.tokenize(texts, method.text_tokens), method)


def oracle_video(backbone, path, pix):
    from vopstore.prompts import encode_video, load_prompt_set

    method = load_prompt_set(path, backbone)
    with torch.inference_mode():
        return encode_video(backbone, pix, method)


@pytest.mark.parametrize("method", list(TINY_METHODS))
def test_mixed_tasks_one_method_both_towers(method, tiny_backbone, store, retriever, tmp_path):
    files = {}
    for seed, task in enumerate(["local/a", "local/b", "local/c"]):
        info, files[task] = publish(store, tiny_backbone, tmp_path, task, method, seed)
        assert retriever.load(task).digest == info.digest
    rows = ["local/b", "local/a", "local/c", "local/a", None, "local/b"]
    text = retriever.encode_text(TEXTS, tasks=rows)
    pix = pixels(len(rows))
    video = retriever.encode_video(pix, tasks=rows)
    for i, task in enumerate(rows):
        alone_t = retriever.encode_text([TEXTS[i]], task=task)
        alone_v = retriever.encode_video(pix[i : i + 1], task=task)
        torch.testing.assert_close(text[i], alone_t[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(video[i], alone_v[0], atol=ATOL, rtol=0)
        if task is not None:  # and each equals the methods package's own single-set forward
            torch.testing.assert_close(text[i], oracle_text(tiny_backbone, files[task], [TEXTS[i]])[0], atol=ATOL, rtol=0)
            torch.testing.assert_close(video[i], oracle_video(tiny_backbone, files[task], pix[i : i + 1])[0],
                                       atol=ATOL, rtol=0)
    # the tasks really differ, so a row served with the wrong set would be caught
    assert (text[1] - retriever.encode_text([TEXTS[1]], task="local/b")[0]).abs().max() > 1e-3
    assert (video[1] - retriever.encode_video(pix[1:2], task="local/b")[0]).abs().max() > 1e-3


def test_mixed_methods_in_one_batch(tiny_backbone, store, retriever, tmp_path):
    files = {}
    for seed, method in enumerate(TINY_METHODS):
        task = f"local/{method.replace('+', '')}"
        _, files[task] = publish(store, tiny_backbone, tmp_path, task, method, seed)
        retriever.load(task)
    # a second config of vop stacks in its own group
    _, files["local/vop-wide"] = publish(store, tiny_backbone, tmp_path, "local/vop-wide", "vop", 9, text_prompts=4)
    retriever.load("local/vop-wide")
    rows = [None, *files, *reversed(list(files))]
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(rows))]
    pix = pixels(len(rows), seed=3)
    text = retriever.encode_text(texts, tasks=rows)
    video = retriever.encode_video(pix, tasks=rows)
    for i, task in enumerate(rows):
        torch.testing.assert_close(text[i], retriever.encode_text([texts[i]], task=task)[0], atol=ATOL, rtol=0)
        if task is not None:
            expected_v = oracle_video(tiny_backbone, files[task], pix[i : i + 1])[0]
            torch.testing.assert_close(video[i], expected_v, atol=ATOL, rtol=0)


def test_no_task_equals_transformers(tiny_backbone, retriever):
    model = tiny_backbone.model
    ids = tiny_backbone.tokenize(TEXTS)
    pix = pixels(3, frames=2, seed=5)
    with torch.inference_mode():
        ref_text = model.get_text_features(input_ids=ids).pooler_output
        frames = model.get_image_features(pixel_values=pix.flatten(0, 1)).pooler_output.view(3, 2, -1)
    ref_video = torch.nn.functional.normalize(frames, dim=-1).mean(1)
    torch.testing.assert_close(retriever.encode_text(TEXTS), ref_text, atol=ATOL, rtol=0)
    torch.testing.assert_close(retriever.encode_video(pix), ref_video, atol=ATOL, rtol=0)
    normed = retriever.encode_text(TEXTS, normalize=True)
    torch.testing.assert_close(normed.norm(dim=-1), torch.ones(len(TEXTS)))


def test_video_files_match_trainer_pipeline(tiny_backbone, store, retriever, tmp_path, synthetic_clips):
    from vopstore.trainer.data.frames import load_frames
    from vopstore.trainer.data.transforms import preprocess_frames

    _, path = publish(store, tiny_backbone, tmp_path, "local/clips", "vop-f", 0, num_frames=12)
    retriever.load("local/clips")
    files = [clip.path for clip in synthetic_clips[:2]]
    expected = torch.stack([preprocess_frames(load_frames(f, 12), tiny_backbone.image_size, tiny_backbone.image_mean,
                                              tiny_backbone.image_std) for f in files])
    got = retriever.encode_video(files, tasks=["local/clips", None])
    torch.testing.assert_close(got[0], oracle_video(tiny_backbone, path, expected[:1])[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1], retriever.encode_video(expected[1:]) [0], atol=ATOL, rtol=0)


def test_request_errors_name_the_fix(tiny_backbone, store, retriever, tmp_path):
    from vopstore.errors import ConfigError, NotFoundError

    publish(store, tiny_backbone, tmp_path, "acme/lsmdc", "vop", 0)
    retriever.load("acme/lsmdc")
    with pytest.raises(NotFoundError, match="not loaded"):
        retriever.encode_text(TEXTS[:1], task="acme/other")
    with pytest.raises(ConfigError, match="one task"):
        retriever.encode_text(TEXTS[:2], tasks=["acme/lsmdc"])
    with pytest.raises(ConfigError, match="not both"):
        retriever.encode_text(TEXTS[:1], task="acme/lsmdc", tasks=["acme/lsmdc"])
    with pytest.raises(ConfigError, match=r"\(B, F, 3, H, W\)"):
        retriever.encode_video(torch.zeros(2, 3, 3))


def test_video_files_get_each_tasks_own_frame_count(tiny_backbone, store, retriever, tmp_path, synthetic_clips):
    from vopstore.video import load_videos

    _, p_path = publish(store, tiny_backbone, tmp_path, "local/p4", "vop-p", 0)  # method config: num_frames=4
    _, v_path = publish(store, tiny_backbone, tmp_path, "local/v6", "vop", 1)
    store.add("local/v6", v_path, training_config={"num_frames": 6})  # v2: trained on 6 frames
    retriever.load("local/p4")
    retriever.load("local/v6")
    files = [clip.path for clip in synthetic_clips[:3]]
    rows = ["local/p4", "local/v6", None]
    got = retriever.encode_video(files, tasks=rows)  # 4 / 6 / 12 frames, no num_frames= needed
    for i, (task, frames) in enumerate(zip(rows, [4, 6, 12])):
        pix = load_videos(files[i : i + 1], tiny_backbone, frames)
        torch.testing.assert_close(got[i], retriever.encode_video(pix, task=task)[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[0], oracle_video(tiny_backbone, p_path, load_videos(files[:1], tiny_backbone, 4))[0],
                               atol=ATOL, rtol=0)
    explicit = retriever.encode_video(files[1:], tasks=rows[1:], num_frames=2)  # an explicit count still wins
    torch.testing.assert_close(explicit[0], retriever.encode_video(load_videos(files[1:2], tiny_backbone, 2),
                                                                   task="local/v6")[0], atol=ATOL, rtol=0)
