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
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from gearsight.serve.batching import DynamicBatcher
from gearsight.serve.errors import RequestError, busy
from gearsight.serve.model import OnnxModel

T = TypeVar("T")


class Engine:
    """``await engine.score(prepare)``: runs ``prepare()`` (parse + decode) off the event loop, then
    the model, and returns softmax probabilities, one row per prepared input.

    A request that arrives while no other is in flight skips the batcher (one thread hop instead
    of two): there is nobody to batch with, and at concurrency 1 the hop is most of the overhead.
    Requests with big bodies (``heavy``) are prepared on a thread of their own, so a burst of them
    cannot queue in front of the small ones.
    """

    def __init__(self, model: OnnxModel, *, batching: bool, max_batch: int, max_wait_ms: float,
                 workers: int, on_batch: Callable[[int], None] = lambda n: None, max_queue: int = 64,
                 timeout_s: float = 30.0, heavy_process: bool = True):
        self.model, self.on_batch = model, on_batch
        self.heavy_process = heavy_process
        self.procs: ProcessPoolExecutor | None = None
        self.max_queue, self.timeout_s = max_queue, timeout_s
        # Pillow's decode/resize and ONNX Runtime release the GIL, so threads use every core.
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gearsight-prep")
        self.heavy_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gearsight-prep-heavy")
        self.batcher = None
        self.active = 0  # requests inside score() or run()
        if batching:
            infer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gearsight-infer")
            self.batcher = DynamicBatcher(model.probabilities, infer_thread, max_batch, max_wait_ms / 1000, on_batch,
                                          max_queue=max_queue)

    @property
    def healthy(self) -> bool:
        return self.batcher is None or self.batcher.healthy

    def start(self) -> None:
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
        self.pool.shutdown(wait=False)
        self.heavy_pool.shutdown(wait=False)
        if self.procs is not None:
            self.procs.shutdown(wait=False, cancel_futures=True)  # the worker also exits with this process

    def _direct(self, prepare: Callable[[], np.ndarray]) -> np.ndarray:
        batch = prepare()
        self.on_batch(len(batch))
        return self.model.probabilities(batch)

    def _admit(self) -> None:
        if self.active >= self.max_queue:
            raise busy(f"server busy: {self.active} requests in progress (limit {self.max_queue}); retry later")

    async def _deadline(self, work) -> T:
        try:
            return await asyncio.wait_for(work, self.timeout_s)
        except asyncio.TimeoutError:
            raise busy(f"request took over the {self.timeout_s:g} s deadline; retry later", status=503) from None

    async def run(self, fn: Callable[[], T], heavy: bool = False) -> T:
        """``fn()`` on a decode thread, admitted and under the deadline like ``score`` (/detect uses it)."""
        self._admit()
        self.active += 1
        try:
            pool = self.heavy_pool if heavy else self.pool
            return await self._deadline(asyncio.get_running_loop().run_in_executor(pool, fn))
        finally:
            self.active -= 1

    async def score(self, prepare: Callable[[], np.ndarray], heavy: bool = False) -> np.ndarray:
        self._admit()
        self.active += 1
        try:
            probs = await self._deadline(self._score(prepare, heavy))
        finally:
            self.active -= 1
        if not np.isfinite(probs).all():
            raise RequestError("the model's output is not a number for this input (values far outside the "
                               "range of preprocessed images?)", status=422)
        return probs

    async def _score(self, prepare: Callable[[], np.ndarray], heavy: bool) -> np.ndarray:
        loop = asyncio.get_running_loop()
        pool = self.heavy_pool if heavy else self.pool
        if self.batcher is None or self.active == 1:  # prepare and run in one hop
            return await loop.run_in_executor(pool, self._direct, prepare)
        self.batcher.expecting += 1
        try:
            batch = await loop.run_in_executor(pool, prepare)
        finally:
            self.batcher.expecting -= 1
        return await self.batcher.submit(batch)


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
