"""``vopstore train``, ``vopstore eval`` and ``vopstore demo``: thin wrappers over vopstore.trainer.

The trainer (numpy, torch, transformers) is imported inside the commands, never at import time,
so ``vopstore --help`` stays quick.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from vopstore.cli.app import app
from vopstore.cli.output import print_json, print_table
from vopstore.errors import ConfigError

_METRIC_KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def _say(quiet: bool):
    """Progress lines for people go to stderr, so ``--json`` stdout stays parseable."""
    if quiet:
        return lambda text: None
    return lambda text: print(text, file=sys.stderr, flush=True)


def _metric_rows(named: dict[str, dict]) -> list[list[str]]:
    rows = []
    for name, metrics in named.items():
        for direction in ("t2v", "v2t"):
            values = metrics.get(direction, {})
            rows.append([name, direction] + [f"{values.get(k, float('nan')):.1f}" for k in _METRIC_KEYS])
    return rows


def _print_metrics(named: dict[str, dict], title: str) -> None:
    print_table(["model", "dir", *_METRIC_KEYS], _metric_rows(named), title=title)


@app.command()
def train(
    task: str = typer.Option(..., "--task", help="task name; the new version is registered under it"),
    data: str = typer.Option(..., "--data", help="dataset folder (MSR-VTT, LSMDC, DiDeMo, ActivityNet, JSONL/CSV)"),
    method: Optional[str] = typer.Option(None, "--method", help="prompt method (default vop-f+p)"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="CLIP hub name or local folder"),
    preset: Optional[str] = typer.Option(None, "--preset", help="msrvtt-9k, msrvtt-7k, lsmdc, didemo, activitynet"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="global batch (all ranks)"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    num_frames: Optional[int] = typer.Option(None, "--frames"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    select: Optional[str] = typer.Option(None, "--select", help="keep the 'last' step or the 'best' one "
                                         "(X-Pool's rule: evals_per_epoch, select_window, select_metric)"),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="with --select best: hold out this "
                                                 "share of training videos to select on (0: the test split)"),
    sets: list[str] = typer.Option([], "--set", help="any training option as key=value (repeatable)"),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="resumable run folder (default under VOPSTORE_HOME/runs)"),
    store: Optional[str] = typer.Option(None, "--store", help="store URL (default: the local store)"),
    message: Optional[str] = typer.Option(None, "--message", "-m"),
    strict: bool = typer.Option(False, "--strict", help="stop if any annotation row or video is skipped"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON object instead of a table"),
) -> None:
    """Train a prompt set, evaluate it and register it as a new version of TASK."""
    from vopstore.trainer.config import build_config, preset_for
    from vopstore.trainer.workflow import train_task

    overrides = {"method": method, "backbone": backbone, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                 "num_frames": num_frames, "max_steps": max_steps, "select": select, "val_fraction": val_fraction}
    overrides["strict"] = strict or None  # None: the preset's or --set's value stands
    cfg = build_config(preset_for(task, preset), overrides, sets)  # a bad method or option fails here, before data
    result = train_task(task, data, cfg, run_dir=run_dir, store=_open(store), message=message,
                        progress=not as_json and sys.stderr.isatty(), log=_say(as_json))
    if int(os.environ.get("RANK", "0")) != 0 or result.ref is None:
        return  # under torchrun every rank gets the result; rank 0 reports it
    if as_json:
        print_json(result.to_dict())
        return
    _print_metrics({cfg.method: result.metrics}, title=f"{result.ref}  ({result.steps} steps)")
    typer.echo(result.ref)


@app.command("eval")
def eval_cmd(
    ref: Optional[str] = typer.Argument(None, help="version to evaluate, e.g. lsmdc@v1 (omit with --zero-shot)"),
    data: str = typer.Option(..., "--data", help="dataset folder"),
    zero_shot: bool = typer.Option(False, "--zero-shot", help="evaluate the backbone alone, no prompts"),
    task: Optional[str] = typer.Option(None, "--task", help="with --zero-shot: the task it stands for"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="with --zero-shot: CLIP hub name or folder"),
    preset: Optional[str] = typer.Option(None, "--preset"),
    sets: list[str] = typer.Option([], "--set", help="override a training option (e.g. test_split=val)"),
    store: Optional[str] = typer.Option(None, "--store"),
    strict: bool = typer.Option(False, "--strict", help="stop if any test row or video is skipped"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Retrieval metrics (R@1/5/10, MdR, MnR, both directions) of a version or of the zero-shot backbone."""
    sets = [*sets, "strict=true"] if strict else sets
    if zero_shot == bool(ref):
        raise ConfigError("give either a REF or --zero-shot (with --task), not both or neither")
    if zero_shot:
        from vopstore.trainer.config import build_config, preset_for
        from vopstore.trainer.workflow import eval_zero_shot

        cfg = build_config(preset_for(task, preset), {"backbone": backbone}, sets)
        name, out = f"{task or 'zero-shot'} (zero-shot)", {"task": task, "zero_shot": True}
        out["metrics"] = eval_zero_shot(data, cfg, progress=not as_json and sys.stderr.isatty())
    else:
        from vopstore.trainer.workflow import eval_version

        out = eval_version(ref, data, tuple(sets), store=_open(store), progress=not as_json and sys.stderr.isatty())
        name = out["ref"]
    if as_json:
        print_json(out)
    else:
        _print_metrics({name: out["metrics"]}, title=f"evaluation on {data}")


@app.command()
def demo(
    as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
    quick: bool = typer.Option(False, "--quick", hidden=True, help="tiny sizes, for the test suite"),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="where to write the synthetic task"),
) -> None:
    """The whole loop offline: synthetic task, small pretrained CLIP, zero-shot vs VoP vs VoP^F, registered."""
    from vopstore.trainer.demo import DemoConfig, run_demo

    cfg = DemoConfig.quick() if quick else DemoConfig()
    results = run_demo(cfg, workdir=workdir, log=_say(False), progress=not as_json and sys.stderr.isatty())
    if as_json:
        print_json(results)
        return
    rows = []
    for name in ("zero-shot", "vop", "vop-f"):
        for direction in ("t2v", "v2t"):
            values, (low, high) = results[name][direction], results[name]["ci95"][direction]["R@1"]
            rows.append([name, direction, f"{values['R@1']:.1f}", f"[{low:.1f}, {high:.1f}]"]
                        + [f"{values[k]:.1f}" for k in _METRIC_KEYS[1:]])
    print_table(["model", "dir", "R@1", "R@1 95% CI", *_METRIC_KEYS[1:]], rows,
                title=f"demo: zero-shot vs VoP vs VoP^F on {results['test_queries']} synthetic test clips "
                      "(temporal order matters)")


def _open(url: Optional[str]):
    if url is None:
        return None
    from vopstore.store import open_store

    return open_store(url)
