"""Big-version transfer benchmark: push and pull a large prompt set to S3 (moto), streamed vs in memory.

    .venv/bin/python bench/bench_transfer.py                  # a 256 MB version, 3 rounds
    .venv/bin/python bench/bench_transfer.py --size-mb 600    # a full fine-tune's size
    .venv/bin/python bench/bench_transfer.py --s3 seaweedfs   # a real S3 server instead of moto

One command: it starts moto's S3 server (or SeaweedFS) in its own process (so its memory is not counted),
writes a valid prompt set of ``--size-mb`` (a vop set whose two tensors are that big), adds
it to a local directory store, then times, each in a fresh process so that its peak memory
is its own:

* push, streamed (what ``vopstore push`` does now): the local blob hashed in place, then a
  multipart upload to a store on SQLite + S3 (parts of ``--part-mb``, 4 in flight);
* push, in memory (the baseline, the path before): ``read_blob`` (the whole file in memory,
  verified) then ``import_version`` of those bytes (a single PUT);
* pull, streamed: a ranged GET streamed into the cache while hashed once, validated through a
  memory map, copied into the local store;
* pull, in memory (the baseline): ``read_blob`` from S3, ``import_version`` of the bytes, then
  the cache filled by reading the stored copy back (the old pull: four sha256 passes).

Printed per case: the median MB/s; how much the transfer raised the process's resident memory
at its peak over what it held before (interpreter, boto3, SQLAlchemy), sampled from /proc every
5 ms: all of it (RSS: this also counts the clean page-cache pages of the memory-mapped file
while it is validated) and the anonymous part (the memory the process itself holds: copies of
the data), each also as a multiple of the version's size; the process's lifetime peak
(``getrusage`` ru_maxrss, absolute); and streamed / in-memory ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

MB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.fixtures.s3: SeaweedFS is started the way the test suite starts it
CASES = [("push", "streamed"), ("push", "in-memory"), ("pull", "streamed"), ("pull", "in-memory")]


# --- the measured process ---------------------------------------------------------------------------------------


class PeakMemory:
    """Samples this process's resident memory (all, and anonymous only) until stopped; keeps the peaks."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s, self.peak_rss, self.peak_anon = every_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._sample()
        self.start_rss, self.start_anon = self.peak_rss, self.peak_anon
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def _sample(self) -> None:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        self.peak_rss = max(self.peak_rss, int(fields["VmRSS"].split()[0]) * 1024)
        self.peak_anon = max(self.peak_anon, int(fields["RssAnon"].split()[0]) * 1024)


def run_case(phase: str, mode: str, work: Path, local_dir: Path) -> dict:
    """One push or pull in this (fresh) process; returns seconds and memory figures."""
    from vopstore.store import open_store, pull, push

    local = open_store(local_dir.as_uri())
    remote = open_store(f"sqlite:///{work / 'remote.db'}", blobs=f"s3://bench/{work.name}")
    if phase == "pull":
        target = open_store((work / "pulled").as_uri())
    info = (local if phase == "push" else remote).resolve("big@v1")
    start = time.perf_counter()
    with PeakMemory() as memory:
        if (phase, mode) == ("push", "streamed"):
            push(local, remote, "big@v1")
        elif (phase, mode) == ("push", "in-memory"):
            remote.import_version(info, local.read_blob(info))
        elif (phase, mode) == ("pull", "streamed"):
            pull(remote, target, "big@v1")
        else:
            stored, _ = target.import_version(info, remote.read_blob(info))
            target.cache.put(stored.digest, target.read_blob(stored), stored.tenant)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Growth over what the process held before the transfer (the interpreter, boto3, SQLAlchemy, ...).
    return {"seconds": seconds, "size": info.size, "peak_rss": memory.peak_rss - memory.start_rss,
            "peak_anon": memory.peak_anon - memory.start_anon, "start_rss": memory.start_rss, "maxrss": peak}


# --- the driver ---------------------------------------------------------------------------------------------------


