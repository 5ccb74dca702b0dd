"""Video galleries and their search indexes (faiss), keyed by the exact prompts they were built with.

Usage::

    from vopstore import Retriever
    from vopstore.gallery import Galleries

    r = Retriever("openai/clip-vit-base-patch32"); r.load("acme/lsmdc@prod")
    g = Galleries()                                   # $VOPSTORE_HOME/galleries
    g.create("acme/clips", ["a.mp4", "b.mp4"])        # ids: the file stems (or pass {id: path})
    g.build(r, "acme/clips", "acme/lsmdc")            # embeds what the index lacks, appends
    r.search(["a man opens a door"], task="acme/lsmdc", gallery="acme/clips", k=10)

torch is imported only where videos are embedded; faiss where an index is built or loaded.
"""

from vopstore.gallery.galleries import VIDEO_SUFFIXES, Galleries, parse_gallery
from vopstore.gallery.index import KINDS, SAMPLING, IndexKey

__all__ = ["Galleries", "IndexKey", "KINDS", "SAMPLING", "VIDEO_SUFFIXES", "parse_gallery"]
