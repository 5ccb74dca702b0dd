"""The serving runtime: :class:`Retriever` loads a backbone once and serves many tasks' prompt sets and baselines.

Usage::

    from vopstore import Retriever
    r = Retriever("openai/clip-vit-base-patch32", device="cuda")
    r.load("acme/lsmdc@prod")                       # the exact VersionInfo
    t = r.encode_text(["a man opens a door"], task="acme/lsmdc")
    t = r.encode_text(texts, tasks=["acme/lsmdc", "beta/msrvtt", None])   # one task per row
"""

from vopstore.runtime.retriever import Retriever, Snapshot

__all__ = ["Retriever", "Snapshot"]
