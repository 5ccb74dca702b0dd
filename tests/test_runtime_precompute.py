"""Precomputed prompt keys and values: same embeddings, bytes counted, freed with their task.

Oracles: the hand-written reference forward of tests/test_prompts_oracle.py (per row, per
frame, nothing of vopstore.prompts inside), the same retriever with ``precompute=False``,
each row served alone, and cache sizes counted by hand from the tiny configs.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from tests.test_prompts_oracle import (ALL, CONFIGS, FRAMES, TEXTS, VARIANTS, assert_rows, make_method, params,
                                       pixels, ref_text, ref_text_rows, ref_video)
from vopstore.store import open_store

# The tiny CLIP: 3 text layers of width 32, 3 vision layers of width 64, fp32.
TEXT_LAYERS, TEXT_WIDTH, VISION_WIDTH, FP32 = 3, 32, 64, 4
# Vision prompt tokens whose keys/values are cached, per CONFIGS entry (layers x tokens, by hand):
# vop: 3 layers x 3; vop-p: 3 x 2 shared + 3 layers x 4 frame slots x 3; vop-c: generated, none;
# vop-f: K^s=2 layers x 3 + 1 inter-frame layer x 2 video prompts; vop-f+p: 2 x 2 + 2 x 4 x 3 + 1 x 2; vop-f+c: 1 x 2.
VISION_CACHED_TOKENS = {"vop": 9, "vop-p": 6 + 36, "vop-c": 0, "vop-f": 6 + 2, "vop-f+p": 4 + 24 + 2, "vop-f+c": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def backbone(tiny_backbone_dir, tmp_path_factory):
    """The tiny CLIP with random LayerNorm weights and biases: at init they are 1 and 0, and an LN of an LN
    is then the LN itself, which would hide a missing pre_layrnorm on the layer-0 prompts."""
    from vopstore.backbone import load_backbone

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VOPSTORE_HOME", str(tmp_path_factory.mktemp("backbone-home")))
        loaded = load_backbone(tiny_backbone_dir)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in loaded.model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=generator))
    return loaded


@pytest.fixture
def store():
    registry = open_store()
    yield registry
    registry.close()


def publish(store, backbone, tmp_path, task: str, method: str, cfg: dict, seed: int) -> dict:
    built = make_method(backbone, method, cfg, seed=seed)
    path = tmp_path / f"{task.replace('/', '_')}.safetensors"
    built.save(path, backbone)
    store.add(task, path)
    return params(built)


def retrievers(backbone, store, tasks):
    """The same tasks loaded with and without precompute."""
    from vopstore import Retriever

    pre, plain = Retriever(backbone, store=store), Retriever(backbone, store=store, precompute=False)
    pre.load_many(tasks)
    plain.load_many(tasks)
    return pre, plain


def reference(backbone, text: str, pix: torch.Tensor, task, tasks: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The hand-written forward's (text, video) embedding of one row."""
    with torch.no_grad():
        if task is None:
            return (ref_text(backbone.model, backbone.tokenize([text])[0].tolist(), None),
                    ref_video(backbone.model, pix))
        method, cfg, p = tasks[task]
        return ref_text_rows(backbone, [text], p, cfg)[0], ref_video(backbone.model, pix, method, p, cfg)


def check_mixed(backbone, store, tasks: dict, rows: list) -> None:
    """A mixed batch with precompute equals precompute=False, each row alone, and the reference."""
    pre, plain = retrievers(backbone, store, list(tasks))
    assert all(pre.memory[t]["cache"] > 0 for t in tasks if VISION_CACHED_TOKENS[tasks[t][0]]
               or tasks[t][1].get("text_layout", "prefix") == "prefix")  # the cached path really runs
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(rows))]
    pix = pixels(len(rows), seed=11)
    got_t, got_v = pre.encode_text(texts, tasks=rows), pre.encode_video(pix, tasks=rows)
    assert_rows(got_t, plain.encode_text(texts, tasks=rows), "text: precompute vs precompute=False")
    assert_rows(got_v, plain.encode_video(pix, tasks=rows), "video: precompute vs precompute=False")
    for i, task in enumerate(rows):
        alone_t = pre.encode_text([texts[i]], task=task)
        alone_v = pre.encode_video(pix[i : i + 1], task=task)
        assert_rows(got_t[i : i + 1], alone_t, f"text row {i} ({task}) vs alone")
        assert_rows(got_v[i : i + 1], alone_v, f"video row {i} ({task}) vs alone")
        exp_t, exp_v = reference(backbone, texts[i], pix[i], task, tasks)
        assert_rows(got_t[i : i + 1], exp_t[None], f"text row {i} ({task}) vs reference")
        assert_rows(got_v[i : i + 1], exp_v[None], f"video row {i} ({task}) vs reference")


