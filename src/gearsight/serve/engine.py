"""Where model inputs are prepared and run: decode thread pools, then batched or direct inference.

Bounded everywhere: at most ``max_queue`` requests are inside ``score`` (decoding, waiting or
running); one more is a 429 with Retry-After. Each request has a deadline (``timeout_s``; 503
past it), and a non-finite model output is a 422, never a NaN in the JSON.

Bodies over 1 MiB are parsed in a separate process (``offload``): json.loads, base64 and Pillow's
format probing of a 16 MiB body hold the GIL for ~250 ms here, which would stall every other
request; in a niced process of its own they cost the small requests only a share of a core.
"""
from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from gearsight.serve.batching import DynamicBatcher, deliver
from gearsight.serve.errors import RequestError, busy
from gearsight.serve.fairpool import FairPool
from gearsight.serve.model import OnnxModel

T = TypeVar("T")


class Engine:
    """``await engine.score(prepare)``: runs ``prepare()`` (parse + decode) off the event loop, then
    the model, and returns softmax probabilities, one row per prepared input.

    A request that arrives while no other is in flight skips the batcher (one thread hop instead
    of two): there is nobody to batch with, and at concurrency 1 the hop is most of the overhead.
    Requests with big bodies (``heavy``) are prepared on a thread of their own, so a burst of them
    cannot queue in front of the small ones. Decode threads serve client addresses in turn
    (``FairPool``), and one address may hold at most ``max_queue_per_client`` of the ``max_queue``
    places, so one hostile address can neither make the others wait behind its backlog nor fill
    the queue and get them refused.
    """

    def __init__(self, model: OnnxModel, *, batching: bool, max_batch: int, max_wait_ms: float,
                 workers: int, on_batch: Callable[[int], None] = lambda n: None, max_queue: int = 64,
                 timeout_s: float = 30.0, heavy_process: bool = True, max_queue_per_client: int | None = None):
        self.model, self.on_batch = model, on_batch
        self.heavy_process = heavy_process
        self.procs: ProcessPoolExecutor | None = None
        self.max_queue, self.timeout_s = max_queue, timeout_s
        self.max_queue_per_client = max_queue_per_client or max(1, max_queue // 2)
        # Pillow's decode/resize and ONNX Runtime release the GIL, so threads use every core.
        self.pool = FairPool(workers, "gearsight-prep")
        self.heavy_pool = FairPool(1, "gearsight-prep-heavy")
        self.batcher = None
        self.active = 0  # requests inside score() or run()
        self._shares: dict[str, _Share] = {}  # per client address with requests in progress or waiting
        if batching:
            infer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gearsight-infer")
            self.batcher = DynamicBatcher(model.probabilities, infer_thread, max_batch, max_wait_ms / 1000, on_batch,
                                          max_queue=max_queue)

    @property
    def healthy(self) -> bool:
        return self.batcher is None or self.batcher.healthy

    def start(self) -> None:
        # What is loaded by now (model, libraries) lives as long as the server: frozen out of the
        # collector's sight, a full collection scans only what requests allocate. Before, under the
        # hostile bench, 16 gen-2 collections in 12 s took up to 57 ms each, on the event loop.
        gc.collect()
        gc.freeze()
        if self.batcher:
            self.batcher.start()
        if self.heavy_process:
            self.procs = _process_pool()
            self.procs.submit(os.getpid)  # start it now, not on the first big request

    def offload(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` in the heavy-body process (from a decode thread, which waits without the GIL).
        ``fn`` and its arguments must pickle: module-level functions, bytes, Preprocessor."""
        if self.procs is None:
            return fn(*args)
        spilled: list[str] = []
        try:
            args = tuple(_spill(a, spilled) for a in args)
            return self.procs.submit(_unspill_call, fn, args).result()
        except BrokenProcessPool:  # the process died (OOM-killed?): a fresh one for the next request
            self.procs = _process_pool()
            raise busy("the worker for large requests was restarted; retry", status=503) from None
        finally:
            for path in spilled:
                os.unlink(path)

    async def stop(self) -> None:
        if self.batcher:
            await self.batcher.stop()
            self.batcher.executor.shutdown(wait=False)
        self.pool.shutdown()
        self.heavy_pool.shutdown()
        if self.procs is not None:
            self.procs.shutdown(wait=False, cancel_futures=True)  # the worker also exits with this process

    @asynccontextmanager
    async def _admitted(self, client: str):
        """A place in the queue for the request's lifetime, or a 429.

        A client address over its share (``max_queue_per_client``) waits in line for one of its
        places, up to as many again, before it is refused: a client looping on instant 429s kept
        this process's event loop busy answering them (~1,300 a second from 64 hostile clients),
        which delayed everyone; waiting, it sends at the pace it is served.
        """
        if self.active >= self.max_queue:
            raise self._queue_full()
        share = self._shares.get(client) or self._shares.setdefault(client, _Share(self.max_queue_per_client))
        if share.places.locked() and share.waiting >= self.max_queue_per_client:
            raise busy(f"server busy: {self.max_queue_per_client} requests in progress and as many waiting from "
                       f"{client or 'this client'} (limit per client address; {self.max_queue} in all); retry later")
        share.users += 1
        try:
            await self._take_place(share)
            if self.active >= self.max_queue:  # filled by other addresses while this one waited
                share.places.release()
                raise self._queue_full()
            self.active += 1
            try:
                yield
            finally:
                self.active -= 1
                share.places.release()
        finally:
            share.users -= 1
            if not share.users:
                del self._shares[client]

    def _queue_full(self) -> RequestError:
        return busy(f"server busy: {self.active} requests in progress (limit {self.max_queue}); retry later")

    async def _take_place(self, share: "_Share") -> None:
        if not share.places.locked():
            return await share.places.acquire()  # free: no suspension, no trip through the loop
        share.waiting += 1
        try:
            async with self._deadline():
                await share.places.acquire()
        finally:
            share.waiting -= 1

    @asynccontextmanager
    async def _deadline(self):
        # asyncio.timeout, not wait_for: wait_for wraps the work in a Task of its own, two more
        # trips through the event loop per request.
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except TimeoutError:
            raise busy(f"request took over the {self.timeout_s:g} s deadline; retry later", status=503) from None

    async def run(self, fn: Callable[[], T], heavy: bool = False, client: str = "") -> T:
        """``fn()`` on a decode thread, admitted and under the deadline like ``score`` (/detect uses it).
        ``client``: the caller's address, whose turn it waits for on the decode threads."""
        async with self._admitted(client), self._deadline():
            pool = self.heavy_pool if heavy else self.pool
            return await asyncio.wrap_future(pool.submit(client, fn))

    async def score(self, prepare: Callable[[], np.ndarray], heavy: bool = False, client: str = "") -> np.ndarray:
        async with self._admitted(client), self._deadline():
            probs = await self._score(prepare, heavy, client)
        if not np.isfinite(probs).all():
            raise RequestError("the model's output is not a number for this input (values far outside the "
                               "range of preprocessed images?)", status=422)
        return probs

    async def _score(self, prepare: Callable[[], np.ndarray], heavy: bool, client: str) -> np.ndarray:
        """Decode on a pool thread, then run there (alone) or hand the inputs to the batcher's thread.

        The answer comes back through one ``concurrent.futures.Future``: the event loop is met
        once, when it is set. Under a flood of small hostile requests the loop is the contended
        resource, and each extra trip through it (run_in_executor's return, an asyncio batcher)
        waited a full turn of the loop: the normal client's p99 grew with the number of trips.
        """
        result: Future = Future()
        batched = self.batcher is not None and self.active > 1  # alone: nobody to batch with
        if batched:
            self.batcher.expect(1)

        def job() -> None:
            if not result.set_running_or_notify_cancel():  # the deadline passed while it queued
                if batched:
                    self.batcher.expect(-1)
                return
            try:
                batch = prepare()
            except BaseException as exc:  # noqa: BLE001 - the request's error, raised in score()
                return deliver(result, exc=exc)
            finally:
                if batched:
                    self.batcher.expect(-1)
            try:
                if batched:
                    self.batcher.put(batch, result, client)
                else:
                    self.on_batch(len(batch))
                    deliver(result, self.model.probabilities(batch))
            except BaseException as exc:  # noqa: BLE001 - busy batcher, a failing model run
                deliver(result, exc=exc)

        # job() settles `result` itself; the pool's own Future is not awaited (a second trip).
        (self.heavy_pool if heavy else self.pool).submit(client, job)
        return await asyncio.wrap_future(result)


class _Share:
    """One client address's places in the queue."""

    def __init__(self, places: int):
        self.places = asyncio.Semaphore(places)
        self.waiting = 0  # requests waiting for one of the places
        self.users = 0  # requests holding or waiting for one


def _process_pool() -> ProcessPoolExecutor:
    # spawn: forking a process that runs threads is unsafe; niced, so small requests go first.
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(os.getpid(),))


def _worker_init(server_pid: int) -> None:
    os.nice(10)
    threading.Thread(target=_exit_with, args=(server_pid,), daemon=True).start()


def _exit_with(server_pid: int) -> None:
    """A pool worker blocked on its queue outlives a server killed or stopped mid-shutdown: poll."""
    while os.getppid() == server_pid:
        time.sleep(1.0)
    os._exit(0)


# Big bodies go to the worker through a file (tmpfs where there is one), written with one syscall that
# releases the GIL once: pickled through the pool's pipe, a 16 MiB body is ~256 64 KiB writes, each
# taking the GIL back from the event loop (measured: p99 of small requests 10-30x idle, not ~5x).
SPILL_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


@dataclass(frozen=True)
class _Spilled:
    path: str


def _spill(arg, spilled: list[str]):
    if not isinstance(arg, bytes) or len(arg) < 1 << 20:
        return arg
    fd, path = tempfile.mkstemp(prefix="gearsight-body-", dir=SPILL_DIR)
    spilled.append(path)
    with open(fd, "wb") as f:
        f.write(arg)
    return _Spilled(path)


def _unspill_call(fn, args):
    return fn(*(Path(a.path).read_bytes() if isinstance(a, _Spilled) else a for a in args))
