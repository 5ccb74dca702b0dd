"""`vopstore demo`: the whole loop through the real CLI entry, its intervals, and the promise it makes."""

from __future__ import annotations

import json

import pytest

from vopstore.cli.app import main

KEYS = {"R@1", "R@5", "R@10", "MdR", "MnR"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_demo_compares_three_models_registers_two_and_caches_the_backbone(capsys, vopstore_home):
    from vopstore.store import open_store
    from vopstore.trainer.demo import DemoConfig
    from vopstore.trainer.pretrain import MARKER, demo_backbone_dir

    assert main(["demo", "--quick", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert set(out) == {"zero-shot", "vop", "vop-f", "test_queries"}
    assert out["test_queries"] == DemoConfig.quick().n_test
    for name in ("zero-shot", "vop", "vop-f"):
        entry = out[name]
        for direction in ("t2v", "v2t"):
            assert set(entry[direction]) == KEYS, name
            low, high = entry["ci95"][direction]["R@1"]
            assert 0 <= low <= entry[direction]["R@1"] <= high <= 100, (name, direction)
    for name in ("vop", "vop-f"):
        gain = out[name]["gain"]["t2v"]
        assert gain["R@1"] == pytest.approx(out[name]["t2v"]["R@1"] - out["zero-shot"]["t2v"]["R@1"])
        assert gain["ci95"][0] <= gain["R@1"] <= gain["ci95"][1]
    assert "pretraining" in captured.err and "ordering" in captured.err and "paired 95% interval" in captured.err
    store = open_store()
    versions = {v.method: v for v in store.list_versions("demo")}
    assert set(versions) == {"vop", "vop-f"}
    # the intervals come from the registered prompts, scored again: the same metrics as at registration
    assert versions["vop-f"].ref == out["vop-f"]["ref"] and versions["vop-f"].metrics["t2v"] == out["vop-f"]["t2v"]
    assert versions["vop"].metrics["v2t"] == out["vop"]["v2t"]

    marker = demo_backbone_dir(vopstore_home, DemoConfig.quick().pretrain) / MARKER
    stamp = marker.stat().st_mtime_ns
    assert main(["demo", "--quick"]) == 0  # second run: cached backbone and task, the table for people
    captured = capsys.readouterr()
    assert "cached" in captured.err and "pretraining" not in captured.err and marker.stat().st_mtime_ns == stamp
    assert "R@1 95% CI" in captured.out and f"on {DemoConfig.quick().n_test} synthetic test clips" in captured.out
    zero_shot_row = next(line for line in captured.out.splitlines() if line.startswith("zero-shot  t2v"))
    low, high = out["zero-shot"]["ci95"]["t2v"]["R@1"]
    assert f"[{low:.1f}, {high:.1f}]" in zero_shot_row
    # seeded end to end: the same prompts, so the store hands back the same versions
    assert len(store.list_versions("demo")) == 2


def _fake(zs, vop, vopf, lows=(1.0, 1.0)):
    out = {"test_queries": 256}
    for name, value in (("zero-shot", zs), ("vop", vop), ("vop-f", vopf)):
        out[name] = {"t2v": {"R@1": value}, "ci95": {"t2v": {"R@1": [value - 3, value + 3]}}}
    for name, low in zip(("vop", "vop-f"), lows):
        gain = out[name]["t2v"]["R@1"] - zs
        out[name]["gain"] = {"t2v": {"R@1": gain, "ci95": [low, gain + 2]}}
    return out


def test_verdict_states_the_ordering_and_the_noise_honestly():
    from vopstore.trainer.demo import verdict

    lines = verdict(_fake(10.0, 20.0, 30.0))
    assert "over 256 test queries" in lines[0] and "VoP 20.0 [17.0, 23.0]" in lines[0]
    assert "+10.0 points" in lines[1] and "(beyond noise)" in lines[1]
    assert "as in the paper" in lines[3]
    lines = verdict(_fake(18.8, 17.2, 25.0, lows=(-4.0, 0.5)))
    assert "NOT beyond noise" in lines[1] and "(beyond noise)" in lines[2]
    assert "NOT" in lines[3] and any("VoP did not beat zero-shot" in x for x in lines)
    assert not any("VoP^F did not" in x for x in lines)
    assert any("VoP^F did not beat VoP" in x for x in verdict(_fake(10.0, 20.0, 20.0)))


def test_the_promise_needs_both_the_margin_and_the_interval():
    from vopstore.trainer.demo import beats_zero_shot

    assert beats_zero_shot(_fake(10.0, 15.5, 30.0)["vop"])
    assert not beats_zero_shot(_fake(10.0, 15.0, 30.0)["vop"])  # exactly 5 points is not more than 5
    assert not beats_zero_shot(_fake(10.0, 30.0, 30.0, lows=(-0.1, 1.0))["vop"])  # large but within noise
    assert not beats_zero_shot(_fake(10.0, 30.0, 30.0, lows=(0.0, 1.0))["vop"])


def test_the_cached_task_changes_with_every_setting_that_shapes_its_clips():
    import dataclasses

    from vopstore.trainer.demo import DemoConfig

    base = DemoConfig()
    for change in ({"background": (1, 2, 3)}, {"n_test": base.n_test + 2}, {"seed": base.seed + 1},
                   {"video_frames": base.video_frames + 1}):
        assert dataclasses.replace(base, **change).task_digest() != base.task_digest(), change
    assert dataclasses.replace(base, epochs=base.epochs + 1).task_digest() == base.task_digest()  # training only
