"""Prometheus metrics of one serving process (its own registry, so tests and several apps never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("vopstore_request_seconds", "Request latency by route.", ["route", "status"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("vopstore_batch_rows", "Rows per forward.", ["tower"], buckets=_ROW_BUCKETS,
                                    registry=r)
        self.batch_requests = Histogram("vopstore_batch_requests", "Requests gathered into one forward.", ["tower"],
                                        buckets=_ROW_BUCKETS, registry=r)
        self.tasks_loaded = Gauge("vopstore_tasks_loaded", "Prompt sets on the device.", registry=r)
        self.loaded_bytes = Gauge("vopstore_loaded_bytes",
                                  "Bytes of the loaded tasks' tensors and caches (what max_bytes bounds).", registry=r)
        self.cache = Counter("vopstore_prompt_cache_total", "Prompt-set loads by local cache outcome.", ["outcome"],
                             registry=r)
        self.swaps = Counter("vopstore_task_swaps_total", "Loads, unloads and refresh switches.", ["kind"], registry=r)

    def batch(self, tower: str):
        def observe(requests: int, rows: int) -> None:
            self.batch_requests.labels(tower).observe(requests)
            self.batch_rows.labels(tower).observe(rows)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
