"""Registry administration: ``registry serve``, ``tenant create|ls``, ``token create|ls|revoke``, ``log``.

Tenant commands need the database's credentials (``--db``, default the local
store). Token commands run there too, or over HTTP with an admin token of the
tenant (``--remote NAME``). Nothing here imports FastAPI until ``serve`` runs.
"""

from __future__ import annotations

import re
from typing import Optional

import typer

from vopstore.cli.app import app
from vopstore.cli.output import print_json, print_table
from vopstore.errors import ConfigError
from vopstore.server import ServerSettings, serve as run_server
from vopstore.store.open import open_remote, open_store

JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")
DB = typer.Option(None, "--db", help="Database URL or store folder (default: the local store).")
BLOBS = typer.Option(None, "--blobs", help="Blob store URL (with a database URL).")
REMOTE = typer.Option(None, "--remote", "-r", help="A registry remote from config.toml, used with its admin token.")

registry_app = typer.Typer(help="Run the multi-tenant registry server.", no_args_is_help=True)
tenant_app = typer.Typer(help="Create and list tenants (needs the database's credentials).", no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
app.add_typer(tenant_app, name="tenant")
app.add_typer(token_app, name="token")

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b?|b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20, "g": 1e9,
               "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_size(text: str) -> int:
    """``10GB``, ``512MiB``, ``1000`` -> bytes."""
    match = _SIZE.fullmatch(text.strip())
    unit = (match.group(2) or "").lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(f"size {text!r} is not understood; use e.g. 10GB, 512MiB or a number of bytes")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _direct(db: Optional[str], blobs: Optional[str]):
    return open_store(db, blobs=blobs)


def _tokens_store(db: Optional[str], blobs: Optional[str], remote: Optional[str]):
    if remote is not None:
        if db is not None:
            raise ConfigError("pass either --remote (over HTTP, with an admin token) or --db, not both")
        return open_remote(remote)
    return _direct(db, blobs)


@registry_app.command("serve")
def serve(db: str = typer.Option(..., "--db", help="Database URL (postgresql+psycopg://... or sqlite:///...) "
                                 "or a store folder."),
          blobs: Optional[str] = BLOBS,
          host: str = typer.Option("127.0.0.1", "--host", help="Listen address (put a TLS proxy in front)."),
          port: int = typer.Option(8700, "--port"),
          workers: int = typer.Option(1, "--workers", help="Worker processes (more than one needs PostgreSQL)."),
          max_upload: str = typer.Option("256MiB", "--max-upload", help="Largest accepted upload."),
          max_uploads: int = typer.Option(4, "--max-concurrent-uploads", help="Uploads a worker takes at once."),
          rate: float = typer.Option(200.0, "--rate", help="Requests per second per token and worker (0: off)."),
          burst: float = typer.Option(400.0, "--burst", help="Requests a token may make at once."),
          presign: bool = typer.Option(False, "--presign", help="Serve S3 downloads as presigned URLs."),
          log_level: str = typer.Option("info", "--log-level")) -> None:
    """Serve the registry: it holds the database and bucket credentials, clients hold tokens."""
    settings = ServerSettings(db=db, blobs=blobs, max_upload_bytes=parse_size(max_upload), rate=rate, burst=burst,
                              presign=presign, max_concurrent_uploads=max_uploads)
    run_server(settings, host=host, port=port, workers=workers, log_level=log_level)


@tenant_app.command("create")
def tenant_create(name: str, quota: Optional[str] = typer.Option(None, "--quota", help="Stored bytes, e.g. 10GB."),
                  db: Optional[str] = DB, blobs: Optional[str] = BLOBS) -> None:
    """Create tenant NAME (or set its quota)."""
    _direct(db, blobs).create_tenant(name, parse_size(quota) if quota else None)
    typer.echo(f"tenant {name}" + (f" (quota {quota})" if quota else ""))


@tenant_app.command("ls")
def tenant_ls(db: Optional[str] = DB, blobs: Optional[str] = BLOBS, as_json: bool = JSON) -> None:
    """List tenants with their tasks, stored bytes and quota."""
    rows = _direct(db, blobs).list_tenants()
    if as_json:
        print_json(rows)
        return
    print_table(("tenant", "tasks", "stored bytes", "quota", "created"),
                ((r["name"], r["tasks"], r["stored_bytes"], r["quota_bytes"] or "-", r["created_at"][:10]) for r in rows))


@token_app.command("create")
def token_create(tenant: str = typer.Option(..., "--tenant"),
                 scope: str = typer.Option("read", "--scope", help="read, write or admin."),
                 expires: Optional[str] = typer.Option(None, "--expires", help="e.g. 30d, 12h (default: never)."),
                 name: str = typer.Option("default", "--name"),
                 db: Optional[str] = DB, blobs: Optional[str] = BLOBS, remote: Optional[str] = REMOTE) -> None:
    """Create a token and print it: the only time it is shown (only its hash is stored)."""
    from vopstore.store.tenants import check_scope, parse_duration  # SQLAlchemy: only when a token is made

    check_scope(scope)
    seconds = parse_duration(expires)
    typer.echo(_tokens_store(db, blobs, remote).create_token(tenant, name, scope, seconds))


@token_app.command("ls")
def token_ls(tenant: str = typer.Option(..., "--tenant"), db: Optional[str] = DB, blobs: Optional[str] = BLOBS,
             remote: Optional[str] = REMOTE, as_json: bool = JSON) -> None:
    """List a tenant's tokens: name, scope, state, created, expires, last used (never the token)."""
    rows = _tokens_store(db, blobs, remote).list_tokens(tenant)
    if as_json:
        print_json(rows)
        return
    print_table(("name", "scope", "state", "created", "expires", "last used"),
                ((r["name"], r["scope"], r["state"], _day(r["created_at"]), _day(r["expires_at"]) or "never",
                  _day(r["last_used_at"]) or "-") for r in rows))


@token_app.command("revoke")
def token_revoke(name: str, tenant: str = typer.Option(..., "--tenant"), db: Optional[str] = DB,
                 blobs: Optional[str] = BLOBS, remote: Optional[str] = REMOTE) -> None:
    """Revoke a tenant's live token NAME; it fails from its next request on."""
    _tokens_store(db, blobs, remote).revoke_token(tenant, name)
    typer.echo(f"revoked token {name} of tenant {tenant}")


@app.command("log")
def log(task: str, remote: Optional[str] = REMOTE, limit: Optional[int] = typer.Option(None, "--limit"),
        as_json: bool = JSON) -> None:
    """The history of TASK: adds, pushes, alias moves, removals; who and when."""
    store = open_remote(remote) if remote else open_store()
    entries = store.log(task, limit=limit)
    if as_json:
        print_json(entries)
        return
    print_table(("when", "action", "who", "old", "new"),
                ((e["at"][:19], e["action"], e["actor"], _value(e["old"]), _value(e["new"])) for e in entries))


def _day(iso: Optional[str]) -> Optional[str]:
    return iso[:16].replace("T", " ") if iso else None


def _value(value: Optional[dict]) -> str:
    if not value:
        return ""
    if "version" in value:
        where = f"v{value['version']} ({value['digest'][:10]})"
        return f"{value['alias']} -> {where}" if "alias" in value else where
    return " ".join(f"{k}={v}" for k, v in sorted(value.items()))