@pytest.mark.parametrize("method", list(CONFIGS))
def test_mixed_batch_of_both_layouts_equals_today_rows_alone_and_reference(backbone, store, tmp_path, method):
    tasks = {}
    for layout in ("prefix", "released"):
        cfg = dict(CONFIGS[method], text_layout=layout)
        for copy in range(2):
            task = f"local/{layout}-{copy}"
            tasks[task] = (method, cfg, publish(store, backbone, tmp_path, task, method, cfg, seed=len(tasks)))
    names = list(tasks)
    check_mixed(backbone, store, tasks, [names[0], None, names[2], names[1], names[3], names[0], names[2]])


def test_every_method_and_depth_in_one_batch(backbone, store, tmp_path):
    """All methods, partial text/visual depths (prompts kept by a later layer) and layouts share one batch."""
    tasks = {}
    for name in [*CONFIGS, *VARIANTS]:
        method, cfg = ALL[name]
        task = f"local/{name.replace('+', '').replace('/', '-')}"
        tasks[task] = (method, cfg, publish(store, backbone, tmp_path, task, method, cfg, seed=40 + len(tasks)))
    names = list(tasks)
    check_mixed(backbone, store, tasks, [*names, None, *reversed(names[::3])])


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("layout", ["prefix", "released"])
def test_cache_bytes_counted_by_hand(backbone, store, tmp_path, method, layout):
    from vopstore import Retriever

    cfg = dict(CONFIGS[method], text_layout=layout)
    p = publish(store, backbone, tmp_path, "local/a", method, cfg, seed=1)
    r = Retriever(backbone, store=store)
    r.load("local/a")
    n_text = cfg["text_prompts"]
    text = 2 * TEXT_LAYERS * (1 + n_text) * TEXT_WIDTH * FP32 if layout == "prefix" else 0
    vision = 2 * VISION_CACHED_TOKENS[method] * VISION_WIDTH * FP32
    prompts = sum(t.numel() for t in p.values()) * FP32
    assert r.memory == {"local/a": {"prompts": prompts, "cache": text + vision}}
    assert r.loaded_bytes == prompts + text + vision
    off = Retriever(backbone, store=store, precompute=False)
    off.load("local/a")
    assert off.memory == {"local/a": {"prompts": prompts, "cache": 0}}


