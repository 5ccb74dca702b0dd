"""Regression: text rows of several methods merged into ONE forward come back in row order.

Methods whose text prompts have the same shape share a text forward; its rows are
the members' rows concatenated (not ascending). When that merged group was the
only group, the result was returned without putting rows back in order, so
interleaved tasks got each other's embeddings (found by the serving tests).
"""

from __future__ import annotations

import torch

from tests.test_runtime_mixed import TEXTS, publish
from vopstore import Retriever
from vopstore.store import open_store


def test_interleaved_tasks_of_methods_sharing_one_text_forward(tiny_backbone, tmp_path):
    store = open_store(str(tmp_path / "store"))
    for task, method, seed in (("a", "vop", 1), ("b", "vop-f", 2), ("c", "vop-p", 3)):
        publish(store, tiny_backbone, tmp_path, f"acme/{task}", method, seed)
    r = Retriever(tiny_backbone, store=store)
    r.load_many(["acme/a", "acme/b", "acme/c"])
    tasks = [f"acme/{'abc'[i % 3]}" for i in range(len(TEXTS) * 2)]
    texts = TEXTS * 2
    together = r.encode_text(texts, tasks=tasks)
    alone = torch.cat([r.encode_text([text], task=task) for text, task in zip(texts, tasks)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
