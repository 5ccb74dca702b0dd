"""Gallery search benchmark: exact (flat inner product) vs HNSW on a 100k-vector gallery.

One command, prints a table with ratios measured in the same run:

    .venv/bin/python bench/bench_gallery.py            # 100,000 x 512 vectors, 1,000 queries

For each data set (``random``: i.i.d. unit vectors, the worst case for any graph or
cluster index; ``clustered``: unit vectors around 1,000 centres, closer to how real
CLIP embeddings sit), it builds the indexes through ``vopstore.gallery.index.make_index``
(what ``Galleries.build`` stores), then times 1,000 single-query searches (k=10, one
query per call, as a service answers them): p50 / p99 latency, and HNSW's recall@10
against the exact top 10 at the default ``efSearch`` and at a lower and a higher one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def dataset(kind: str, rows: int, queries: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "random":
        return unit(rng.standard_normal((rows, dim), dtype=np.float32)), \
            unit(rng.standard_normal((queries, dim), dtype=np.float32))
    centres = unit(rng.standard_normal((1000, dim), dtype=np.float32))
    def around(n):
        return unit(centres[rng.integers(0, len(centres), n)] + 0.04 * rng.standard_normal((n, dim), dtype=np.float32))
    return around(rows), around(queries)


def latencies(index, queries: np.ndarray, k: int) -> tuple[list[list[str]], float, float]:
    """Top-k ids per query and (p50, p99) in ms, one query per search call."""
    index.search(queries[:10], k)  # warm-up
    times, hits = [], []
    for q in queries:
        start = time.perf_counter()
        row = index.search(q[None], k)[0]
        times.append((time.perf_counter() - start) * 1e3)
        hits.append([vid for vid, _ in row])
    times.sort()
    return hits, statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def recall(got: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(e)) / len(e) for g, e in zip(got, exact)]))


def main() -> None:
    from vopstore.gallery.index import HNSW_DEFAULTS, IndexKey, make_index

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--data", default="random,clustered", help="comma-separated: random, clustered")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    import faiss

    key = IndexKey("0" * 64, "1" * 64, 12)
    ids = [f"v{i}" for i in range(args.rows)]
    ef_default = HNSW_DEFAULTS["efSearch"]
    print(f"gallery search: {args.rows:,} x {args.dim} float32 unit vectors, {args.queries:,} single-query "
          f"searches, k={args.k}, faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads; "
          f"HNSW M={HNSW_DEFAULTS['M']} efConstruction={HNSW_DEFAULTS['efConstruction']}")
    header = f"{'data':10} {'index':22} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p50 vs exact':>13} {'recall@10':>10}"
    print(header)
    print("-" * len(header))
    for data in args.data.split(","):
        vectors, queries = dataset(data, args.rows, args.queries, args.dim, np.random.default_rng(0))
        start = time.perf_counter()
        flat = make_index(key, ids, vectors, "flat", {})
        flat_build = time.perf_counter() - start
        exact, f50, f99 = latencies(flat, queries, args.k)
        print(f"{data:10} {'exact (IndexFlatIP)':22} {flat_build:8.2f} {f50:8.3f} {f99:8.3f} {'1.00x':>13} {'1.000':>10}")
        start = time.perf_counter()
        hnsw = make_index(key, ids, vectors, "hnsw", {})
        hnsw_build = time.perf_counter() - start
        for ef in sorted({ef_default // 4, ef_default, ef_default * 4}):
            hnsw.faiss.hnsw.efSearch = ef
            got, h50, h99 = latencies(hnsw, queries, args.k)
            label = f"HNSW efSearch={ef}" + (" *" if ef == ef_default else "")
            build = f"{hnsw_build:8.1f}" if ef == ef_default else " " * 8
            print(f"{data:10} {label:22} {build} {h50:8.3f} {h99:8.3f} {f50 / h50:12.1f}x {recall(got, exact):10.3f}")
    print("* the default efSearch; 'p50 vs exact' is the exact p50 divided by this row's p50 (higher: faster)")


if __name__ == "__main__":
    main()
