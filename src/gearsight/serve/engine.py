"""Where model inputs are prepared and run: a decode thread pool, then batched or direct inference."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from gearsight.serve.batching import DynamicBatcher
from gearsight.serve.model import OnnxModel


class Engine:
    """``await engine.score(prepare)``: runs ``prepare()`` (parse + decode) off the event loop, then
    the model, and returns softmax probabilities, one row per prepared input.

    A request that arrives while no other is in flight skips the batcher (one thread hop instead
    of two): there is nobody to batch with, and at concurrency 1 the hop is most of the overhead.
    """

    def __init__(self, model: OnnxModel, *, batching: bool, max_batch: int, max_wait_ms: float,
                 workers: int, on_batch: Callable[[int], None] = lambda n: None):
        self.model, self.on_batch = model, on_batch
        # Pillow's decode/resize and ONNX Runtime release the GIL, so threads use every core.
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gearsight-prep")
        self.batcher = None
        self.active = 0  # requests inside score()
        if batching:
            infer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gearsight-infer")
            self.batcher = DynamicBatcher(model.probabilities, infer_thread, max_batch, max_wait_ms / 1000, on_batch)

    def start(self) -> None:
        if self.batcher:
            self.batcher.start()

    async def stop(self) -> None:
        if self.batcher:
            await self.batcher.stop()
            self.batcher.executor.shutdown(wait=False)
        self.pool.shutdown(wait=False)

    def _direct(self, prepare: Callable[[], np.ndarray]) -> np.ndarray:
        batch = prepare()
        self.on_batch(len(batch))
        return self.model.probabilities(batch)

    async def score(self, prepare: Callable[[], np.ndarray]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        self.active += 1
        try:
            if self.batcher is None or self.active == 1:  # prepare and run in one hop
                return await loop.run_in_executor(self.pool, self._direct, prepare)
            self.batcher.expecting += 1
            try:
                batch = await loop.run_in_executor(self.pool, prepare)
            finally:
                self.batcher.expecting -= 1
            return await self.batcher.submit(batch)
        finally:
            self.active -= 1
