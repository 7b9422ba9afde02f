"""Dynamic batching: requests that arrive together share one model run.

A worker task takes the first queued input, then keeps collecting until ``max_batch`` rows or
``max_wait_s`` have passed, and runs the batch on a dedicated thread (ONNX Runtime releases the
GIL, so the event loop keeps parsing and decoding meanwhile). It waits only while other requests
are still being decoded (``expecting``): a lone request at low load runs at once, with no added
latency, and under load batches form from requests decoded while the previous batch ran.

The queue is bounded (a full one is a 429, never unbounded memory), and the worker is supervised:
if it dies (a MemoryError in ``np.concatenate``, a bug), the requests in its hands get the error,
``healthy`` is false (readiness says so) until it has been restarted, and the queue carries on.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor
from typing import Callable

import numpy as np

from gearsight.serve.errors import busy

log = logging.getLogger("gearsight.serve")
Item = tuple[np.ndarray, asyncio.Future]


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], executor: Executor, max_batch: int,
                 max_wait_s: float, on_batch: Callable[[int], None] = lambda n: None, max_queue: int = 1024,
                 restart_delay_s: float = 0.1):
        self.run, self.executor = run, executor
        self.max_batch, self.max_wait_s, self.on_batch = max_batch, max_wait_s, on_batch
        self.restart_delay_s = restart_delay_s
        self.expecting = 0  # requests being decoded that will submit soon
        self.healthy = False  # the worker is running (readiness)
        self.deaths = 0  # times the worker died and was restarted
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=max_queue)
        self._carry: Item | None = None  # an item that did not fit the previous batch
        self._in_hand: list[Item] = []  # the batch being collected or run
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.healthy = False

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """``x``: ``k x ...`` inputs of one request -> its ``k`` output rows."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((x, future))
        except asyncio.QueueFull:
            raise busy(f"server busy: {self._queue.maxsize} inputs are waiting for the model; retry later") from None
        return await future

    async def _supervise(self) -> None:
        while True:
            self.healthy = True
            try:
                await self._work()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - MemoryError or a bug: fail this batch, restart
                self.healthy, self.deaths = False, self.deaths + 1
                log.error("batching worker died (%s: %s); restarting", type(exc).__name__, exc)
                self._fail(self._in_hand, exc)
                self._in_hand = []
                await asyncio.sleep(self.restart_delay_s)

    @staticmethod
    def _fail(items: list[Item], exc: BaseException) -> None:
        for _, future in items:
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))

    async def _next(self, deadline: float) -> Item | None:
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._queue.get_nowait()
        timeout = deadline - asyncio.get_running_loop().time()
        if self.expecting <= 0 or timeout <= 0:
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            return await asyncio.wait_for(self._queue.get(), timeout)
        return None

    async def _collect(self) -> list[Item]:
        first, self._carry = self._carry or await self._queue.get(), None
        items, rows = [first], len(first[0])
        self._in_hand = items
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while rows < self.max_batch:
            item = await self._next(deadline)
            if item is None:
                break
            if rows + len(item[0]) > self.max_batch:
                self._carry = item
                break
            items.append(item)
            rows += len(item[0])
        return items

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            batch = items[0][0] if len(items) == 1 else np.concatenate([x for x, _ in items])
            self.on_batch(len(batch))
            try:
                out = await loop.run_in_executor(self.executor, self.run, batch)
            except Exception as exc:  # noqa: BLE001 - delivered to each waiting request
                self._fail(items, exc)
                continue
            start = 0
            for x, future in items:
                if not future.done():  # the client may have gone away
                    future.set_result(out[start : start + len(x)])
                start += len(x)
            self._in_hand = []
