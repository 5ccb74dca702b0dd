"""Serving benchmark: dynamic batching on vs off, on the same backbone, tasks and load, in one run.

Starts two `vopstore serve` processes over one local store (ViT-B/32 architecture,
random init, 16 vop tasks): one batching (``--max-batch 64 --max-wait-ms 5``), one
not (``--max-batch 1``: each request is its own forward). 32 client threads each
send requests of 1-4 texts for a random task, back to back; the two servers are
measured in alternating rounds (the order swaps each round) so a slow spell on a
noisy machine hits both. Prints requests/s, texts/s, p50 and p99 per side, and the
ratios; medians over rounds.

    .venv/bin/python bench/bench_serving.py [--quick] [--clients 32] [--tasks 16] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEXTS = ["a man opens a door", "a dog runs on the beach", "two people dance in the rain at night", "a cat sleeps",
         "a red car turns left at the lights", "someone cooks pasta in a small kitchen", "children play football",
         "a woman reads a letter and cries"]


def prepare(folder: Path, tasks: int, small: bool) -> tuple[Path, str]:
    """A backbone folder, a local store with ``tasks`` vop tasks of tenant ``bench``, and a read token."""
    from transformers import CLIPConfig

    from tests.fixtures.models import tiny_clip_config
    from vopstore.backbone import load_backbone, save_random_backbone
    from vopstore.prompts import build_method
    from vopstore.store import open_store

    backbone_dir = save_random_backbone(folder / "clip", tiny_clip_config(hidden=64, layers=4) if small
                                        else CLIPConfig(), seed=0)
    backbone = load_backbone(backbone_dir)
    store = open_store()
    for i in range(tasks):
        path = folder / f"t{i}.safetensors"
        build_method("vop", backbone, seed=i, init_std=0.5).save(path, backbone)
        store.add(f"bench/t{i}", path)
    return backbone_dir, store.create_token("bench", "bench", "read")


def start(backbone_dir: Path, tasks: int, port: int, log: Path, *extra: str) -> subprocess.Popen:
    import httpx

    loads = [arg for i in range(tasks) for arg in ("--load", f"bench/t{i}")]
    proc = subprocess.Popen([sys.executable, "-m", "vopstore.cli", "serve", "--backbone", str(backbone_dir),
                             "--port", str(port), "--refresh", "0", "--token-ttl", "3600", "--log-level", "warning",
                             *loads, *extra], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=os.environ.copy())
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server on {port} not ready: {log.read_text()[-2000:]}")


def load(url: str, token: str, clients: int, tasks: int, seconds: float) -> dict:
    """``clients`` threads sending 1-4 texts for a random task, back to back, for ``seconds``."""
    import httpx

    latencies, texts, errors = [], [0], [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            while time.monotonic() < stop:
                body = {"texts": rng.sample(TEXTS, rng.randint(1, 4)), "task": f"bench/t{rng.randrange(tasks)}"}
                started = time.perf_counter()
                response = http.post("/v1/embed/text", json=body)
                took = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(took)
                        texts[0] += len(body["texts"])
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    latencies.sort()
    return {"rps": len(latencies) / wall, "tps": texts[0] / wall, "p50": _pct(latencies, 50),
            "p99": _pct(latencies, 99), "errors": errors[0]}


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q / 100))] * 1000 if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smaller CLIP, 2 rounds of 3 s")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 3.0, 2
    from tests.fixtures.pgcluster import free_port

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        folder = Path(tmp)
        os.environ.update(VOPSTORE_HOME=str(folder / "home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        backbone_dir, token = prepare(folder, args.tasks, args.quick)
        sides = {"batching": ("--max-batch", "64", "--max-wait-ms", "5"), "no batching": ("--max-batch", "1")}
        procs, urls = {}, {}
        try:
            for name, extra in sides.items():
                port = free_port()
                procs[name] = start(backbone_dir, args.tasks, port, folder / f"{name[:2]}.log", *extra)
                urls[name] = f"http://127.0.0.1:{port}"
            for name in sides:  # warm both (first forwards allocate)
                load(urls[name], token, 4, args.tasks, 1.0)
            rounds: dict[str, list[dict]] = {name: [] for name in sides}
            for r in range(args.rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for name in order:
                    rounds[name].append(load(urls[name], token, args.clients, args.tasks, args.seconds))
        finally:
            for proc in procs.values():
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in rounds.items()}
    print(f"\n{args.clients} clients, {args.tasks} tasks, 1-4 texts per request, "
          f"{'small CLIP' if args.quick else 'ViT-B/32 architecture'}, CPU; medians of {args.rounds} rounds "
          f"x {args.seconds:.0f} s\n")
    print(f"{'server':<14}{'req/s':>9}{'texts/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, m in med.items():
        print(f"{name:<14}{m['rps']:>9.1f}{m['tps']:>10.1f}{m['p50']:>10.1f}{m['p99']:>10.1f}{m['errors']:>8.0f}")
    on, off = med["batching"], med["no batching"]
    print(f"{'ratio on/off':<14}{on['rps'] / off['rps']:>8.2f}x{on['tps'] / off['tps']:>9.2f}x"
          f"{on['p50'] / off['p50']:>9.2f}x{on['p99'] / off['p99']:>9.2f}x")


if __name__ == "__main__":
    main()
