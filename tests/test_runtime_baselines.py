"""The Retriever serves baselines: each equals the model it stands for, mixed batches equal each row alone,
own models count their bytes, and the shared backbone is never written.

Oracles that are not the runtime: transformers' CLIP with the baseline applied (weights loaded into
a copy of it, adapters added by hooks: tests/test_baselines.py's reference), transformers' CLIP for
plain rows, the prompt methods' own single-set forward for prompt rows, and tensor bytes read off
the stored file with safetensors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.test_baselines import _reference, _reference_model
from tests.test_gallery import assert_hits, gallery_clips, oracle  # noqa: F401 (the gallery tests' oracle)
from tests.test_runtime_mixed import TEXTS, _one_thread, oracle_text, oracle_video, pixels  # noqa: F401
from tests.test_runtime_mixed import publish as publish_prompts
from vopstore import Retriever
from vopstore.errors import ConfigError
from vopstore.store import open_store

ATOL = 1e-5
BASELINES = ("bias", "proj", "adapter-attn", "adapter-ffn", "partial", "full")
FRAMES = 4  # the tiny prompt methods' num_frames


@pytest.fixture
def store():
    registry = open_store()  # the real local store in this test's VOPSTORE_HOME
    yield registry
    registry.close()


def publish(store, backbone, tmp_path, task: str, method: str, seed: int, **config):
    """A seeded baseline with every tensor moved (a fresh one equals plain CLIP), stored as ``task``'s next version.

    Returns (VersionInfo, the baseline module as trained)."""
    from vopstore.prompts import build_method

    baseline = build_method(method, backbone, seed=seed, **config)
    gen = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for p in baseline.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    path = tmp_path / f"{task.replace('/', '_')}-{method}-{seed}.safetensors"
    baseline.save(path, backbone)
    return store.add(task, path), baseline.eval()


def reference(method: str, baseline, backbone, texts, pix):
    """(text embeddings, video embeddings) of transformers' CLIP with ``baseline`` applied."""
    ids = backbone.tokenize(texts)
    text, frames = _reference(_reference_model(method, baseline, backbone), backbone, ids, pix)
    return text, F.normalize(frames, dim=-1).mean(1)


def plain(backbone, texts, pix):
    with torch.no_grad():
        text = backbone.model.get_text_features(input_ids=backbone.tokenize(texts)).pooler_output
        frames = backbone.model.get_image_features(pixel_values=pix.flatten(0, 1)).pooler_output
    return text, F.normalize(frames.view(*pix.shape[:2], -1), dim=-1).mean(1)


def file_bytes(store, info) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() * t.element_size() for t in load_file(store.fetch(info)).values())


@pytest.mark.parametrize("method", BASELINES)
def test_a_stored_baseline_serves_as_the_model_it_was_trained_as(method, tiny_backbone, store, tmp_path):
    info, baseline = publish(store, tiny_backbone, tmp_path, "acme/t", method, 0)
    r = Retriever(tiny_backbone, store=store)
    assert r.load("acme/t@v1") == info
    pix = pixels(3, FRAMES, seed=1)
    text, video = reference(method, baseline, tiny_backbone, TEXTS[:3], pix)
    torch.testing.assert_close(r.encode_text(TEXTS[:3], task="acme/t"), text, atol=ATOL, rtol=0)
    torch.testing.assert_close(r.encode_video(pix, task="acme/t"), video, atol=ATOL, rtol=0)
    plain_text, plain_video = plain(tiny_backbone, TEXTS[:3], pix)
    assert (text - plain_text).abs().max() > 1e-3 and (video - plain_video).abs().max() > 1e-3  # it does matter
    assert r.memory == {"acme/t": {"prompts": file_bytes(store, info), "cache": 0}}
    assert r.loaded_bytes == file_bytes(store, info)


