"""The verified local cache: where files live (per tenant), what a damaged copy does, what is refused.

Written after a mutation run (scripts/mutation.sh cache) showed that ignoring the
tenant in put/get, the root argument, or the documented layout passed every test.
"""

from __future__ import annotations

import re

import pytest

from tests.fixtures.stores import checkpoint_bytes
from vopstore.core import sha256_bytes
from vopstore.errors import BlobIntegrityError
from vopstore.store.cache import BlobCache

DATA = checkpoint_bytes(3)
DIGEST = sha256_bytes(DATA)


def test_files_live_under_the_given_root_keyed_by_tenant_and_digest(tmp_path, vopstore_home):
    cache = BlobCache(tmp_path / "cache")
    path = cache.put(DIGEST, DATA, "acme")
    assert path == tmp_path / "cache" / "acme" / "sha256" / DIGEST[:2] / f"{DIGEST}.safetensors"
    assert path.read_bytes() == DATA and not (vopstore_home / "cache").exists()
    assert cache.get(DIGEST, "acme") == path
    assert cache.get(DIGEST, "beta") is None  # another tenant is never served acme's copy
    assert cache.get(DIGEST) is None  # nor is the digest-only layout
    shared = cache.put(DIGEST, DATA)
    assert shared == tmp_path / "cache" / "sha256" / DIGEST[:2] / f"{DIGEST}.safetensors"
    assert cache.get(DIGEST) == shared and cache.get(DIGEST, "beta") is None


def test_a_damaged_copy_is_dropped_not_used(tmp_path):
    cache = BlobCache(tmp_path)
    path = cache.put(DIGEST, DATA, "acme")
    path.write_bytes(DATA[:-1] + b"!")
    assert cache.get(DIGEST, "acme") is None and not path.exists()
    assert cache.get(DIGEST, "acme") is None  # gone already: still just a miss


def test_bytes_that_do_not_hash_to_the_digest_are_refused(tmp_path):
    cache = BlobCache(tmp_path)
    other = sha256_bytes(b"other")
    with pytest.raises(BlobIntegrityError, match=re.escape(f"under {other[:12]}...")):
        cache.put(other, DATA, "acme")
    assert not any(tmp_path.rglob("*.safetensors"))
