"""Runtime batches whose text groups differ in depth, layout and prompt count, with long captions.

Written after a mutation run (scripts/mutation.sh encode): merging text groups by a
shorter key, dropping a merged group's layout, tokenizing without room for the
prompts, or dropping normalize for plain video rows all passed the suite. Each row
is compared with the prompt set's own forward (vopstore.prompts, not the runtime).
"""

from __future__ import annotations

import torch

from tests.test_runtime_mixed import oracle_text, oracle_video, pixels, publish
from vopstore import Retriever
from vopstore.store import open_store

LONG = " ".join(["a very long caption about a man who opens a heavy wooden door slowly"] * 8)  # > 77 tokens
TEXTS = ["a dog", LONG, "two people dance in the rain", LONG + " at night", "cat", LONG + " again"]


def test_text_groups_of_other_depths_layouts_and_long_captions(tiny_backbone, tmp_path):
    store = open_store(str(tmp_path / "store"))
    sets = {  # task -> (method, overrides): same prompt count, other depth; another layout; another count
        "local/shallow": ("vop", {"text_depth": 1}),
        "local/deep": ("vop-f", {}),
        "local/released-a": ("vop", {"text_layout": "released", "text_prompts": 4}),
        "local/released-b": ("vop-p", {"text_layout": "released", "text_prompts": 4}),
        "local/four": ("vop-c", {"text_prompts": 4}),
    }
    files = {task: publish(store, tiny_backbone, tmp_path, task, method, seed, **over)[1]
             for seed, (task, (method, over)) in enumerate(sets.items())}
    r = Retriever(tiny_backbone, store=store)
    r.load_many(list(sets))
    for tasks in ([*sets, None], ["local/released-a", "local/released-b"] * 3, ["local/shallow", "local/deep"] * 3):
        texts = TEXTS[: len(tasks)]
        got = r.encode_text(texts, tasks=tasks)
        for row, (text, task) in enumerate(zip(texts, tasks)):
            want = _plain(tiny_backbone, text) if task is None else oracle_text(tiny_backbone, files[task], [text])
            torch.testing.assert_close(got[row:row + 1], want, atol=1e-5, rtol=0, msg=f"{task}: {text[:20]}")


def _plain(backbone, text: str) -> torch.Tensor:
    """Zero-shot CLIP from transformers itself (77 tokens: no room kept for prompts)."""
    with torch.inference_mode():
        return backbone.model.get_text_features(input_ids=backbone.tokenize([text])).pooler_output


def test_normalized_video_rows_with_and_without_a_task(tiny_backbone, tmp_path):
    store = open_store(str(tmp_path / "store"))
    _, path = publish(store, tiny_backbone, tmp_path, "local/v", "vop", 1)
    r = Retriever(tiny_backbone, store=store)
    r.load("local/v")
    pix = pixels(3)
    got = r.encode_video(pix, tasks=[None, "local/v", None], normalize=True)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    want = torch.nn.functional.normalize(oracle_video(tiny_backbone, path, pix[1:2]), dim=-1)
    torch.testing.assert_close(got[1:2], want, atol=1e-5, rtol=0)
    raw = r.encode_video(pix, tasks=[None, "local/v", None])
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3), atol=1e-3)  # the flag does something
