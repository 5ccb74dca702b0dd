"""A token bucket per API token, in each worker process (so N workers allow up to N x the rate)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

MAX_KEYS = 100_000  # forget the least recently seen tokens beyond this, so memory stays bounded


class RateLimiter:
    """``take(key)`` spends one request of ``key``'s bucket: None if allowed, else seconds until one is."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        if self.rate <= 0:
            return None
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
            return None if allowed else (1.0 - tokens) / self.rate
