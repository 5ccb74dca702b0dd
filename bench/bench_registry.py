"""Registry server benchmark: resolve and pull under 32 concurrent clients, HTTP registry vs direct registry.

One command, starts and stops everything it needs on loopback (a PostgreSQL 15
cluster, moto's S3 server in a subprocess, ``vopstore registry serve`` with 2
workers) and prints requests/s, p50 and p99 of both registries and their ratios:

    .venv/bin/python bench/bench_registry.py            # 10,000 versions (1,000 tasks x 10), 32 clients
    .venv/bin/python bench/bench_registry.py --quick    # the same, shorter rounds (under a minute)

* resolve: ``registry.resolve("bench/taskN@prod")`` for a random task N;
* pull: resolve, then ``read_blob`` of the version's ~0.5 MB prompt set (sha256-verified by both clients).

The direct side is what a trusted client does today: ``open_store`` on the same
PostgreSQL and blob store (one handle, so one engine and one connection pool, per
client). The HTTP side is one :class:`~vopstore.store.http.HttpRegistry` per
client, each with its own read token, against the server (default per-token rate
limit). Each client is a thread that issues requests back to back (a closed loop:
the registry is saturated, and latency is mostly queueing, about clients /
throughput); ``resolve @R/s`` then offers a fixed total load of R requests/s
(``--paced-rps``, Poisson arrivals, latency from each request's scheduled time),
which is the latency a fleet sees short of saturation. The two sides are
interleaved round by round and every figure is the median over rounds, so a slow
spell on a noisy machine lands on both sides instead of faking a ratio.

The 10,000 version rows are bulk-inserted with SQLAlchemy Core beside one version
added through the library (its blob is real; every task's ``prod`` alias points at
a version that uses it, the other versions reference distinct blob rows), so the
resolves run against tables of realistic size; what is measured is resolve and
pull, not add.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.fixtures (PostgreSQL cluster, server launcher), shared with the tests

TENANT = "bench"
TARGET_P99_S = 0.010  # issue 9: HTTP resolve p99 under 10 ms at 10,000 versions


# --- set-up -----------------------------------------------------------------------------------------------------


def prompt_set(path: Path, seed: int = 0) -> Path:
    """A valid ~0.5 MB ``vop`` prompt set for a ViT-B/32-sized backbone: 8 text and 8 visual prompts on 12 layers.

    Written with numpy (no torch): text (12, 8, 512) + visual (12, 8, 768) float32 = 122,880 parameters.
    """
    import numpy as np
    from safetensors.numpy import save

    from vopstore.checkpoint import PromptSetMeta
    from vopstore.prompts.configs import VopConfig

    rng = np.random.default_rng(seed)
    tensors = {"text": (0.02 * rng.standard_normal((12, 8, 512))).astype(np.float32),
               "visual": (0.02 * rng.standard_normal((12, 8, 768))).astype(np.float32)}
    meta = PromptSetMeta(method="vop", config=VopConfig(text_prompts=8, visual_prompts=8).to_dict(),
                         backbone_name="openai/clip-vit-base-patch32", backbone_fingerprint="ab" * 32,
                         dtype="float32", params=sum(t.size for t in tensors.values()))
    path.write_bytes(save(tensors, metadata={"vopstore": meta.to_json()}))
    return path


def start_moto(folder: Path) -> tuple[subprocess.Popen, dict]:
    """moto's S3 server in its own process (so its CPU is not the benchmark process's GIL) on a free port."""
    import httpx

    from tests.fixtures.pgcluster import free_port

    port = free_port()
    with open(folder / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "moto.log").read_text()[-2000:]
            raise RuntimeError(f"moto_server exited with {proc.returncode}: {tail}")
        try:
            httpx.get(env["AWS_ENDPOINT_URL"], timeout=1)
            return proc, env
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError("moto_server did not answer within 30 s")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def seed(admin, folder: Path, tasks: int, versions: int) -> dict:
    """``versions`` versions over ``tasks`` tasks of tenant ``bench``; each task's last version is ``prod``.

    Returns what the clients check: the prod version number and the real blob's digest and size.
    """
    from sqlalchemy import insert, select, text

    from vopstore.db.models import Alias, Blob, Task, Tenant, Version, utcnow

    per_task = max(1, versions // tasks)
    real = admin.add(f"{TENANT}/seed", prompt_set(folder / "seed.safetensors"), metrics={"t2v": {"R@1": 20.4}})
    now = utcnow()
    with admin.engine.begin() as conn:
        tenant_id = conn.scalar(select(Tenant.id).where(Tenant.name == TENANT))
        template = conn.execute(select(Version).where(Version.blob_id == select(Blob.id).where(
            Blob.tenant_id == tenant_id, Blob.digest == real.digest).scalar_subquery())).mappings().one()
        task_ids = conn.execute(insert(Task).returning(Task.id, sort_by_parameter_order=True),
                                [dict(tenant_id=tenant_id, name=f"task{t}", last_number=per_task, created_at=now)
                                 for t in range(tasks)]).scalars().all()
        fakes = tasks * (per_task - 1)  # every version but the prod ones gets its own (blob-less) blob row
        fake_ids = conn.execute(insert(Blob).returning(Blob.id, sort_by_parameter_order=True),
                                [dict(tenant_id=tenant_id, digest=f"{i:064x}", size=real.size, created_at=now)
                                 for i in range(fakes)]).scalars().all() if fakes else []
        common = {k: template[k] for k in ("backbone_id", "method", "method_config", "dtype", "params", "metrics")}
        rows, blob_ids = [], iter(fake_ids)
        for tid in task_ids:
            for n in range(1, per_task + 1):
                blob = template["blob_id"] if n == per_task else next(blob_ids)
                rows.append(dict(common, task_id=tid, number=n, blob_id=blob, created_at=now, created_by="bench",
                                 message=f"v{n}"))
        version_ids = conn.execute(insert(Version).returning(Version.id, sort_by_parameter_order=True),
                                   rows).scalars().all()
        conn.execute(insert(Alias), [dict(task_id=tid, name="prod", version_id=version_ids[(i + 1) * per_task - 1],
                                          updated_at=now) for i, tid in enumerate(task_ids)])
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))  # plans as on a database that grew to this size
    return {"number": per_task, "digest": real.digest, "size": real.size}


# --- measurement ------------------------------------------------------------------------------------------------


@dataclass
class Round:
    """One timed phase: every client issuing one operation back to back for ``seconds``."""

    rps: float
    p50: float
    p99: float
    n: int
    errors: int
    first_error: str | None = None


@dataclass
class Side:
    """One registry (direct or HTTP) and one operation, across rounds."""

    rounds: list[Round] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.rounds)

    def spread(self, attr: str) -> tuple[float, float]:
        values = [getattr(r, attr) for r in self.rounds]
        return min(values), max(values)


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_phase(clients: list, op, tasks: int, seconds: float, seed_: int, paced_rps: float | None = None) -> Round:
    """Run ``op(client, ref)`` from one thread per client for ``seconds``; throughput and latency of all calls.

    Closed loop by default: each client sends its next request as soon as the last one answered, so
    the registry is saturated and latency is mostly queueing (about clients / throughput). With
    ``paced_rps``, the clients together offer that many requests per second (Poisson arrivals per
    client) and each latency runs from the request's scheduled time, so a client that falls behind
    is charged for the wait (no coordinated omission).
    """
    latencies: list[list[float]] = [[] for _ in clients]
    errors: list[list[str]] = [[] for _ in clients]
    ends = [0.0] * len(clients)
    start_gate = threading.Barrier(len(clients) + 1)
    deadline = [0.0]

    def work(i: int, client) -> None:
        rng, mine, bad = random.Random(seed_ * 1000 + i), latencies[i], errors[i]
        start_gate.wait()
        stop = deadline[0]
        clock = time.perf_counter
        rate = paced_rps / len(clients) if paced_rps else None
        due = clock() + (rng.expovariate(rate) if rate else 0.0)
        while True:
            ref = f"{TENANT}/task{rng.randrange(tasks)}@prod"
            if rate:
                if due >= stop:
                    break
                now = clock()
                if now < due:
                    time.sleep(due - now)
                begin, due = due, due + rng.expovariate(rate)
            else:
                begin = clock()
                if begin >= stop:
                    break
            try:
                op(client, ref)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the phase goes on
                bad.append(f"{type(exc).__name__}: {exc}")
                continue
            mine.append(clock() - begin)
        ends[i] = clock()

    threads = [threading.Thread(target=work, args=(i, c), daemon=True) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    begin = time.perf_counter()
    deadline[0] = begin + seconds
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed = max(ends) - begin
    ordered = sorted(x for per in latencies for x in per)
    failures = [e for per in errors for e in per]
    if not ordered:
        raise RuntimeError(f"no request succeeded; first error: {failures[0] if failures else 'none'}")
    return Round(rps=len(ordered) / elapsed, p50=quantile(ordered, 0.50), p99=quantile(ordered, 0.99),
                 n=len(ordered), errors=len(failures), first_error=failures[0] if failures else None)


def make_ops(expected: dict):
    def resolve(client, ref):
        info = client.resolve(ref)
        if info.number != expected["number"] or info.digest != expected["digest"]:
            raise AssertionError(f"{ref} resolved to v{info.number} {info.digest[:12]}")

    def pull(client, ref):
        info = client.resolve(ref)
        data = client.read_blob(info)  # both registries re-hash the bytes against info.digest
        if len(data) != expected["size"] or info.digest != expected["digest"]:
            raise AssertionError(f"{ref}: pulled {len(data)} bytes of {info.digest[:12]}")

    return resolve, pull


def count_http_errors(client, counter: list) -> None:
    """Count every HTTP answer >= 400 the client sees, retried ones (429, 5xx) included."""
    def hook(response):
        if response.status_code >= 400:
            counter.append(response.status_code)

    client._http.event_hooks["response"].append(hook)


# --- report -----------------------------------------------------------------------------------------------------


def report(results: dict, args, rounds: int, http_statuses: list) -> None:
    print()
    print(f"{args.clients} concurrent clients, {args.versions:,} versions / {args.tasks:,} tasks, blobs: {args.blobs}"
          f"{' (presigned downloads)' if args.presign else ''}, server workers: {args.workers}; "
          f"medians over {rounds} interleaved rounds of {args.seconds:g} s")
    head = (f"{'operation':18} {'registry':12} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8}   "
            f"{'req/s min-max':15} {'p99 ms min-max':17} errors")
    print(head)
    print("-" * len(head))
    for op, sides in results.items():
        for name, side in sides.items():
            lo, hi = side.spread("rps")
            plo, phi = side.spread("p99")
            errors = sum(r.errors for r in side.rounds)
            print(f"{op:18} {name:12} {side.median('rps'):11.0f} {side.median('p50') * 1e3:8.2f} "
                  f"{side.median('p99') * 1e3:8.2f}   {f'{lo:.0f}-{hi:.0f}':15} "
                  f"{f'{plo * 1e3:.1f}-{phi * 1e3:.1f}':17} {errors}")
        d, h = sides["direct"], sides["http"]
        print(f"{op:18} {'http/direct':12} {h.median('rps') / d.median('rps'):10.2f}x "
              f"{h.median('p50') / d.median('p50'):7.2f}x {h.median('p99') / d.median('p99'):7.2f}x")
    for op, sides in results.items():
        for name, side in sides.items():
            firsts = [r.first_error for r in side.rounds if r.first_error]
            if firsts:
                print(f"  {op} {name}: first error: {firsts[0][:300]}")
    if http_statuses:
        counts = {code: http_statuses.count(code) for code in sorted(set(http_statuses))}
        print(f"  HTTP error answers seen by the HTTP clients (retried ones included): {counts}")
    for op, sides in results.items():
        if op.startswith("resolve"):
            p99 = sides["http"].median("p99")
            load = "saturated (closed loop)" if op == "resolve" else f"at {args.paced_rps:g} req/s offered"
            print(f"target HTTP resolve p99 < {TARGET_P99_S * 1e3:.0f} ms, {args.clients} clients {load}: "
                  f"{'MET' if p99 < TARGET_P99_S else 'MISSED'} ({p99 * 1e3:.2f} ms)")


# --- main -------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (one thread each)")
    parser.add_argument("--seconds", type=float, default=None, help="length of one timed phase (default 4, quick 1.2)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 3)")
    parser.add_argument("--paced-rps", type=float, default=100.0,
                        help="also resolve at this offered load (all clients together, Poisson); 0: skip")
    parser.add_argument("--workers", type=int, default=2, help="registry server worker processes")
    parser.add_argument("--blobs", choices=("s3", "local"), default="s3",
                        help="s3: moto's S3 server on loopback; local: a folder")
    parser.add_argument("--presign", action="store_true", help="server answers downloads with presigned S3 URLs")
    parser.add_argument("--quick", action="store_true", help="short rounds: finishes in under a minute")
    args = parser.parse_args()
    args.seconds = args.seconds or (1.2 if args.quick else 4.0)
    rounds = args.rounds or (3 if args.quick else 7)
    if args.presign and args.blobs != "s3":
        parser.error("--presign needs --blobs s3")
    if min(args.versions, args.tasks, args.clients, rounds) < 1 or args.versions < args.tasks or args.seconds <= 0:
        parser.error("--versions >= --tasks >= 1, --clients >= 1, --rounds >= 1 and --seconds > 0")

    from tests.fixtures.pgcluster import PgCluster
    from tests.fixtures.registry_server import start_server
    from vopstore.db import make_engine, upgrade
    from vopstore.store import open_store
    from vopstore.store.http import HttpRegistry

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vopstore-bench-registry-") as raw:
        tmp = Path(raw)
        os.environ["VOPSTORE_HOME"] = str(tmp / "home")
        os.environ["HF_HUB_OFFLINE"] = "1"
        pg, moto, server, directs, https = None, None, None, [], []
        try:
            pg = PgCluster().start()
            db = pg.create_database("registry_bench")
            engine = make_engine(db)
            upgrade(engine)
            engine.dispose()
            env = {}
            if args.blobs == "s3":
                moto, env = start_moto(tmp)
                os.environ.update(env)
                import boto3

                boto3.session.Session().client("s3").create_bucket(Bucket="bench")
                blobs = "s3://bench/vop"
            else:
                blobs = (tmp / "blobs").as_uri()
            admin = open_store(db, blobs=blobs)
            admin.create_tenant(TENANT)
            t0 = time.perf_counter()
            expected = seed(admin, tmp, args.tasks, args.versions)
            tokens = [admin.create_token(TENANT, f"client{i}", "read") for i in range(args.clients)]
            admin.close()
            print(f"seeded {args.versions:,} versions in {time.perf_counter() - t0:.1f} s; "
                  f"{args.clients} read tokens", flush=True)

            server_args = ["--workers", str(args.workers)] + (["--presign"] if args.presign else [])
            server = start_server(db, blobs, env, tmp, *server_args)  # default per-token rate limit: one token each
            directs = [open_store(db, blobs=blobs) for _ in range(args.clients)]
            https = [HttpRegistry(server.url, token) for token in tokens]
            statuses: list[int] = []
            for client in https:
                count_http_errors(client, statuses)
            resolve, pull = make_ops(expected)
            ops = {"resolve": (resolve, None), "pull": (pull, None)}
            if args.paced_rps > 0:
                ops[f"resolve @{args.paced_rps:g}/s"] = (resolve, args.paced_rps)
            sides = {"direct": directs, "http": https}
            print(f"server {server.url} ({args.workers} workers) and {args.clients} clients per side up after "
                  f"{time.perf_counter() - started:.1f} s; warming up", flush=True)
            for fn in (resolve, pull):  # connections, pools, the HTTP client's /whoami, the server's imports
                for clients in sides.values():
                    run_phase(clients, fn, args.tasks, min(1.0, args.seconds), seed_=999)

            results = {op: {name: Side() for name in sides} for op in ops}
            for r in range(rounds):
                names = list(sides) if r % 2 == 0 else list(reversed(sides))  # alternate who goes first
                for op, (fn, paced) in ops.items():
                    for name in names:
                        got = run_phase(sides[name], fn, args.tasks, args.seconds, seed_=r, paced_rps=paced)
                        results[op][name].rounds.append(got)
                print(f"round {r + 1}/{rounds}: " + ", ".join(
                    f"{op} {name} {side.rounds[-1].rps:.0f}/s p99 {side.rounds[-1].p99 * 1e3:.1f} ms"
                    for op, sides_ in results.items() for name, side in sides_.items()), flush=True)
            report(results, args, rounds, statuses)
        finally:
            for client in https:
                client.close()
            for client in directs:
                client.close()
            if server is not None:
                server.stop()
            if moto is not None:
                stop_process(moto)
            if pg is not None:
                pg.stop()
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
