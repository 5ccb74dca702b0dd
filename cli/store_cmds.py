"""Store commands: add, ls, show, tag, untag, rm, export, verify, gc, fsck, db, remote, push, pull.

Each command parses its arguments and calls vopstore.store; nothing here imports
torch, and SQLAlchemy is imported only when a command runs. ``vopstore ls`` loads this
module, so the modules only other commands need (recovery, remotes, push/pull) are
imported inside those commands: ``ls`` must start fast.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from vopstore.cli.app import app
from vopstore.cli.output import fail, print_json, print_table
from vopstore.core import atomic_write_bytes
from vopstore.db import current_revision, make_engine, redact, translate_errors, upgrade
from vopstore.errors import ConfigError, FileMissingError
from vopstore.home import local_store_dir
from vopstore.progress import ProgressBar
from vopstore.store.open import open_reader, open_remote, open_store

JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")
REMOTE = typer.Option("origin", "--remote", "-r", help="Name of a remote in config.toml.")

db_app = typer.Typer(help="Manage a store's database schema.", no_args_is_help=True)
remote_app = typer.Typer(help="Manage named remotes in config.toml.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(remote_app, name="remote")


ON = typer.Option(None, "--remote", "-r", help="Run against this remote from config.toml (e.g. a registry "
                  "server) instead of the local store.")


def _store(on: Optional[str] = None):
    return open_remote(on) if on else open_store()


def _reader(on: Optional[str] = None):
    """The store for a command that only reads: the local one is read with sqlite3, without SQLAlchemy."""
    return open_remote(on) if on else open_reader()


def _read_json_file(path: Optional[Path], what: str) -> Optional[dict]:
    if path is None:
        return None
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a {what} file; pass a JSON file")
    if not path.is_file():
        raise FileMissingError(f"{path}: no such {what} file; pass a JSON file")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {what} file is not valid JSON ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: {what} file nests too deeply to read; keep it to a few levels") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {what} file must hold a JSON object ({{...}}), not {type(value).__name__}")
    return value


def _version_rows(infos):
    for v in infos:
        metrics = " ".join(f"{k}={v.metrics[k]}" for k in sorted(v.metrics or {})[:4])
        created = v.created_at.strftime("%Y-%m-%d") if v.created_at else ""
        yield (v.ref, v.digest[:10], v.method, v.params, created, ",".join(v.aliases), metrics)


_VERSION_COLUMNS = ("ref", "digest", "method", "params", "created", "aliases", "metrics")


@app.command()
def add(task: str, file: Path, metrics: Optional[Path] = typer.Option(None, "--metrics", help="JSON file of metrics."),
        message: Optional[str] = typer.Option(None, "--message", "-m"), on: Optional[str] = ON,
        as_json: bool = JSON) -> None:
    """Validate FILE and register it as the next version of TASK; print its ref."""
    info = _store(on).add(task, file, metrics=_read_json_file(metrics, "metrics"), message=message)
    print_json(info.to_dict()) if as_json else typer.echo(info.ref)


@app.command("ls")
def ls(task: Optional[str] = typer.Argument(None), on: Optional[str] = ON, as_json: bool = JSON) -> None:
    """List tasks, or the versions of TASK."""
    store = _reader(on)
    if task is not None:
        infos = store.list_versions(task)
        print_json([i.to_dict() for i in infos]) if as_json else print_table(_VERSION_COLUMNS, _version_rows(infos))
        return
    tasks = store.list_tasks()
    if as_json:
        print_json([t.to_dict() for t in tasks])
        return
    rows = ((t.ref, t.versions, f"v{t.latest}" if t.latest else "-",
             " ".join(f"{a}=v{n}" for a, n in sorted(t.aliases.items()))) for t in tasks)
    print_table(("task", "versions", "latest", "aliases"), rows)


@app.command()
def show(ref: str, on: Optional[str] = ON, as_json: bool = JSON) -> None:
    """Show one version (REF is [tenant/]task[@vN|@alias])."""
    info = _reader(on).resolve(ref)
    data = info.to_dict()
    if as_json:
        print_json(data)
        return
    for key in ("ref", "digest", "size", "method", "params", "dtype", "backbone_name", "backbone_fingerprint",
                "aliases", "metrics", "training_config", "method_config", "message", "parent", "created_at",
                "created_by"):
        value = data[key]
        shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
        typer.echo(f"{key:21} {'' if shown is None else shown}")


@app.command()
def tag(ref: str, alias: str, on: Optional[str] = ON) -> None:
    """Point ALIAS of REF's task at the version REF names."""
    info = _store(on).tag(ref, alias)
    typer.echo(f"{info.ref.rsplit('@', 1)[0]}@{alias} -> {info.ref}")


