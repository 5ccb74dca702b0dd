"""CLI start-up benchmark: CPU time of everyday ``vopstore`` commands against ``hf version``, paired.

Run: ``.venv/bin/python bench/bench_cli.py [--runs 15]``. Each round runs ``hf version`` (the
huggingface_hub CLI installed in the same environment: the baseline) and then one
``vopstore`` command, alternating, and takes the user + system CPU time of each child
process (wall time on a shared machine measures the neighbours too). It prints the
median CPU time of each and the median of the per-round ratios; the goal for ``vopstore
ls`` (and ``show``) is a ratio of at most 1.0. The store is a local store of 20 tasks.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures.stores writes small valid prompt sets without torch
GOAL = 1.0


def child_cpu_s(cmd: list[str], env: dict) -> float:
    """User + system CPU seconds of one run of ``cmd`` (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_store(home: Path, tasks: int = 20) -> None:
    """A local store under ``home`` with ``tasks`` tasks of one version each, ``prod`` on task0."""
    from tests.fixtures.stores import make_checkpoint
    from vopstore.store import open_store

    os.environ["VOPSTORE_HOME"] = str(home)
    store = open_store()
    for t in range(tasks):
        store.add(f"task{t}", make_checkpoint(home.parent / f"c{t}.safetensors", seed=t))
    store.tag("task0@v1", "prod")
    store.close()


def paired(baseline: list[str], command: list[str], env: dict, runs: int) -> tuple[list[float], list[float]]:
    child_cpu_s(baseline, env), child_cpu_s(command, env)  # warm the page cache and the .pyc files
    base, ours = [], []
    for _ in range(runs):
        base.append(child_cpu_s(baseline, env))
        ours.append(child_cpu_s(command, env))
    return base, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    hf, vopstore = str(bindir / "hf"), str(bindir / "vopstore")
    with tempfile.TemporaryDirectory(prefix="vopstore-bench-cli-") as raw:
        home = Path(raw) / "home"
        make_store(home)
        env = {**os.environ, "VOPSTORE_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        print(f"CPU time (user + system) per run, {args.runs} alternating pairs; baseline: hf version")
        for argv in (["ls"], ["ls", "task0"], ["show", "task0@prod"], ["tag", "task0@v1", "prod"]):
            base, ours = paired([hf, "version"], [vopstore, *argv], env, args.runs)
            ratio = statistics.median(o / b for o, b in zip(ours, base))
            verdict = "" if argv[0] not in ("ls", "show") else ("  ok" if ratio <= GOAL else f"  over the goal {GOAL}")
            print(f"vopstore {' '.join(argv):22} median {statistics.median(ours) * 1e3:6.0f} ms   hf version "
                  f"{statistics.median(base) * 1e3:6.0f} ms   median ratio {ratio:4.2f}{verdict}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