def test_forward_reads_the_cache(backbone, store, tmp_path):
    """Spoiling the stored keys changes the output: the cached rows are not recomputed."""
    publish(store, backbone, tmp_path, "local/a", "vop-f", CONFIGS["vop-f"], seed=1)
    pre, _ = retrievers(backbone, store, ["local/a"])
    pix = pixels(2, seed=3)
    text, video = pre.encode_text(TEXTS[:2], task="local/a"), pre.encode_video(pix, task="local/a")
    (storage,) = pre._builder.storages.values()
    for part in ("text.kv", "visual.kv", "video.kv"):
        stored = storage.tensors[f"cache:{part}"]
        for half in (slice(0, stored.shape[-1] // 2), slice(stored.shape[-1] // 2, None)):  # keys, then values
            saved = stored.clone()
            stored[..., half] *= 0.5
            changed = pre.encode_text(TEXTS[:2], task="local/a") if part == "text.kv" else \
                pre.encode_video(pix, task="local/a")
            assert (changed - (text if part == "text.kv" else video)).abs().max() > 1e-4, (part, half)
            stored.copy_(saved)


def test_max_bytes_counts_the_cache(backbone, store, tmp_path):
    from vopstore import Retriever
    from vopstore.errors import ConfigError

    for seed, task in enumerate("abc"):
        publish(store, backbone, tmp_path, f"local/{task}", "vop", CONFIGS["vop"], seed)
    pre, plain = retrievers(backbone, store, ["local/a"])
    with_cache, without = pre.loaded_bytes, plain.loaded_bytes
    assert with_cache == without + pre.memory["local/a"]["cache"] and with_cache > without
    tight = Retriever(backbone, store=store, max_bytes=without)  # fits the prompts, not their cache
    with pytest.raises(ConfigError, match="precompute=False"):
        tight.load("local/a")
    assert dict(tight.loaded) == {}
    Retriever(backbone, store=store, max_bytes=without, precompute=False).load("local/a")
    r = Retriever(backbone, store=store, max_bytes=int(2.5 * with_cache))  # room for two cached sets
    for task in "abc":
        r.load(f"local/{task}")
    assert set(r.loaded) == {"local/b", "local/c"} and r.loaded_bytes == 2 * with_cache


def test_eviction_frees_the_cache(backbone, store, tmp_path):
    from vopstore import Retriever

    groups = {"local/a": ("vop", CONFIGS["vop"]), "local/b": ("vop-p", CONFIGS["vop-p"])}  # two groups
    p = {task: publish(store, backbone, tmp_path, task, method, cfg, seed)
         for seed, (task, (method, cfg)) in enumerate(groups.items())}
    r = Retriever(backbone, store=store, max_tasks=1)
    r.load("local/a")
    snapshot = r.snapshot()
    cache = weakref.ref(snapshot.bank.groups[snapshot.entry("local/a").group].cache["text.kv"])
    del snapshot
    r.load("local/b")  # evicts a: its group empties and drops its storage, cache included
    gc.collect()
    assert cache() is None
    assert r.memory.keys() == {"local/b"}
    assert r.loaded_bytes == sum(r.memory["local/b"].values())
    text = r.encode_text(TEXTS[:2], task="local/b")  # what stays loaded still reads its own cache
    assert_rows(text, ref_text_rows(backbone, TEXTS[:2], p["local/b"], CONFIGS["vop-p"]), "b")


def test_reused_slot_gets_the_new_tasks_cache(backbone, store, tmp_path):
    """Within one group an evicted slot is reused: the new task's cache replaces the old one."""
    from vopstore import Retriever

    files = {t: publish(store, backbone, tmp_path, f"local/{t}", "vop-f", CONFIGS["vop-f"], s)
             for s, t in enumerate("abcd")}
    r = Retriever(backbone, store=store, max_tasks=2)
    for task in "abcdab":
        r.load(f"local/{task}")
    pix = pixels(2, seed=2)
    cfg = CONFIGS["vop-f"]
    for task in "ab":
        p = files[task]
        assert_rows(r.encode_text(TEXTS[:2], task=f"local/{task}"), ref_text_rows(backbone, TEXTS[:2], p, cfg),
                    f"{task} text")
        expected = torch.stack([ref_video(backbone.model, pix[b], "vop-f", p, cfg) for b in range(2)])
        assert_rows(r.encode_video(pix, task=f"local/{task}"), expected, f"{task} video")


@pytest.mark.parametrize("name", list(ALL))
def test_training_forward_skips_prompt_rows_with_the_same_gradients(backbone, name):
    """The training path (prompt rows as keys/values only) equals the full-rows forward, values and gradients."""
    from vopstore.prompts.forward import frames_forward, text_forward

    method, cfg = ALL[name]
    built = make_method(backbone, method, cfg, seed=5)
    ids = backbone.tokenize(TEXTS, built.text_tokens)
    pix = pixels(2, frames=FRAMES, seed=4)
    results = []
    for full in (False, True):
        built.zero_grad()
        index = torch.zeros(len(TEXTS), dtype=torch.long)
        text_prompts = type(built).text_prompts(built.config, built.prompt_tensors(), index)
        video_prompts = type(built).video_prompts(built.config, built.prompt_tensors(), index[:2], FRAMES)
        text_prompts.full_rows = video_prompts.full_rows = full
        text = text_forward(backbone, ids, text_prompts)
        video = frames_forward(backbone, pix, video_prompts)
        (text.square().sum() + video.square().sum()).backward()
        results.append((text.detach(), video.detach(), {n: p.grad.clone() for n, p in built.named_parameters()
                                                          if p.grad is not None}))
    (skip_t, skip_v, skip_g), (full_t, full_v, full_g) = results
    torch.testing.assert_close(skip_t, full_t, atol=1e-5, rtol=0)
    torch.testing.assert_close(skip_v, full_v, atol=1e-5, rtol=0)
    assert skip_g.keys() == full_g.keys() and "text" in skip_g
    for tensor, grad in full_g.items():
        torch.testing.assert_close(skip_g[tensor], grad, atol=1e-5, rtol=1e-4, msg=f"{name}: grad of {tensor}")
