"""Serving settings, in one place with their units."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

API_KEY_ENV = "GEARSIGHT_API_KEY"
MAX_PIXELS_CAP = 40_000_000  # a 40 MP photo decodes to 120 MB; no model here needs more


def default_max_pixels(input_size: int) -> int:
    """Declared width*height one image may have, sized to the model: (32 x input side)^2, at least
    4 MP, at most 40 MP (64 px model: 4.2 MP; 224 px: 40 MP). A JPEG over it is decoded at 1/2..1/8
    scale (Pillow's draft) when that fits; anything else over it is a 413 before decoding."""
    return int(min(MAX_PIXELS_CAP, max(4_000_000, (32 * input_size) ** 2)))


@dataclass
class ServeConfig:
    name: str | None = None  # model name in URLs and metadata; default: the file's stem
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)
    max_body_bytes: int = 16 * 1024 * 1024  # a batch of a few full-size photos as base64
    max_pixels: int | None = None  # declared width*height of one image; None: default_max_pixels(model)
    max_items: int = 64  # images or tensors in one request
    top_k: int = 5  # default predictions per image; ?top_k=N overrides
    batching: bool = True  # dynamic batching; measured in docs/BENCHMARKS.md "Serving"
    max_batch: int = 32  # inputs per model run
    max_wait_ms: float = 2.0  # longest a batch waits for requests still being decoded
    workers: int = 2  # decode threads in all (Pillow releases the GIL): one per core
    processes: int = 1  # server processes sharing the port (uvicorn workers); each holds the model and
    # its own decode threads. One process's event loop and GIL cap it below 2 busy cores: 2 served
    # ~1.3x the requests of 1 at concurrency 32 on the 2-core box (docs/BENCHMARKS.md "Serving")
    threads: int = 1  # ONNX Runtime intra-op threads per run
    detect_min_score: float = 0.3  # /detect drops weaker boxes; ?min_score=N overrides
    # Back-pressure (docs/SERVING.md "Limits"): past these a request is a 429 with Retry-After.
    max_queue: int = 64  # requests decoding, waiting or running at once
    max_queue_per_client: int | None = None  # of those, from one client address; None: max_queue // 2
    # (so one address cannot fill the queue; behind a proxy every request has the proxy's address)
    body_budget_bytes: int = 64 * 1024 * 1024  # bodies over 1 MiB in flight at once, bytes
    limit_concurrency: int = 512  # uvicorn: connections + requests at once (over it: uvicorn's own 503)
    timeout_s: float = 30.0  # per-request deadline from decode to answer (503 past it)
    shutdown_timeout_s: float = 10.0  # on SIGTERM, in-flight requests get this long to finish

    def pixels_for(self, input_size: int) -> int:
        return self.max_pixels if self.max_pixels is not None else default_max_pixels(input_size)

    def per_process(self) -> "ServeConfig":
        """One worker's share of the server-wide bounds under ``processes`` > 1: the queue, the
        per-client share, the body budget, uvicorn's concurrency limit and the decode threads stay
        totals for the server, so N workers admit what one process would, not N times as much, and
        run no more threads (2 processes x 1 decode thread served 708 req/s at c=32, x 2 threads 670,
        1 process x 2 threads 544: one interleaved run, shared machine)."""
        n = self.processes
        if n <= 1:
            return self

        def share(total: int) -> int:
            return max(1, -(-total // n))  # rounded up

        return replace(self, max_queue=share(self.max_queue), limit_concurrency=share(self.limit_concurrency),
                       workers=share(self.workers),
                       max_queue_per_client=self.max_queue_per_client and share(self.max_queue_per_client),
                       body_budget_bytes=max(self.max_body_bytes, share(self.body_budget_bytes)))