@pytest.mark.parametrize("precompute", [True, False])
def test_a_mixed_batch_of_baselines_prompts_and_plain_rows_equals_each_row_alone(precompute, tiny_backbone, store,
                                                                                   tmp_path):
    baselines = {}
    specs = [("acme/bias", "bias", {}), ("beta/bias", "bias", {}), ("acme/proj", "proj", {}),
             ("acme/attn", "adapter-attn", {}), ("acme/ffn", "adapter-ffn", {}),
             ("acme/ffn-narrow", "adapter-ffn", {"hidden": 4, "scale": 0.5}),  # another config: another group
             ("acme/partial", "partial", {}), ("acme/full", "full", {})]
    for seed, (task, method, config) in enumerate(specs):
        baselines[task] = publish(store, tiny_backbone, tmp_path, task, method, seed, **config)[1]
    prompts = {task: publish_prompts(store, tiny_backbone, tmp_path, task, method, 20 + seed)[1]
               for seed, (task, method) in enumerate([("acme/vop", "vop"), ("beta/vop-f", "vop-f")])}
    r = Retriever(tiny_backbone, store=store, precompute=precompute)
    r.load_many([*baselines, *prompts])
    rows = ["acme/full", None, "acme/bias", "acme/vop", "acme/ffn", "beta/bias", "acme/proj", "acme/attn",
            "beta/vop-f", "acme/partial", "acme/ffn-narrow", "acme/bias", None, "acme/full"]
    texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(len(rows))]
    pix = pixels(len(rows), FRAMES, seed=2)
    text, video = r.encode_text(texts, tasks=rows), r.encode_video(pix, tasks=rows)
    for i, task in enumerate(rows):
        torch.testing.assert_close(text[i], r.encode_text([texts[i]], task=task)[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(video[i], r.encode_video(pix[i:i + 1], task=task)[0], atol=ATOL, rtol=0)
        if task in baselines:
            method = r.snapshot().entry(task).info.method
            expected = reference(method, baselines[task], tiny_backbone, [texts[i]], pix[i:i + 1])
        elif task in prompts:
            expected = (oracle_text(tiny_backbone, prompts[task], [texts[i]]),
                        oracle_video(tiny_backbone, prompts[task], pix[i:i + 1]))
        else:
            expected = plain(tiny_backbone, [texts[i]], pix[i:i + 1])
        torch.testing.assert_close(text[i], expected[0][0], atol=ATOL, rtol=0)
        torch.testing.assert_close(video[i], expected[1][0], atol=ATOL, rtol=0)
    # two tenants' versions of one method share a group yet stay apart
    assert (text[2] - r.encode_text([texts[2]], task="beta/bias")[0]).abs().max() > 1e-3


def test_per_row_baselines_share_one_forward_and_own_models_one_each(tiny_backbone, store, tmp_path, monkeypatch):
    from vopstore.runtime import baselines as runtime_baselines

    for seed, (task, method) in enumerate([("a", "bias"), ("b", "proj"), ("c", "adapter-attn"), ("d", "adapter-ffn"),
                                           ("e", "bias"), ("f", "partial"), ("g", "full")]):
        publish(store, tiny_backbone, tmp_path, task, method, seed)
    r = Retriever(tiny_backbone, store=store)
    r.load_many(list("abcdefg"))
    calls = []
    for name in ("text_features", "frame_features"):
        real = getattr(runtime_baselines, name)
        monkeypatch.setattr(runtime_baselines, name,
                            lambda backbone, batch, overrides, real=real: calls.append(batch.shape[0]) or
                            real(backbone, batch, overrides))
    rows = list("abcdefgedcba")  # a..e per row (twice each), f partial and g full once
    r.encode_text([f"row {i}" for i in range(len(rows))], tasks=rows)
    assert sorted(calls) == [1, 1, 10]  # bias, proj, adapters: one forward of their 10 rows; partial, full: 1 each
    calls.clear()
    r.encode_video(pixels(len(rows), FRAMES), tasks=rows)
    assert sorted(calls) == [1, 1, 10]


def test_an_own_model_counts_its_bytes_against_max_bytes(tiny_backbone, store, tmp_path):
    full, _ = publish(store, tiny_backbone, tmp_path, "local/full", "full", 0)
    vop, _ = publish_prompts(store, tiny_backbone, tmp_path, "local/vop", "vop", 1)
    full_bytes = file_bytes(store, full)
    too_small = Retriever(tiny_backbone, store=store, max_bytes=full_bytes - 1)
    with pytest.raises(ConfigError, match="capacity"):
        too_small.load("local/full")
    assert too_small.loaded == {} and too_small.loaded_bytes == 0

    r = Retriever(tiny_backbone, store=store, max_bytes=full_bytes)
    r.load("local/vop")
    vop_bytes = r.loaded_bytes
    assert r.load("local/full") == full  # the prompt set (least recently used) makes room
    assert set(r.loaded) == {"local/full"} and r.loaded_bytes == full_bytes
    r.load("local/vop")  # and the full fine-tune is evicted like any task
    assert set(r.loaded) == {"local/vop"} and r.loaded_bytes == vop_bytes

    roomy = Retriever(tiny_backbone, store=store, max_bytes=full_bytes + vop_bytes)
    roomy.load_many(["local/vop", "local/full"])
    vop_tensors = file_bytes(store, vop)
    assert roomy.memory == {"local/full": {"prompts": full_bytes, "cache": 0},
                            "local/vop": {"prompts": vop_tensors, "cache": vop_bytes - vop_tensors}}
    roomy.unload("local/full")
    assert roomy.loaded_bytes == vop_bytes


def test_refresh_swaps_an_own_model_and_a_held_snapshot_keeps_the_old_one(tiny_backbone, store, tmp_path):
    v1, first = publish(store, tiny_backbone, tmp_path, "local/p", "partial", 1)
    store.tag(v1.ref, "prod")
    r = Retriever(tiny_backbone, store=store)
    r.load("local/p@prod")
    before = r.snapshot()
    v2, second = publish(store, tiny_backbone, tmp_path, "local/p", "partial", 2)
    store.tag(v2.ref, "prod")
    assert r.refresh()["local/p"].digest == v2.digest
    pix = pixels(2, FRAMES, seed=4)
    for snap, baseline in ((before, first), (r.snapshot(), second)):
        text, video = reference("partial", baseline, tiny_backbone, TEXTS[:2], pix)
        torch.testing.assert_close(snap.encode_text(TEXTS[:2], task="local/p"), text, atol=ATOL, rtol=0)
        torch.testing.assert_close(snap.encode_video(pix, task="local/p"), video, atol=ATOL, rtol=0)
    assert r.loaded_bytes == file_bytes(store, v2)


def test_serving_baselines_leaves_the_shared_backbone_bitwise_unchanged(tiny_backbone, store, tmp_path):
    before = {name: t.detach().clone() for name, t in tiny_backbone.model.state_dict().items()}
    tasks = []
    for seed, method in enumerate(BASELINES):
        publish(store, tiny_backbone, tmp_path, f"local/{method}", method, seed)
        tasks.append(f"local/{method}")
    publish_prompts(store, tiny_backbone, tmp_path, "local/vop", "vop", 9)
    r = Retriever(tiny_backbone, store=store)
    r.load_many([*tasks, "local/vop"])
    rows = [*tasks, "local/vop", None, *reversed(tasks)]
    r.encode_text([f"text {i}" for i in range(len(rows))], tasks=rows)
    r.encode_video(pixels(len(rows), FRAMES), tasks=rows)
    for task in tasks:
        r.unload(task)
    after = tiny_backbone.model.state_dict()
    assert set(after) == set(before)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name


def test_a_gallery_built_for_a_baseline_task_answers_as_brute_force(tiny_backbone, store, tmp_path, gallery_clips):
    from vopstore.gallery import Galleries

    publish(store, tiny_backbone, tmp_path, "acme/bias", "bias", 0)
    publish(store, tiny_backbone, tmp_path, "acme/full", "full", 1)
    r = Retriever(tiny_backbone, store=store)
    r.load_many(["acme/bias", "acme/full"])
    galleries = Galleries(tmp_path / "galleries")
    paths = gallery_clips[:6]
    galleries.create("acme/clips", paths)
    galleries.build_many(r, "acme/clips", ["acme/bias", "acme/full", None], progress=False, batch_size=4)
    rows = ["acme/full", "acme/bias", None, "acme/bias"]
    got = r.search(TEXTS[:4], tasks=rows, gallery="acme/clips", k=4, galleries=galleries)
    assert_hits(got, oracle(r, TEXTS[:4], rows, paths, 4))
