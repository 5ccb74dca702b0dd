"""Engines for SQLite (default) and PostgreSQL (psycopg 3), with errors mapped to vopstore's.

SQLite runs in WAL mode with a busy timeout, and a connection opened with the
execution option ``immediate=True`` starts its transaction with ``BEGIN
IMMEDIATE``: writers then queue on the database lock up front instead of
failing when a read transaction tries to become a write transaction.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from vopstore.errors import ConfigError, StoreUnavailableError

BUSY_TIMEOUT_S = 60


def make_engine(url: str, *, read_only: bool = False):
    """Create an SQLAlchemy engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    ``read_only`` (SQLite files only): open the file read-only and immutable, for a store in a
    folder this process cannot write (a read-only home or mount): reads work, writes fail with a
    one-line "read-only" error.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            if read_only:
                from sqlalchemy.engine import make_url

                path = Path(make_url(url).database or "").resolve()
                # immutable: no -wal/-shm files are created (the folder is not writable), no locks taken; unless a
                # write-ahead log holds committed pages: then plain read-only, which reads them through its -shm.
                wal = path.with_name(path.name + "-wal")
                immutable = "" if wal.is_file() and wal.stat().st_size else "&immutable=1"
                uri = f"sqlite:///{path.as_uri()}?mode=ro{immutable}&uri=true"
                engine = create_engine(uri, connect_args={"timeout": BUSY_TIMEOUT_S})
                _setup_sqlite(engine, read_only=True)
                return engine
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
            _setup_sqlite(engine)
            return engine
        if url.startswith("postgresql"):
            return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StoreUnavailableError(f"cannot use database URL {redact(url)}: {exc}") from None
    except ImportError as exc:  # the driver is an optional extra
        raise StoreUnavailableError(
            f"{redact(url)} needs the {exc.name or 'database'} driver, which is not installed; use "
            "postgresql+psycopg://... with: pip install 'vopstore[postgres]'"
        ) from None
    raise StoreUnavailableError(
        f"unsupported database URL {redact(url)}; use sqlite:///path or postgresql+psycopg://user@host/db"
    )


def _setup_sqlite(engine, read_only: bool = False) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event below issue BEGIN; pysqlite's own handling is lazy and
        # would turn concurrent writers into "database is locked" errors instead of waits.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        if not read_only:
            _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("immediate", False) and not read_only
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _enable_wal(cursor) -> None:
    """Switch the file to WAL mode (once per file), waiting out other connections as a busy timeout would.

    SQLite does not call its busy handler for this switch when another connection holds a write
    lock (it would risk a deadlock): it fails at once with "database is locked". Processes that
    open a new store together meet exactly that, so the switch is retried until the timeout.
    """
    import sqlite3
    import time

    deadline, pause = time.monotonic() + BUSY_TIMEOUT_S, 0.002
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("database is locked (could not switch it to WAL mode)")
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has nothing to hide that we can find
        return url.split("@")[-1]


class TransientDatabaseError(StoreUnavailableError):
    """A deadlock or serialization failure between concurrent writers: running the transaction again succeeds."""


# SQLSTATEs of a transaction that lost a race and may simply be run again (PostgreSQL).
_TRANSIENT_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_CORRUPT = ("file is not a database", "malformed", "disk image", "database corruption", "data corrupted", "disk i/o error")
RECOVER = "run 'vopstore fsck --rebuild' (with --url/--blobs for a store other than the local one) to rebuild it " \
          "from the blob store; the damaged file is moved aside, not deleted"


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver failures into one-line vopstore errors.

    Unreachable or refused: StoreUnavailableError; a corrupt database file: StoreUnavailableError
    saying how to recover; a read-only database asked to write: StoreUnavailableError saying so; a
    deadlock or serialization failure: TransientDatabaseError (the registry retries those).
    """
    from sqlalchemy.exc import DatabaseError, DataError as SaDataError, InterfaceError, OperationalError

    try:
        yield
    except (OperationalError, InterfaceError, DatabaseError) as exc:
        reason = " ".join(str(exc.orig or exc).split())[:200]
        lowered = reason.lower()
        if getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
            raise TransientDatabaseError(f"database {redact(url)}: a concurrent write won ({reason}); retry") from None
        if any(word in lowered for word in _CORRUPT):
            raise StoreUnavailableError(f"database {redact(url)} is corrupt or unreadable ({reason}); {RECOVER}") from None
        if "readonly database" in lowered or "read-only" in lowered:
            raise StoreUnavailableError(
                f"database {redact(url)} is read-only here ({reason}); reading works, writing needs a writable "
                "store folder (check its permissions, or VOPSTORE_HOME)") from None
        if isinstance(exc, SaDataError):  # e.g. a NUL character in a text field on PostgreSQL
            raise ConfigError(f"a value cannot be stored ({reason.split(' [SQL')[0]}); remove control characters "
                              "and keep fields within their limits") from None
        if not isinstance(exc, (OperationalError, InterfaceError)):
            raise  # integrity errors and the like: the caller's retry loop or a bug, not an outage
        where = ("check the file and its folder's permissions" if url.startswith(("sqlite", "/", "file:", "local"))
                 else "check the URL and that the server is running")
        raise StoreUnavailableError(f"database {redact(url)} is unavailable ({reason}); {where}") from None
