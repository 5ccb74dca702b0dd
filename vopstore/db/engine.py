"""Engines for SQLite (default) and PostgreSQL (psycopg 3), with errors mapped to vopstore's.

SQLite runs in WAL mode with a busy timeout, and a connection opened with the
execution option ``immediate=True`` starts its transaction with ``BEGIN
IMMEDIATE``: writers then queue on the database lock up front instead of
failing when a read transaction tries to become a write transaction.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from vopstore.errors import StoreUnavailableError

BUSY_TIMEOUT_S = 60


def make_engine(url: str):
    """Create an SQLAlchemy engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
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


def _setup_sqlite(engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event below issue BEGIN; pysqlite's own handling is lazy and
        # would turn concurrent writers into "database is locked" errors instead of waits.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":  # persistent: set once per file
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has nothing to hide that we can find
        return url.split("@")[-1]


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver connection failures into a one-line StoreUnavailableError."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        reason = " ".join(str(exc.orig or exc).split())[:200]
        raise StoreUnavailableError(
            f"database {redact(url)} is unavailable ({reason}); check the URL and that the server is running"
        ) from None
