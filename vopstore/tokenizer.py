"""The real CLIP tokenizer, built offline from the vendored BPE vocabulary.

``vopstore/assets/bpe_simple_vocab_16e6.txt.gz`` is OpenAI's merge list. The
vocabulary is derived from it exactly as OpenAI's ``SimpleTokenizer`` does: the
256 byte symbols, the same symbols with ``</w>``, one token per merge (the first
48,894 merges), then ``<|startoftext|>`` and ``<|endoftext|>``: 49,408 tokens,
the vocabulary of ``openai/clip-vit-base-patch32``.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

ASSET = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
# OpenAI keeps merges[1 : 49152 - 256 - 2 + 1]: line 0 is a version header.
_N_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte -> printable unicode table (GPT-2's, unchanged)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Return the CLIP vocabulary (token -> id) and the merge list ("a b" strings)."""
    lines = gzip.open(ASSET, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : _N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [SOT_TOKEN, EOT_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def clip_tokenizer():
    """Build a ``transformers.CLIPTokenizer`` identical to OpenAI CLIP's, with no download.

    Padding uses ``<|endoftext|>`` like ``openai/clip-vit-base-patch32``; since
    vopstore pools at the first end-of-text token under a causal mask, the pad
    id never changes an embedding.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m.split()) for m in merges])
    tokenizer.model_max_length = CONTEXT_LENGTH
    return tokenizer


def save_clip_tokenizer(folder: str | Path) -> None:
    """Write the CLIP tokenizer files (vocab.json, merges.txt, configs) into ``folder``."""
    clip_tokenizer().save_pretrained(str(folder))
