"""Clients served in turn: one FIFO per client address, taken round-robin (decode threads, model runs).

Why not ThreadPoolExecutor / queue.Queue: one FIFO serves requests in arrival order, so a client
that keeps 32 cheap requests in flight (40000 x 1 PNGs, decompression-bomb headers that end in a
413) puts 32 jobs in front of every other client's next one, first on the decode threads, then in
the model's batch queue. Measured with bench/bench_serve_hostile.py, 64 such clients made the
normal client's p99 18.9x its idle p99. Taken in turn, a client waits for at most one item of each
other client with work queued, however many each has queued. The standard library has no fair
queue or executor, hence this module.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Thread-safe; ``get`` takes the oldest item of the client whose turn it is."""

    def __init__(self, maxsize: int = 0):
        self.maxsize = maxsize  # items in all; 0 = unbounded
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._size = 0
        self._ready = threading.Condition()

    def qsize(self) -> int:
        return self._size

    def put(self, client: str, item: T) -> None:
        """Raises queue.Full when ``maxsize`` items are waiting."""
        with self._ready:
            if self.maxsize and self._size >= self.maxsize:
                raise queue.Full
            self._queues.setdefault(client, deque()).append(item)
            self._size += 1
            self._ready.notify()

    def get(self, timeout: float | None = None) -> T:
        """Blocks (up to ``timeout`` s, then queue.Empty) until an item is there."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._queues:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty
                self._ready.wait(left)
            client, items = self._queues.popitem(last=False)  # the client whose turn it is...
            item = items.popleft()
            if items:
                self._queues[client] = items  # ...goes to the back of the line
            self._size -= 1
            return item

    def get_nowait(self) -> T:
        return self.get(timeout=0)


_STOP = object()


class FairPool:
    """Worker threads that run submitted functions from a FairQueue."""

    def __init__(self, workers: int, name: str = "gearsight-prep"):
        self._jobs: FairQueue[Callable[[], None] | object] = FairQueue()
        self._stopping = False
        self._threads = [threading.Thread(target=self._worker, name=f"{name}_{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, client: str, fn: Callable[[], object]) -> Future:
        """Run ``fn()`` on a worker, in ``client``'s turn; its result or exception in the Future."""
        if self._stopping:
            raise RuntimeError("the decode pool is shut down")
        future: Future = Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():  # cancelled while it queued
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - the caller's to raise
                future.set_exception(exc)

        self._jobs.put(client, job)
        return future

    def _worker(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            job()

    def shutdown(self) -> None:
        """Each worker exits at its next turn (daemon threads: never block exit); jobs left queued do not run."""
        self._stopping = True
        for _ in self._threads:
            self._jobs.put("\0stop", _STOP)