def write_version(path: Path, size_mb: int) -> None:
    """A valid vop prompt set of about ``size_mb`` MB: two float32 tensors (text and visual prompts)."""
    import numpy as np
    from safetensors.numpy import save_file

    from vopstore.checkpoint import PromptSetMeta
    from vopstore.prompts.configs import VopConfig

    n = size_mb * MB // 4
    rng = np.random.default_rng(0)
    tensors = {"text": rng.standard_normal((1, 1, n // 2), dtype=np.float32),
               "visual": rng.standard_normal((1, 1, n - n // 2), dtype=np.float32)}
    meta = PromptSetMeta(method="vop", config=VopConfig(text_prompts=1, visual_prompts=1).to_dict(),
                         backbone_name="bench", backbone_fingerprint="ab" * 32, dtype="float32", params=n)
    save_file(tensors, str(path), metadata={"vopstore": meta.to_json()})


def start_s3(kind: str, folder: Path) -> tuple[subprocess.Popen, dict]:
    """An S3 server on loopback in its own process, and the environment that points boto3 at it."""
    if kind == "seaweedfs":
        from tests.fixtures.s3 import _start_weed, find_weed

        (folder / "weed").mkdir()
        proc, server = _start_weed(find_weed(), folder / "weed")
        return proc, server.env()
    proc, url = start_moto()
    return proc, {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                  "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def setup(work: Path, local_dir: Path, size_mb: int) -> int:
    """Write the version and add it to the local store; return its size in bytes."""
    from vopstore.store import open_store

    version = work / "big.safetensors"
    write_version(version, size_mb)
    size = open_store(local_dir.as_uri()).add("big", version).size
    version.unlink()
    return size


def child(args: list[str], env: dict) -> dict:
    """Run this script with ``args`` in a fresh process (Linux keeps a parent's peak RSS in a forked child's
    ru_maxrss, so the driver itself never holds the version's bytes)."""
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict, size: int) -> None:
    runs = next(iter(results.values()))
    start = statistics.median(r["start_rss"] for r in runs) / MB
    print(f"\nversion of {size / MB:.0f} MB; medians over {len(runs)} rounds; each process held {start:.0f} MB "
          "before its transfer, the figures are what the transfer added")
    print(f"{'case':22} {'MB/s':>8} {'+peak RSS':>10} {'x size':>7} {'+peak anon':>10} {'x size':>7} "
          f"{'ru_maxrss':>10}")
    medians = {}
    for case, runs in results.items():
        speed = statistics.median(size / MB / r["seconds"] for r in runs)
        rss = statistics.median(r["peak_rss"] for r in runs)
        anon = statistics.median(r["peak_anon"] for r in runs)
        maxrss = statistics.median(r["maxrss"] for r in runs)
        medians[case] = (speed, rss, anon)
        print(f"{' '.join(case):22} {speed:8.1f} {rss / MB:8.0f} MB {rss / size:7.2f} {anon / MB:8.0f} MB "
              f"{anon / size:7.2f} {maxrss / MB:7.0f} MB")
    for phase in ("push", "pull"):
        new, old = medians[(phase, "streamed")], medians[(phase, "in-memory")]
        print(f"{phase}: streamed / in-memory  speed x{new[0] / old[0]:.2f}   peak RSS x{new[1] / old[1]:.2f}   "
              f"peak anon x{new[2] / old[2]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--part-mb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--s3", choices=("moto", "seaweedfs"), default="moto", help="the S3 server to push to")
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--local", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case, args.work, args.local)))
        return
    if args.setup:
        print(json.dumps({"size": setup(args.work, args.local, args.size_mb)}))
        return
    root = Path(tempfile.mkdtemp(prefix="vs-bench-"))  # short: SeaweedFS puts unix sockets under it
    proc, s3_env = start_s3(args.s3, root)
    try:
        env = {**os.environ, **s3_env, "VOPSTORE_S3_PART_SIZE": str(args.part_mb * MB),
               "VOPSTORE_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1"}
        print(f"S3 server: {args.s3}; parts of {args.part_mb} MB", flush=True)
        run(args, root, env)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def run(args, root: Path, env: dict) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])
    s3.create_bucket(Bucket="bench")
    local_dir = root / "local"
    size = child(["--setup", "--work", str(root), "--local", str(local_dir), "--size-mb", str(args.size_mb)],
                 env)["size"]
    results: dict = {case: [] for case in CASES}
    for round_ in range(args.rounds):
        for mode in ("streamed", "in-memory"):
            work = root / f"r{round_}-{mode}-{uuid.uuid4().hex[:6]}"
            work.mkdir()
            for phase in ("push", "pull"):  # each pull reads what the push before it stored
                case = ["--case", phase, mode, "--work", str(work), "--local", str(local_dir)]
                results[(phase, mode)].append(child(case, {**env, "VOPSTORE_HOME": str(work / "home")}))
                print(f"round {round_ + 1} {phase} {mode}: {results[(phase, mode)][-1]['seconds']:.2f} s", flush=True)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=work.name):
                for item in page.get("Contents", ()):
                    s3.delete_object(Bucket="bench", Key=item["Key"])
            shutil.rmtree(work)
    report(results, size)


if __name__ == "__main__":
    main()
