"""Store identity: a database and its blob store name the same store id, checked on every open.

Without it, a lost or zeroed ``store.db`` was silently recreated as an empty store
beside the old blobs, and its gc then deleted every one of them. Now:

* the database and the blob store hold the same id: the usual case, one small read each;
* a fresh (empty) database beside an empty blob store claims both with a new id;
* a database with an id beside a blob store without one (a new blob folder) writes it there;
* an empty database beside a blob store that holds data, a database whose id is not the
  blob store's, or an id-less database beside a blob store that has one, are refused with
  one line saying how to recover: ``vopstore fsck --rebuild``.
"""

from __future__ import annotations

import json
import uuid

from sqlalchemy import delete, select, text

from vopstore.blobs.keys import RESERVED_SEGMENT
from vopstore.db.models import Blob, StoreIdentity, Version, utcnow
from vopstore.errors import BlobNotFoundError, ConflictError, PermissionDeniedError, StoreUnavailableError
from vopstore.store import manifest

STORE_ID_KEY = f"{RESERVED_SEGMENT}/store-id"
RECOVER = "run 'vopstore fsck --rebuild' to rebuild the database from the blob store"


def check_identity(registry) -> str:
    """Refuse a database that does not belong with the registry's blob store; claim a fresh pair. Returns the id.

    A refused registry is closed (its connections released) before the error is raised.
    """
    try:
        db_id = database_id(registry)
        try:
            blob_id = blob_store_id(registry.blobs)
        except (StoreUnavailableError, PermissionDeniedError):
            # The blob store cannot be read now. What needs only the database (resolve, ls, and
            # loading from the local cache offline) still works; the check runs before the first write.
            registry.blobs = CheckedLater(registry, registry.blobs)
            return db_id
        if db_id is not None and db_id == blob_id:
            return db_id
        return _claim(registry)
    except StoreUnavailableError:
        registry.close()
        raise


class CheckedLater:
    """The blob store of a registry opened while it could not be read.

    Reads pass through; the identity is checked before the first put, delete or
    listing (every add, push, gc and rebuild starts with one), so nothing is
    written to, or collected from, a blob store that belongs to another database.
    """

    def __init__(self, registry, blobs) -> None:
        self._registry, self._blobs, self.url = registry, blobs, blobs.url
        self._checked = False

    def __getattr__(self, name: str):  # get, exists, modified, path, ...: no check needed to read
        return getattr(self._blobs, name)

    def put(self, key: str, data: bytes) -> bool:
        self._check()
        return self._blobs.put(key, data)

    def put_file(self, key: str, path, *, progress=None) -> bool:
        self._check()
        return self._blobs.put_file(key, path, progress=progress)

    def delete(self, key: str) -> None:
        self._check()
        self._blobs.delete(key)

    def list(self, prefix: str = ""):
        self._check()
        return self._blobs.list(prefix)

    def _check(self) -> None:
        if self._checked:
            return
        registry = self._registry
        registry.blobs = self._blobs  # checked against the real store; it stays once the check passes
        try:
            check_identity(registry)
        except BaseException:
            registry.blobs = self
            raise
        self._checked = registry.blobs is self._blobs  # False if the store was still unreadable


def database_id(registry) -> str | None:
    with registry._session() as session:
        return session.scalar(select(StoreIdentity.store_id).where(StoreIdentity.id == 1))


def blob_store_id(blobs) -> str | None:
    """The id written in the blob store; None when there is none."""
    try:
        raw = blobs.get(STORE_ID_KEY)
    except BlobNotFoundError:
        return None
    try:
        return str(json.loads(raw)["store_id"])
    except (ValueError, KeyError, TypeError):
        raise ConflictError(f"{blobs.url}/{STORE_ID_KEY} is damaged (not a store id); {RECOVER}") from None


def holds_data(blobs) -> bool:
    """Whether the blob store holds a store's data: blobs or version records (other files do not count)."""
    records = manifest.scan(blobs.list(""))
    return bool(records.blobs or records.manifests or records.removed or records.alias_heads)


def write_identity(registry, store_id: str | None = None) -> str:
    """Make the database and the blob store name one id (the blob store's, else ``store_id`` or a new one).

    Used by a rebuild, which has decided that this database belongs to these blobs.
    """
    blob_id = blob_store_id(registry.blobs) or _put_id(registry.blobs, store_id or str(uuid.uuid4()))
    with registry._session(write=True) as session:
        session.execute(delete(StoreIdentity))
        session.add(StoreIdentity(id=1, store_id=blob_id, created_at=utcnow()))
    return blob_id


def _claim(registry) -> str:
    blobs, name = registry.blobs, registry.url
    with registry._session(write=True) as session:  # SQLite's BEGIN IMMEDIATE serialises concurrent openers
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("LOCK TABLE store_identity IN EXCLUSIVE MODE"))
        # Read again under the lock: a concurrent opener of this fresh store may have claimed it.
        db_id = session.scalar(select(StoreIdentity.store_id).where(StoreIdentity.id == 1))
        blob_id = blob_store_id(blobs)
        if db_id is not None:
            blob_id = blob_id or _put_id(blobs, db_id)
            if blob_id != db_id:
                raise StoreUnavailableError(
                    f"{name}: the database belongs to store {db_id} but the blob store {blobs.url} to store "
                    f"{blob_id}; open each database with its own blobs, or {RECOVER}")
            return db_id
        empty = session.scalar(select(Version.id).limit(1)) is None and session.scalar(select(Blob.id).limit(1)) is None
        if empty and holds_data(blobs):  # only now, on this rare path, is the blob store listed
            raise StoreUnavailableError(
                f"{name}: the database is empty but the blob store {blobs.url} holds a store's data "
                f"(store {blob_id or 'without an id'}): the database was lost or replaced; {RECOVER}")
        if blob_id is not None and not empty:
            raise StoreUnavailableError(
                f"{name}: the database has no store id but the blob store {blobs.url} belongs to store {blob_id}: "
                f"it may be an older backup or another store's database; {RECOVER}")
        blob_id = blob_id or _put_id(blobs, str(uuid.uuid4()))  # an empty pair, or a database from before ids
        session.add(StoreIdentity(id=1, store_id=blob_id, created_at=utcnow()))
        return blob_id


def _put_id(blobs, store_id: str) -> str:
    """Write ``store_id`` create-only; return the id the blob store holds afterwards (another writer's if first)."""
    if blobs.put(STORE_ID_KEY, json.dumps({"store_id": store_id}).encode("utf-8")):
        return store_id
    return blob_store_id(blobs) or store_id
