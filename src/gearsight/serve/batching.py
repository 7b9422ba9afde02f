"""Dynamic batching: requests that arrive together share one model run.

A worker thread takes the first queued input, then keeps collecting until ``max_batch`` rows or
``max_wait_s`` have passed, runs the batch and hands each request its rows. It waits only while
other requests are still being decoded (``expecting``): a lone request at low load runs at once,
with no added latency, and under load batches form from requests decoded while the previous batch ran.

Why threads and not an asyncio task: a request's result travels decode thread -> this queue ->
the worker -> the request's ``concurrent.futures.Future`` without touching the event loop, which
it meets once, when the answer is ready. An asyncio worker cost four trips through the loop (decode
done, queue get, run done, result); with 64 hostile clients keeping the loop busy each trip waited
a full turn of it, and the normal client's p99 was 18.9x its idle p99 (docs/BENCHMARKS.md,
"Serving under hostile load").

Its queue serves client addresses in turn (``FairQueue``): a batch takes one input of each
client with inputs waiting before a second of any, so a client with 32 requests queued does not
put them all in front of another's one.

The queue is bounded (a full one is a 429, never unbounded memory), and the worker is supervised:
if it dies (a MemoryError in ``np.concatenate``, a bug), the requests in its hands get the error,
``healthy`` is false (readiness says so) until it has been restarted, and the queue carries on.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Executor, Future, InvalidStateError
from typing import Callable

import numpy as np

from gearsight.serve.errors import busy
from gearsight.serve.fairpool import FairQueue

log = logging.getLogger("gearsight.serve")
Item = tuple[np.ndarray, Future]
_STOP = object()  # queued by stop(): the worker returns


def deliver(future: Future, result=None, exc: BaseException | None = None) -> None:
    """Set a result or an exception unless the request gave up (deadline, client gone) first."""
    try:
        if exc is not None:
            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled by its request's deadline
        pass


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], executor: Executor, max_batch: int,
                 max_wait_s: float, on_batch: Callable[[int], None] = lambda n: None, max_queue: int = 1024,
                 restart_delay_s: float = 0.1):
        """``executor``: a one-thread pool the worker loop runs on (for its whole life)."""
        self.run, self.executor = run, executor
        self.max_batch, self.max_wait_s, self.on_batch = max_batch, max_wait_s, on_batch
        self.restart_delay_s = restart_delay_s
        self.expecting = 0  # requests being decoded that will submit soon (expect() changes it)
        self.healthy = False  # the worker is running (readiness)
        self.deaths = 0  # times the worker died and was restarted
        self._lock = threading.Lock()
        self._queue: FairQueue[Item | object] = FairQueue(maxsize=max_queue)
        self._carry: Item | None = None  # an item that did not fit the previous batch
        self._in_hand: list[Item] = []  # the batch being collected or run
        self._stopping = False
        self._task: Future | None = None

    def start(self) -> None:
        self._stopping = False
        self._task = self.executor.submit(self._supervise)

    async def stop(self) -> None:
        self._stopping = True
        try:
            self._queue.put("\0stop", _STOP)
        except queue.Full:
            pass  # the worker sees _stopping after its current batch
        if self._task is not None:
            await asyncio.wait([asyncio.wrap_future(self._task)], timeout=5.0)
        self.healthy = False

    def expect(self, n: int) -> None:
        """+1 when a request starts decoding for this batcher, -1 when it has submitted or failed."""
        with self._lock:
            self.expecting += n

    def put(self, x: np.ndarray, future: Future, client: str = "") -> None:
        """Thread-safe: ``x`` (``k x ...`` inputs of one request) is run in ``client``'s turn;
        ``future`` gets its ``k`` rows."""
        try:
            self._queue.put(client, (x, future))
        except queue.Full:
            raise busy(f"server busy: {self._queue.maxsize} inputs are waiting for the model; retry later") from None

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """``put`` from the event loop, awaiting the rows."""
        future: Future = Future()
        self.put(x, future)
        return await asyncio.wrap_future(future)

    def _supervise(self) -> None:
        while not self._stopping:
            self.healthy = True
            try:
                self._work()
            except BaseException as exc:  # noqa: BLE001 - MemoryError or a bug: fail this batch, restart
                # Readiness and the count first: whoever the failure wakes sees the worker as down.
                self.healthy, self.deaths = False, self.deaths + 1
                log.error("batching worker died (%s: %s); restarting", type(exc).__name__, exc)
                for _, future in self._in_hand:
                    deliver(future, exc=exc)
                self._in_hand = []
                time.sleep(self.restart_delay_s)

    def _next(self, deadline: float) -> Item | None:
        """The next queued item; waits until ``deadline`` only while requests are still decoding."""
        wait = deadline - time.monotonic() if self.expecting > 0 else 0.0
        try:
            return self._queue.get(max(wait, 0.0))
        except queue.Empty:
            return None

    def _collect(self) -> list[Item] | None:
        first, self._carry = self._carry or self._queue.get(), None
        if first is _STOP:
            return None
        items, rows = [first], len(first[0])
        self._in_hand = items
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch:
            item = self._next(deadline)
            if item is _STOP:
                self._stopping = True
                break
            if item is None:
                break
            if rows + len(item[0]) > self.max_batch:
                self._carry = item
                break
            items.append(item)
            rows += len(item[0])
        return items

    def _work(self) -> None:
        while not self._stopping:
            items = self._collect()
            if items is None:
                return
            batch = items[0][0] if len(items) == 1 else np.concatenate([x for x, _ in items])
            self.on_batch(len(batch))
            try:
                out = self.run(batch)
            except Exception as exc:  # noqa: BLE001 - delivered to each waiting request
                for _, future in items:
                    deliver(future, exc=exc)
                self._in_hand = []
                continue
            start = 0
            for x, future in items:
                deliver(future, out[start : start + len(x)])
                start += len(x)
            self._in_hand = []
