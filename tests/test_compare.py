"""`vopstore compare`: methods trained on one synthetic split, resumable after a crash, re-used, plotted."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from vopstore.trainer import compare as comparing

QUICK = ("--task", "cmp", "--synthetic", "--quick", "--methods", "vop,vop-f")
REAL_TRAIN = comparing.train_isolated


def _recording(calls: list, crash_on: str | None = None):
    """A stand-in for ``train_isolated`` that records each method and delegates (or crashes on one)."""
    def train(task, data, cfg, **kwargs):
        calls.append(cfg.method)
        if cfg.method == crash_on:
            raise RuntimeError(f"simulated crash while training {crash_on}")
        return REAL_TRAIN(task, data, cfg, **kwargs)

    return train


def _demo_backbone_params() -> int:
    """Independent count: the cached demo CLIP loaded by transformers itself."""
    from transformers import CLIPModel

    from vopstore.home import home_dir
    from vopstore.trainer.demo import DemoConfig
    from vopstore.trainer.pretrain import demo_backbone_dir

    model = CLIPModel.from_pretrained(demo_backbone_dir(home_dir(), DemoConfig.quick().pretrain))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_compare_resumes_after_a_crash_then_reuses_every_version(run, monkeypatch, tmp_path):
    from vopstore.store import open_store

    calls: list[str] = []
    monkeypatch.setattr(comparing, "train_isolated", _recording(calls, crash_on="vop-f"))
    code, _, _ = run("compare", *QUICK, "--json")
    assert isinstance(code, RuntimeError) and calls == ["vop", "vop-f"]
    store = open_store()
    assert [v.method for v in store.list_versions("cmp")] == ["vop"]

    calls.clear()
    monkeypatch.setattr(comparing, "train_isolated", _recording(calls))
    plot = tmp_path / "compare.png"
    code, out, _ = run("compare", *QUICK, "--json", "--plot", plot)
    assert code == 0 and calls == ["vop-f"]  # vop was done before the crash
    result = json.loads(out)
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["vop", "vop-f"] and rows["vop"]["reused"] and not rows["vop-f"]["reused"]
    assert result["backbone_params"] == _demo_backbone_params()
    assert set(result["zero_shot"]) >= {"t2v", "v2t"}
    versions = {v.method: v for v in store.list_versions("cmp")}
    assert set(versions) == {"vop", "vop-f"}
    for method, row in rows.items():
        info = versions[method]
        assert row["ref"] == info.ref and row["params"] == info.params and row["metrics"] == info.metrics
        assert row["stored_bytes"] == info.size == len(Path(store.fetch(info)).read_bytes())
        assert row["share"] == pytest.approx(info.params / result["backbone_params"])
        assert row["seconds"] > 0 and row["peak_memory"] > 0 and row["memory_kind"] == "rss"
    with Image.open(plot) as image:
        image.verify()
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width >= 400 and image.height >= 300
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # something was drawn on the white canvas

    calls.clear()
    code, out, _ = run("compare", *QUICK, "--json")
    again = json.loads(out)
    assert code == 0 and calls == []  # nothing trained
    assert [row["ref"] for row in again["rows"]] == [rows["vop"]["ref"], rows["vop-f"]["ref"]]
    assert all(row["reused"] for row in again["rows"]) and len(store.list_versions("cmp")) == 2
    # the cost columns of a re-used version are the ones measured when it was trained
    assert [(r["seconds"], r["peak_memory"]) for r in again["rows"]] == [
        (rows[m]["seconds"], rows[m]["peak_memory"]) for m in ("vop", "vop-f")]

    monkeypatch.setenv("COLUMNS", "160")  # rich draws for an 80-column terminal otherwise, eliding names
    code, out, _ = run("compare", *QUICK)  # the table for people
    assert code == 0 and calls == []
    table = out.splitlines()
    for name in ("zero-shot", "vop", "vop-f"):
        assert any(line.split()[:1] == [name] for line in table), name
    assert f"vop-f: {rows['vop-f']['ref']} (re-used)" in table


@pytest.mark.parametrize("source", [("--synthetic",), ("--data", "missing-dataset")])
def test_an_unknown_method_is_one_line_before_anything_is_read_or_registered(run, vopstore_home, source):
    from vopstore.store import open_store

    code, out, err = run("compare", "--task", "cmp", *source, "--methods", "vop,nope", "--quick")
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1
    assert "'nope'" in lines[0] and "vop-f" in lines[0]  # names the bad one and lists the choices
    assert not (vopstore_home / "cache").exists() and not (vopstore_home / "runs").exists()
    assert open_store().list_tasks() == []


@pytest.mark.parametrize("args, message", [
    (("--methods", "vop", "--synthetic", "--data", "d"), "either --data DIR or --synthetic"),
    (("--methods", "vop"), "either --data DIR or --synthetic"),
    (("--methods", "vop,vop", "--synthetic"), "more than once"),
    (("--methods", " , ", "--synthetic"), "--methods is empty"),
    (("--methods", "vop", "--synthetic", "--preset", "lsmdc"), "apply to --data"),
])
def test_bad_arguments_are_one_line_errors(run, args, message):
    code, _, err = run("compare", "--task", "cmp", *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_a_recorded_version_is_reused_only_with_the_same_bytes_and_training_config(tiny_backbone, tmp_path):
    from vopstore.prompts import build_method
    from vopstore.store import open_store
    from vopstore.trainer.config import TrainConfig

    path = tmp_path / "prompts.safetensors"
    build_method("vop", tiny_backbone, seed=1).save(path, tiny_backbone)
    cfg = TrainConfig(method="vop", backbone="tiny")
    store = open_store()
    info = store.add("t", path, training_config={**cfg.to_dict(), "steps": 3})
    entry = {"ref": info.ref, "digest": info.digest, "config_digest": cfg.digest()}
    assert comparing.reusable_version(store, entry, cfg).ref == info.ref
    other = replace(cfg, lr=0.5)
    assert comparing.reusable_version(store, entry, other) is None  # the compare now trains differently
    assert comparing.reusable_version(store, {**entry, "config_digest": other.digest()}, other) is None
    assert comparing.reusable_version(store, {**entry, "digest": "0" * 64}, cfg) is None  # other bytes
    assert comparing.reusable_version(store, {**entry, "ref": "local/t@v9"}, cfg) is None  # removed since
    assert comparing.reusable_version(store, None, cfg) is None


def test_the_state_is_shared_by_methods_and_keyed_by_task_data_and_config(tmp_path, monkeypatch):
    from vopstore.trainer.config import TrainConfig

    base = TrainConfig(method="vop", backbone="tiny")
    path = comparing.state_path("t", tmp_path, base)
    assert comparing.state_path("t", tmp_path, replace(base, method="vop-f")) == path
    monkeypatch.chdir(tmp_path)
    assert comparing.state_path("t", ".", base) == path  # the folder, however it is spelled
    others = {comparing.state_path("u", tmp_path, base), comparing.state_path("t", tmp_path / "x", base),
              comparing.state_path("t", tmp_path, replace(base, seed=1)),
              comparing.state_path("t", tmp_path, replace(base, epochs=2))}
    assert path not in others and len(others) == 4


def _comparison(task: str, zero_shot: float, points: dict[str, tuple[int, float]]):
    rows = [comparing.MethodRow(method=name, ref=f"local/{task}@v{i}", params=size // 4, share=0.001,
                                stored_bytes=size, metrics={"t2v": {"R@1": r1}}, seconds=1.0, peak_memory=1,
                                memory_kind="rss", resumed_from=0, reused=False)
            for i, (name, (size, r1)) in enumerate(points.items(), 1)]
    return comparing.Comparison(task, "data", "clip", 10**8, {"t2v": {"R@1": zero_shot}}, rows)


def test_the_plot_has_one_panel_per_task(tmp_path):
    from vopstore.trainer.plot import plot_storage

    one = _comparison("msrvtt", 30.0, {"vop": (400_000, 44.0), "full": (600_000_000, 45.0)})
    two = _comparison("lsmdc", 12.0, {"vop-f": (500_000, 20.0)})
    sizes = []
    for name, comparisons in (("one.png", [one]), ("two.png", [one, two])):
        plot_storage(comparisons, tmp_path / name)
        with Image.open(tmp_path / name) as image:
            sizes.append(image.size)
    assert sizes[1][0] == pytest.approx(2 * sizes[0][0], rel=0.02) and sizes[1][1] == sizes[0][1]
    with pytest.raises(ValueError):
        plot_storage([], tmp_path / "none.png")


@pytest.mark.parametrize("count, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                         (600 * 1024**2, "600.0 MiB"), (5 * 1024**3, "5.0 GiB")])
def test_human_bytes(count, text):
    from vopstore.cli.compare_cmd import human_bytes

    assert human_bytes(count) == text
