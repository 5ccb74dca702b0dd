"""`vopstore demo --quick`: the whole loop at toy sizes through the real CLI entry."""

from __future__ import annotations

import json

import pytest

from vopstore.cli.app import main

KEYS = {"R@1", "R@5", "R@10", "MdR", "MnR"}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_demo_compares_three_models_registers_two_and_caches_the_backbone(capsys, vopstore_home):
    from vopstore.store import open_store
    from vopstore.trainer.demo import DemoConfig
    from vopstore.trainer.pretrain import MARKER, demo_backbone_dir

    assert main(["demo", "--quick", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert set(out) == {"zero-shot", "vop", "vop-f"}
    for name, entry in out.items():
        for direction in ("t2v", "v2t"):
            assert set(entry[direction]) == KEYS, name
    assert "pretraining" in captured.err and "ordering" in captured.err
    store = open_store()
    versions = {v.method: v for v in store.list_versions("demo")}
    assert set(versions) == {"vop", "vop-f"}
    assert versions["vop-f"].ref == out["vop-f"]["ref"] and versions["vop-f"].metrics["t2v"] == out["vop-f"]["t2v"]

    marker = demo_backbone_dir(vopstore_home, DemoConfig.quick().pretrain) / MARKER
    stamp = marker.stat().st_mtime_ns
    assert main(["demo", "--quick", "--json"]) == 0  # second run: cached backbone and task
    captured = capsys.readouterr()
    assert "cached" in captured.err and "pretraining" not in captured.err and marker.stat().st_mtime_ns == stamp
    again = json.loads(captured.out)
    # seeded end to end: the same prompts, so the store hands back the same versions
    assert {k: again[k]["ref"] for k in ("vop", "vop-f")} == {k: out[k]["ref"] for k in ("vop", "vop-f")}
    assert again["vop-f"]["t2v"] == out["vop-f"]["t2v"] and len(store.list_versions("demo")) == 2


def _fake(zs, vop, vopf):
    return {k: {"t2v": {"R@1": v}} for k, v in (("zero-shot", zs), ("vop", vop), ("vop-f", vopf))}


def test_verdict_states_the_ordering_honestly():
    from vopstore.trainer.demo import verdict

    assert "as in the paper" in verdict(_fake(10.0, 20.0, 30.0))[1]
    lines = verdict(_fake(18.8, 17.2, 25.0))
    assert "NOT" in lines[1] and any("VoP did not beat zero-shot" in x for x in lines)
    assert not any("VoP^F did not" in x for x in lines)
    assert any("VoP^F did not beat VoP" in x for x in verdict(_fake(10.0, 20.0, 20.0)))
