"""Gallery commands: ``vopstore index build|ls|rm`` and ``vopstore search``.

torch, faiss and the backbone are imported only by the commands that embed or search.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vopstore.cli.app import app
from vopstore.cli.output import print_json, print_table
from vopstore.core import default_device
from vopstore.errors import ConfigError, FileMissingError
from vopstore.store.open import open_store

index_app = typer.Typer(help="Video galleries and their search indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")

JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")
BACKBONE = typer.Option(None, "--backbone", help="Hub name or folder of the CLIP backbone (default: the one the "
                        "task's version was trained on).")
DEVICE = typer.Option(None, "--device", help="Device for the backbone (default: cuda if available, else cpu).")


def video_files(spec: Path) -> list[Path]:
    """The videos SPEC names: every video file in a folder (sorted), or the paths listed in a text file
    (one per line; blank lines and '#' comments skipped; relative paths from the list's folder)."""
    from vopstore.gallery import VIDEO_SUFFIXES

    if spec.is_dir():
        files = sorted(p for p in spec.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise ConfigError(f"{spec}: no video files in this folder (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
        return files
    if not spec.is_file():
        raise FileMissingError(f"{spec}: no such folder or list file; pass a folder of videos or a text file "
                               "with one video path per line")
    try:
        lines = spec.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{spec}: not a text file; pass a folder of videos or a list with one path per line") from None
    files = [spec.parent / line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not files:
        raise ConfigError(f"{spec}: the list names no videos; put one video path per line")
    return files


def _retriever(refs: list[str], backbone: Optional[str], device: Optional[str]):
    """A Retriever on the local store with the exact versions ``refs`` name loaded; (retriever, infos)."""
    from vopstore.runtime.retriever import Retriever

    store = open_store()
    infos = [store.resolve(ref) for ref in refs]
    if backbone is None:
        names = sorted({info.backbone_name for info in infos})
        if len(names) > 1:
            raise ConfigError(f"the tasks were trained on different backbones ({', '.join(names)}); "
                              "index them in separate commands or pass --backbone")
        backbone = names[0]
    retriever = Retriever(backbone, device or default_device(), store=store)
    retriever.load_many([info.ref for info in infos])
    return retriever, infos


def _add_videos(galleries, name: str, spec: Optional[Path]) -> int:
    """Create the gallery or append the videos it lacks; return how many were added."""
    from vopstore.gallery.galleries import video_items

    if spec is None:
        if not galleries.exists(name):
            raise ConfigError(f"no gallery {galleries.label(name)}; pass --videos DIR|LIST.txt to create it")
        return 0
    items = video_items(video_files(spec))
    if not galleries.exists(name):
        galleries.create(name, dict(items))
        return len(items)
    current = galleries.videos(name)
    clash = [(vid, path) for vid, path in items if vid in current and current[vid] != path]
    if clash:
        vid, path = clash[0]
        raise ConfigError(f"video id {vid!r} ({path}) is already in gallery {galleries.label(name)} for "
                          f"{current[vid]}; ids are file stems: rename the file or remove the old one with "
                          f"'vopstore index rm {galleries.label(name)} --id {vid}'")
    new = {vid: path for vid, path in items if vid not in current}
    if new:
        galleries.add_videos(name, new)
    return len(new)


@index_app.command("build")
def index_build(name: str = typer.Argument(..., help="Gallery, [tenant/]name."),
                task: List[str] = typer.Option(..., "--task", "-t", help="Task ref T[@vN|@alias]; repeat for "
                                               "several tasks (each video is decoded once for all of them)."),
                videos: Optional[Path] = typer.Option(None, "--videos", help="A folder of videos or a text file "
                                                      "listing one path per line; creates the gallery or appends."),
                backbone: Optional[str] = BACKBONE, device: Optional[str] = DEVICE,
                kind: Optional[str] = typer.Option(None, "--kind", help="flat (exact, the default for a new index), "
                                                   "hnsw or ivf (approximate, for large galleries)."),
                batch_size: int = typer.Option(16, "--batch-size", help="Videos per forward."),
                no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
                as_json: bool = JSON) -> None:
    """Embed the videos of gallery NAME with each task's prompts and keep a search index per task version."""
    from vopstore.gallery import Galleries
    from vopstore.gallery.index import validate_kind

    if kind is not None:
        validate_kind(kind)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    galleries = Galleries()
    added = _add_videos(galleries, name, videos)
    if not galleries.videos(name):
        raise ConfigError(f"gallery {galleries.label(name)} has no videos; pass --videos DIR|LIST.txt")
    retriever, infos = _retriever(list(dict.fromkeys(task)), backbone, device)
    tasks = [f"{info.tenant}/{info.task}" for info in infos]
    results = galleries.build_many(retriever, name, tasks, kind=kind, progress=not no_progress and not as_json,
                                   batch_size=batch_size)
    if as_json:
        print_json({"gallery": galleries.label(name), "videos_added": added, "indexes": list(results.values())})
        return
    if added:
        typer.echo(f"{galleries.label(name)}: {added} video(s) added")
    for result in results.values():
        typer.echo(f"{result['gallery']}: {result['task']} {result['kind']} index, {result['rows']} video(s) "
                   f"(+{result['added']} embedded), {result['num_frames']} frames -> {result['digest'][:12]}")


@index_app.command("ls")
def index_ls(as_json: bool = JSON) -> None:
    """List galleries and their indexes."""
    from vopstore.gallery import Galleries

    galleries = Galleries().list()
    if as_json:
        print_json(galleries)
        return
    rows = []
    for gallery in galleries:
        if not gallery["indexes"]:
            rows.append((gallery["name"], gallery["videos"], "-", "", "", "", "", ""))
        for index in gallery["indexes"]:
            rows.append((gallery["name"], gallery["videos"], index["task"], index["kind"], index["rows"],
                         index["missing"], index["num_frames"], index["digest"][:12]))
    print_table(("gallery", "videos", "task", "kind", "rows", "missing", "frames", "index"), rows)


@index_app.command("rm")
def index_rm(name: str = typer.Argument(..., help="Gallery, [tenant/]name."),
             ids: List[str] = typer.Option([], "--id", help="A video id to remove (repeat for several)."),
             everything: bool = typer.Option(False, "--all", help="Delete the whole gallery and its indexes "
                                             "(video files are not touched).")) -> None:
    """Remove videos from gallery NAME and from every index of it (or, with --all, the gallery)."""
    from vopstore.gallery import Galleries

    galleries = Galleries()
    if everything == bool(ids):
        raise ConfigError("pass --id ID (repeatable) to remove videos, or --all to delete the gallery")
    if everything:
        galleries.delete(name)
        typer.echo(f"deleted gallery {galleries.label(name)}")
        return
    removed = galleries.remove_videos(name, ids)
    typer.echo(f"removed {len(removed)} video(s) from {galleries.label(name)}")


@app.command()
def search(task: str = typer.Argument(..., help="Task ref T[@vN|@alias] whose prompts encode the text."),
           text: str = typer.Argument(..., help="The query."),
           gallery: str = typer.Option(..., "--gallery", "-g", help="Gallery to search, [tenant/]name."),
           k: int = typer.Option(10, "-k", help="How many videos to return."),
           backbone: Optional[str] = BACKBONE, device: Optional[str] = DEVICE, as_json: bool = JSON) -> None:
    """Top-K videos of a gallery for TEXT, encoded with TASK's prompts."""
    from vopstore.gallery import Galleries

    if k < 1:
        raise ConfigError(f"-k must be at least 1, got {k}")
    galleries = Galleries()
    paths = galleries.videos(gallery)  # an unknown gallery fails before the backbone loads
    retriever, (info,) = _retriever([task], backbone, device)
    hits = retriever.search([text], task=f"{info.tenant}/{info.task}", gallery=gallery, k=k,
                            galleries=galleries)[0]
    rows = [{"rank": rank, "id": vid, "score": score, "path": str(paths.get(vid, ""))}
            for rank, (vid, score) in enumerate(hits, 1)]
    if as_json:
        print_json({"task": info.ref, "gallery": galleries.label(gallery), "query": text, "results": rows})
        return
    print_table(("rank", "id", "score", "path"), ((r["rank"], r["id"], f"{r['score']:.4f}", r["path"]) for r in rows),
                title=f"{info.ref} on {galleries.label(gallery)}")