@app.command()
def untag(task: str, alias: str, on: Optional[str] = ON) -> None:
    """Remove ALIAS from TASK."""
    _store(on).untag(task, alias)
    typer.echo(f"removed alias {alias} from {task}")


@app.command("rm")
def rm(ref: str, force: bool = typer.Option(False, "--force", help="Also drop aliases pointing to it."),
       on: Optional[str] = ON) -> None:
    """Remove a version (its blob goes at the next gc)."""
    info = _store(on).remove(ref, force=force)
    dropped = f" and its alias(es) {', '.join(info.aliases)}" if info.aliases else ""
    typer.echo(f"removed {info.ref}{dropped}")


@app.command()
def export(ref: str, file: Path) -> None:
    """Write the verified prompt-set file of REF to FILE (into a folder as TASK-vN.safetensors)."""
    store = _store()
    info = store.resolve(ref)
    if file.is_dir():
        file = file / f"{info.task}-v{info.number}.safetensors"
    _refuse_inside_store(file)
    try:
        data = store.fetch(info).read_bytes()
    except PermissionError:  # a read-only home: the cache cannot be filled, the blob store can still be read
        data = store.read_blob(info)
    atomic_write_bytes(file, data)
    typer.echo(f"{info.ref} -> {file}")


def _refuse_inside_store(target: Path) -> None:
    """An export must never overwrite the store's own files (its database, its blobs)."""
    store_dir = local_store_dir().resolve()
    if target.resolve().is_relative_to(store_dir):
        raise ConfigError(f"{target}: refusing to export into the store's own folder {store_dir}; "
                          "choose a path outside it")


@app.command()
def verify(ref: Optional[str] = typer.Argument(None), on: Optional[str] = ON, as_json: bool = JSON) -> None:
    """Re-hash the blobs of REF (or of every version); exit 1 if any is missing or corrupt."""
    problems = _store(on).verify(ref)
    if as_json:
        print_json({"ok": not problems, "problems": problems})
    else:
        for line in problems:
            typer.echo(line)
    if problems:
        fail(f"{len(problems)} version(s) failed verification; pull them again from a remote or remove them")
    if not as_json:
        typer.echo("ok")


@app.command()
def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be removed."),
       grace: float = typer.Option(3600.0, "--grace", help="Keep blobs touched in the last GRACE seconds."),
       force: bool = typer.Option(False, "--force", help="Allow deleting more than half of the blobs."),
       on: Optional[str] = ON) -> None:
    """Delete blobs that no version references.

    A blob folder or bucket prefix belongs to one database: blobs there that this
    database does not know are deleted too, so never share one between stores.
    """
    count = _store(on).gc(grace_s=grace, dry_run=dry_run, force=force)
    typer.echo(f"{'would remove' if dry_run else 'removed'} {count} blob(s)")


