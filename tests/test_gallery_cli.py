"""`vopstore index build|ls|rm` and `vopstore search`, in-process: a round trip equal to the library,
and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.cli import run_cli
from tests.test_gallery import TEXTS, assert_hits, gallery_clips, oracle, publish, store  # noqa: F401
from tests.test_runtime_mixed import _one_thread  # noqa: F401


def run(capsys, *argv) -> tuple[int, str, str]:
    code, out, err = run_cli(capsys, *argv)
    # keep only our own lines: transformers draws a weight-loading bar on stderr when a backbone loads
    return code, out, "".join(line + "\n" for line in err.splitlines() if line.startswith("error: "))


def test_build_search_ls_rm_round_trip(tiny_backbone, tiny_backbone_dir, store, gallery_clips, tmp_path, capsys):
    from vopstore import Retriever
    from vopstore.gallery import Galleries

    publish(store, tiny_backbone, tmp_path, "acme/a", seed=0)
    publish(store, tiny_backbone, tmp_path, "acme/b", "vop-f", seed=1)
    folder = gallery_clips[0].parent
    bb = ("--backbone", tiny_backbone_dir)
    code, out, err = run(capsys, "index", "build", "acme/clips", "--task", "acme/a", "--task", "acme/b@v1",
                         "--videos", folder, *bb, "--no-progress", "--json")
    assert code == 0, err
    built = json.loads(out)
    assert built["videos_added"] == 10 and {i["task"]: i["rows"] for i in built["indexes"]} == \
        {"acme/a@v1": 10, "acme/b@v1": 10}

    code, out, err = run(capsys, "search", "acme/b", TEXTS[0], "--gallery", "acme/clips", "-k", "4", *bb, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["task"] == "acme/b@v1" and [r["rank"] for r in result["results"]] == [1, 2, 3, 4]
    retriever = Retriever(tiny_backbone, store=store)
    retriever.load_many(["acme/a", "acme/b"])
    assert_hits([[(r["id"], r["score"]) for r in result["results"]]],
                oracle(retriever, TEXTS[:1], ["acme/b"], gallery_clips, 4))
    assert result["results"][0]["path"] == str((folder / f"{result['results'][0]['id']}.mp4").resolve())

    # a list file appends only what is new; the same stem from another file is refused
    listing = tmp_path / "more.txt"
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "w00.mp4").write_bytes(gallery_clips[0].read_bytes())
    listing.write_text(f"# more clips\n{gallery_clips[0]}\n\nextra/w00.mp4\n")
    code, out, err = run(capsys, "index", "build", "acme/clips", "-t", "acme/a", "--videos", listing, *bb,
                         "--no-progress")
    assert code == 0, err
    assert "1 video(s) added" in out and "acme/a@v1 flat index, 11 video(s) (+1 embedded)" in out

    code, out, err = run(capsys, "index", "ls", "--json")
    [gallery] = json.loads(out)
    assert gallery["name"] == "acme/clips" and gallery["videos"] == 11
    assert {(i["task"], i["rows"], i["missing"]) for i in gallery["indexes"]} == {("acme/a@v1", 11, 0),
                                                                                ("acme/b@v1", 10, 1)}
    code, out, err = run(capsys, "index", "ls")
    assert code == 0 and "acme/clips" in out and "acme/b@v1" in out

    code, out, err = run(capsys, "index", "rm", "acme/clips", "--id", "w00", "--id", "v03")
    assert code == 0 and "removed 2 video(s) from acme/clips" in out
    code, out, err = run(capsys, "search", "acme/a", TEXTS[1], "-g", "acme/clips", "-k", "20", *bb, "--json")
    ids = [r["id"] for r in json.loads(out)["results"]]
    assert len(ids) == 9 and "w00" not in ids and "v03" not in ids

    code, out, err = run(capsys, "search", "acme/a", TEXTS[1], "-g", "acme/clips", "-k", "3", *bb)
    assert code == 0 and "acme/a@v1 on acme/clips" in out

    code, out, err = run(capsys, "index", "rm", "acme/clips", "--all")
    assert code == 0 and Galleries().list() == []


def test_errors_are_one_line(tiny_backbone, tiny_backbone_dir, store, gallery_clips, tmp_path, capsys):
    publish(store, tiny_backbone, tmp_path, "acme/a", seed=0)
    bb = ("--backbone", tiny_backbone_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (("search", "acme/a", "x", "-g", "acme/nope", *bb), "no gallery acme/nope; create it"),
        (("index", "build", "acme/clips", "-t", "acme/a", "--videos", empty, *bb), "no video files in this folder"),
        (("index", "build", "acme/clips", "-t", "acme/a", *bb), "pass --videos"),
        (("index", "build", "acme/clips", "-t", "acme/a", "--videos", tmp_path / "none", *bb), "no such folder"),
        (("index", "build", "acme/clips", "-t", "acme/a", "--videos", empty, "--kind", "lsh"), "unknown index kind"),
        (("index", "rm", "acme/nope", "--id", "x"), "no gallery acme/nope"),
        (("index", "rm", "acme/nope"), "pass --id"),
    ]
    for argv, expected in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, (argv, err)

    assert run(capsys, "index", "build", "acme/clips", "-t", "acme/a", "--videos", gallery_clips[0].parent,
               *bb, "--no-progress")[0] == 0
    code, _, err = run(capsys, "search", "acme/a", "x", "-g", "acme/clips", "-k", "0", *bb)
    assert code == 1 and "-k must be at least 1" in err
    # a new version: searching it names the exact build command, and that command fixes it
    v2 = publish(store, tiny_backbone, tmp_path, "acme/a", seed=3)
    code, _, err = run(capsys, "search", "acme/a", "x", "-g", "acme/clips", *bb)
    assert code == 1 and err.count("\n") == 1
    assert f"gallery acme/clips has no index for acme/a@v2 ({v2.digest[:12]}" in err
    assert "build it: vopstore index build acme/clips --task acme/a@v2" in err
    assert run(capsys, "index", "build", "acme/clips", "--task", "acme/a@v2", *bb, "--no-progress")[0] == 0
    code, out, err = run(capsys, "search", "acme/a", "x", "-g", "acme/clips", "-k", "2", *bb, "--json")
    assert code == 0 and json.loads(out)["task"] == "acme/a@v2"
