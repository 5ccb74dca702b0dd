"""Precomputed keys/values kept on disk: a restarted Retriever reads them, a spoiled file is only a miss.

Oracle: the same tasks served with ``precompute=False`` (today's exact forward, nothing cached).
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.test_prompts_oracle import CONFIGS, TEXTS, assert_rows, pixels
from tests.test_runtime_precompute import backbone, publish, store  # noqa: F401 (fixtures)
from vopstore.runtime import precompute
from vopstore.runtime.cache_files import CacheFiles

TASK = "local/kept"


@pytest.fixture
def published(backbone, store, tmp_path):  # noqa: F811
    publish(store, backbone, tmp_path, TASK, "vop-f", CONFIGS["vop-f"], seed=5)  # text, visual and video caches
    return store.resolve(TASK).digest


def outputs(retriever) -> tuple[torch.Tensor, torch.Tensor]:
    return retriever.encode_text(TEXTS[:3], task=TASK), retriever.encode_video(pixels(2, seed=4), task=TASK)


def assert_serves_exactly(retriever, backbone, store) -> None:  # noqa: F811
    from vopstore import Retriever

    plain = Retriever(backbone, store=store, precompute=False)
    plain.load(TASK)
    (text, video), (want_text, want_video) = outputs(retriever), outputs(plain)
    assert_rows(text, want_text, "text vs precompute=False")
    assert_rows(video, want_video, "video vs precompute=False")


def forbid_computing(monkeypatch) -> None:
    def fail(*_args, **_kwargs):
        raise AssertionError("the cache was computed although a kept file holds it")
    monkeypatch.setattr(precompute, "build_cache", fail)


def test_a_restarted_retriever_reads_the_kept_file_and_serves_the_same(backbone, store, published,  # noqa: F811
                                                                        monkeypatch):
    from vopstore import Retriever
    from vopstore.home import cache_dir

    first = Retriever(backbone, store=store)
    first.load(TASK)
    files = CacheFiles(cache_dir() / "precomputed", backbone)
    assert files.path(published).is_file()
    forbid_computing(monkeypatch)
    restarted = Retriever(backbone, store=store)
    restarted.load(TASK)
    assert restarted.memory[TASK]["cache"] == first.memory[TASK]["cache"] > 0
    assert_serves_exactly(restarted, backbone, store)


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor's data: the header still parses
    path.write_bytes(bytes(data))


SPOILERS = {
    "a flipped bit in a tensor": _flip_last_byte,
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:100]),
    "not safetensors": lambda path: path.write_bytes(b"garbage" * 10),
    "empty": lambda path: path.write_bytes(b""),
}


@pytest.mark.parametrize("spoil", list(SPOILERS))
def test_a_spoiled_file_is_computed_again_and_rewritten(backbone, store, published, spoil, caplog,  # noqa: F811
                                                        monkeypatch):
    from vopstore import Retriever
    from vopstore.home import cache_dir

    Retriever(backbone, store=store).load(TASK)
    files = CacheFiles(cache_dir() / "precomputed", backbone)
    SPOILERS[spoil](files.path(published))
    restarted = Retriever(backbone, store=store)
    restarted.load(TASK)
    assert_serves_exactly(restarted, backbone, store)
    assert "computing it again" in caplog.text
    forbid_computing(monkeypatch)  # rewritten: the next restart reads it
    Retriever(backbone, store=store).load(TASK)


def test_a_file_of_another_set_is_refused(backbone, store, published, tmp_path):  # noqa: F811
    """A valid file moved under another set's name (or the digest it records) is not that set's cache."""
    from vopstore import Retriever
    from vopstore.home import cache_dir

    publish(store, backbone, tmp_path, "local/other", "vop-f", CONFIGS["vop-f"], seed=6)
    Retriever(backbone, store=store).load_many([TASK, "local/other"])
    files = CacheFiles(cache_dir() / "precomputed", backbone)
    other = files.path(store.resolve("local/other").digest)
    files.path(published).write_bytes(other.read_bytes())
    restarted = Retriever(backbone, store=store)
    restarted.load(TASK)
    assert_serves_exactly(restarted, backbone, store)


def test_each_backbone_architecture_dtype_and_device_has_its_own_files(backbone, published, tmp_path):  # noqa: F811
    base = CacheFiles(tmp_path, backbone).path(published)
    for field, value in (("dtype", torch.bfloat16), ("fingerprint", "0" * 64), ("device", torch.device("meta"))):
        other = copy.copy(backbone)
        setattr(other, field, value)
        assert CacheFiles(tmp_path, other).path(published) != base, field
    other = copy.copy(backbone)
    other.model = copy.copy(backbone.model)
    other.model.config = copy.deepcopy(backbone.model.config)
    other.model.config.text_config.hidden_act = "gelu"  # same weights, another forward
    assert CacheFiles(tmp_path, other).path(published) != base


def test_an_unwritable_cache_folder_costs_only_the_saving(backbone, store, published, caplog):  # noqa: F811
    from vopstore import Retriever
    from vopstore.home import cache_dir

    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / "precomputed").write_text("a file where the folder should be")
    retriever = Retriever(backbone, store=store)
    retriever.load(TASK)
    assert_serves_exactly(retriever, backbone, store)
    assert "could not keep the precomputed cache" in caplog.text