@app.command()
def fsck(rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the database from the blob store's records."),
         url: Optional[str] = typer.Option(None, "--url", help="Store or database URL (default: the local store)."),
         blobs: Optional[str] = typer.Option(None, "--blobs", help="Blob store URL, with a database URL."),
         as_json: bool = JSON) -> None:
    """Compare the database with the blob store's manifests; with --rebuild, restore a lost database from them."""
    from vopstore.store.recovery import check_store, rebuild_store

    if not rebuild:
        problems = check_store(url, blobs=blobs)
        if as_json:
            print_json({"ok": not problems, "problems": problems})
        for line in [] if as_json else problems:
            typer.echo(line)
        if problems:
            fail(f"{len(problems)} problem(s); 'vopstore fsck --rebuild' restores the database from the blob store")
        if not as_json:
            typer.echo("ok")
        return
    report = rebuild_store(url, blobs=blobs)
    if as_json:
        print_json(report.to_dict())
    else:
        if report.moved_aside:
            typer.echo(f"moved the old database aside to {report.moved_aside}")
        for line in [*(f"restored {r}" for r in report.restored), *(f"removed {r}" for r in report.removed),
                     *report.aliases, *(f"recorded {r}" for r in report.recorded), *report.problems]:
            typer.echo(line)
        typer.echo(f"rebuilt {report.store}: {len(report.restored)} version(s) restored, {len(report.removed)} "
                   f"removed, {len(report.aliases)} alias(es) set; store id {report.store_id}")
    if report.problems:
        fail(f"{len(report.problems)} record(s) could not be restored (listed above)")


@db_app.command("upgrade")
def db_upgrade(url: Optional[str] = typer.Option(None, "--url", help="Database URL (default: the local store).")) -> None:
    """Upgrade a store's database to the newest schema."""
    if url is None:
        local_store_dir().mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{local_store_dir() / 'store.db'}"
    engine = make_engine(url)
    with translate_errors(redact(url)):
        upgrade(engine)
        typer.echo(f"{redact(url)} is at revision {current_revision(engine)}")


@remote_app.command("add")
def remote_add(name: str, url: str, blobs: Optional[str] = typer.Option(None, "--blobs", help="Blob store URL."),
               token: Optional[str] = typer.Option(None, "--token", help="API token of an https:// registry; "
                                                   "'-' reads it from stdin (kept out of the process list).")) -> None:
    """Add (or replace) remote NAME in config.toml (written with mode 0600)."""
    from vopstore.remotes import add_remote

    if token == "-":
        token = sys.stdin.readline().strip()
    remote = add_remote(name, url, blobs, token=token or None)
    typer.echo(f"remote {remote.name} -> {remote.url}" + (f" (blobs {remote.blobs})" if remote.blobs else ""))


@remote_app.command("ls")
def remote_ls(as_json: bool = JSON) -> None:
    """List the remotes in config.toml."""
    from vopstore.remotes import load_config

    remotes = sorted(load_config().remotes.values(), key=lambda r: r.name)
    if as_json:
        print_json([{"name": r.name, "url": r.url, "blobs": r.blobs} for r in remotes])
        return
    print_table(("name", "url", "blobs"), ((r.name, r.url, r.blobs) for r in remotes))


@app.command()
def push(ref: str, remote: str = REMOTE,
         force: bool = typer.Option(False, "--force", help="move an alias the remote points elsewhere")) -> None:
    """Copy a version from the local store to a remote (with REF@alias, the alias too)."""
    from vopstore.store.sync import push as push_version

    with _transfer_bar(f"push {ref}") as progress:
        info = push_version(_store(), open_remote(remote), ref, force=force, progress=progress)
    typer.echo(f"pushed {info.ref} to {remote}")


@app.command()
def pull(ref: str, remote: str = REMOTE) -> None:
    """Copy a version from a remote into the local store and cache."""
    from vopstore.store.sync import pull as pull_version

    with _transfer_bar(f"pull {ref}") as progress:
        info = pull_version(open_remote(remote), _store(), ref, progress=progress)
    typer.echo(f"pulled {info.ref} from {remote}")


@contextmanager
def _transfer_bar(label: str):
    """A byte progress bar on stderr when it is a terminal (an interrupted transfer resumes where it stopped)."""
    if not sys.stderr.isatty():
        yield None
        return
    with ProgressBar(label, unit="bytes", transient=True) as bar:
        yield bar.update
