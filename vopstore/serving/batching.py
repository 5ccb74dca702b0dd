"""Dynamic batching: concurrent requests of any tasks gathered into one mixed-task forward per tower.

A request waits at most ``max_wait_s`` for others to join it, and a batch holds at
most ``max_rows`` rows. Forwards run one at a time on one executor thread (torch
already uses every core inside a forward); while one runs, the next batch gathers.
Each caller gets back exactly its own rows, in order, and the snapshot they were
computed with (so a search uses the very prompts its query was embedded with).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class _Pending:
    items: list
    tasks: list
    future: asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)


class Batcher:
    """Gathers ``submit`` calls into batches for ``forward(items, tasks) -> (rows, snapshot)``.

    Args:
        forward: runs one batch in the executor thread; returns (a (N, D) tensor, the snapshot used).
        max_rows: the most rows one forward takes (a larger request still runs, alone).
        max_wait_s: how long the first request of a batch waits for company; 0 with max_rows 1: no batching.
        observe: called with (requests, rows) after each forward (metrics).
    """

    def __init__(self, forward: Callable[[list, list], tuple[Any, Any]], *, max_rows: int = 64,
                 max_wait_s: float = 0.005, executor: ThreadPoolExecutor | None = None,
                 observe: Callable[[int, int], None] | None = None) -> None:
        self.forward, self.max_rows, self.max_wait_s = forward, max(1, max_rows), max(0.0, max_wait_s)
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="vopstore-forward")
        self.observe = observe or (lambda requests, rows: None)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, items: Sequence, tasks: Sequence) -> tuple[Any, Any]:
        """This request's rows (n, D) and the snapshot they came from."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(items), list(tasks), future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Pending | None = None
        while True:
            first = carry or await self._queue.get()
            batch, rows, carry = [first], len(first.items), None
            deadline = first.queued_at + self.max_wait_s
            while rows < self.max_rows:
                try:
                    nxt = self._queue.get_nowait() if time.monotonic() >= deadline else \
                        await asyncio.wait_for(self._queue.get(), deadline - time.monotonic())
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if rows + len(nxt.items) > self.max_rows:
                    carry = nxt  # it starts the next batch
                    break
                batch.append(nxt)
                rows += len(nxt.items)
            batch = [p for p in batch if not p.future.done()]  # callers that went away are not computed
            if not batch:
                continue
            try:
                await self._forward(loop, batch, sum(len(p.items) for p in batch))
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
                for p in batch:
                    p.future.done() or p.future.set_exception(exc)

    async def _forward(self, loop, batch: list[_Pending], rows: int) -> None:
        items = [item for p in batch for item in p.items]
        tasks = [task for p in batch for task in p.tasks]
        try:
            out, snapshot = await loop.run_in_executor(self.executor, self.forward, items, tasks)
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                batch[0].future.done() or batch[0].future.set_exception(exc)
                return
            for p in batch:  # e.g. a task unloaded meanwhile: only the requests that name it fail
                await self._forward(loop, [p], len(p.items))
            return
        self.observe(len(batch), rows)
        start = 0
        for p in batch:
            if not p.future.done():
                p.future.set_result((out[start:start + len(p.items)], snapshot))
            start += len(p.items)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
