"""``Retriever(precompute="background")``: a new set serves at once, its cache lands later, never on a stale task.

Oracle: the same tasks served with ``precompute=False`` (today's exact forward). The background
computation is held on an Event, so what a test sees before and after it is deterministic.
"""

from __future__ import annotations

import threading

import pytest

from tests.test_prompts_oracle import CONFIGS, TEXTS, assert_rows, pixels
from tests.test_runtime_precompute import backbone, publish, store  # noqa: F401 (fixtures)
from vopstore.errors import ConfigError
from vopstore.runtime import precompute

TASK = "local/bg"


@pytest.fixture
def held(monkeypatch):
    """Background computations wait for ``held.set()``."""
    gate, real = threading.Event(), precompute.build_cache

    def build_cache(*args, **kwargs):
        assert gate.wait(60), "the test never released the background computation"
        return real(*args, **kwargs)

    monkeypatch.setattr(precompute, "build_cache", build_cache)
    yield gate
    gate.set()


def outputs(retriever, task=TASK):
    return retriever.encode_text(TEXTS[:3], task=task), retriever.encode_video(pixels(2, seed=8), task=task)


def reads_cache(retriever, task) -> bool:
    """Whether the bank group serving ``task`` holds precomputed keys/values (what its rows read)."""
    bank = retriever._bank
    return bool(bank.groups[bank.entries[task].group].cache)


def assert_exact(retriever, backbone, store, task=TASK):  # noqa: F811
    from vopstore import Retriever

    plain = Retriever(backbone, store=store, precompute=False)
    plain.load(task)
    for got, want, what in zip(outputs(retriever, task), outputs(plain, task), ("text", "video")):
        assert_rows(got, want, f"{what} vs precompute=False")


def test_a_new_set_serves_at_once_and_gets_its_cache_later(backbone, store, tmp_path, held):  # noqa: F811
    from vopstore import Retriever

    publish(store, backbone, tmp_path, TASK, "vop-f", CONFIGS["vop-f"], seed=2)
    r = Retriever(backbone, store=store, precompute="background")
    r.load(TASK)
    assert r.memory[TASK]["cache"] == 0  # serving through the full forward while the cache is computed
    assert_exact(r, backbone, store)
    assert not r.wait_precomputed(timeout=0.05)
    held.set()
    assert r.wait_precomputed(timeout=60)
    assert r.memory[TASK]["cache"] > 0 and reads_cache(r, TASK)
    assert_exact(r, backbone, store)
    restarted = Retriever(backbone, store=store, precompute="background")
    restarted.load(TASK)  # kept on disk: in place at once
    assert restarted.memory[TASK]["cache"] == r.memory[TASK]["cache"]


def test_mixed_batch_of_a_cached_and_a_pending_set_of_one_method(backbone, store, tmp_path, held):  # noqa: F811
    from vopstore import Retriever

    publish(store, backbone, tmp_path, "local/old", "vop", CONFIGS["vop"], seed=3)
    publish(store, backbone, tmp_path, "local/new", "vop", CONFIGS["vop"], seed=4)
    r = Retriever(backbone, store=store, precompute="background")
    held.set()
    r.load("local/old")
    assert r.wait_precomputed(timeout=60)
    held.clear()
    r.load("local/new")
    assert r.memory["local/old"]["cache"] > 0 and r.memory["local/new"]["cache"] == 0
    assert reads_cache(r, "local/old") and not reads_cache(r, "local/new")
    rows = ["local/old", "local/new", None, "local/new", "local/old"]
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(rows))]
    plain = Retriever(backbone, store=store, precompute=False)
    plain.load_many(["local/old", "local/new"])
    assert_rows(r.encode_text(texts, tasks=rows), plain.encode_text(texts, tasks=rows), "mixed text")
    pix = pixels(len(rows), seed=9)
    assert_rows(r.encode_video(pix, tasks=rows), plain.encode_video(pix, tasks=rows), "mixed video")


def test_a_task_reloaded_or_unloaded_meanwhile_is_left_as_it_now_is(backbone, store, tmp_path, held):  # noqa: F811
    from vopstore import Retriever

    publish(store, backbone, tmp_path, TASK, "vop", CONFIGS["vop"], seed=5)
    publish(store, backbone, tmp_path, "local/gone", "vop", CONFIGS["vop"], seed=6)
    r = Retriever(backbone, store=store, precompute="background")
    r.load_many([TASK + "@v1", "local/gone"])
    publish(store, backbone, tmp_path, TASK, "vop", CONFIGS["vop"], seed=7)  # v2
    r.load(TASK + "@v2")
    r.unload("local/gone")
    held.set()
    assert r.wait_precomputed(timeout=60)
    assert "local/gone" not in r.loaded  # the late cache did not bring it back
    assert r.loaded[TASK].number == 2 and r.memory[TASK]["cache"] > 0 and reads_cache(r, TASK)  # v2's, not v1's
    assert_exact(r, backbone, store, TASK)


def test_a_cache_that_does_not_fit_leaves_the_set_serving_without(backbone, store, tmp_path, caplog):  # noqa: F811
    from vopstore import Retriever

    publish(store, backbone, tmp_path, TASK, "vop-f", CONFIGS["vop-f"], seed=8)
    probe = Retriever(backbone, store=store, precompute=False)
    probe.load(TASK)
    prompt_bytes = probe.memory[TASK]["prompts"]
    r = Retriever(backbone, store=store, precompute="background", max_bytes=prompt_bytes + 1)
    r.load(TASK)
    assert r.wait_precomputed(timeout=60)
    assert r.memory[TASK] == {"prompts": prompt_bytes, "cache": 0}
    assert "serve without" in caplog.text and "capacity" in caplog.text
    assert_exact(r, backbone, store)


def test_precompute_takes_only_its_three_values(backbone):  # noqa: F811
    from vopstore import Retriever

    for bad in ("later", 1.5, None):
        with pytest.raises(ConfigError, match="precompute must be True, False or 'background'"):
            Retriever(backbone, precompute=bad)


def test_refresh_follows_a_moved_alias_the_same_way(backbone, store, tmp_path, held):  # noqa: F811
    from vopstore import Retriever

    publish(store, backbone, tmp_path, TASK, "vop", CONFIGS["vop"], seed=10)
    store.tag(TASK + "@v1", "prod")
    r = Retriever(backbone, store=store, precompute="background")
    held.set()
    r.load(TASK + "@prod")
    assert r.wait_precomputed(timeout=60)
    held.clear()
    publish(store, backbone, tmp_path, TASK, "vop", CONFIGS["vop"], seed=11)
    store.tag(TASK + "@v2", "prod")
    assert list(r.refresh()) == [TASK]
    assert r.loaded[TASK].number == 2 and not reads_cache(r, TASK)  # serving v2 at once, its cache pending
    assert_exact(r, backbone, store, TASK)
    held.set()
    assert r.wait_precomputed(timeout=60) and reads_cache(r, TASK)
    assert_exact(r, backbone, store, TASK)
