"""Serving settings, in one place with their units."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

API_KEY_ENV = "GEARSIGHT_API_KEY"


@dataclass
class ServeConfig:
    name: str | None = None  # model name in URLs and metadata; default: the file's stem
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)
    max_body_bytes: int = 16 * 1024 * 1024  # a batch of a few full-size photos as base64
    max_pixels: int = 40_000_000  # declared width*height of one image (a 40 MP photo decodes to 120 MB)
    max_items: int = 64  # images or tensors in one request
    top_k: int = 5  # default predictions per image; ?top_k=N overrides
    batching: bool = True  # dynamic batching; measured in docs/BENCHMARKS.md "Serving"
    max_batch: int = 32  # inputs per model run
    max_wait_ms: float = 2.0  # longest a batch waits for requests still being decoded
    workers: int = 2  # decode threads (Pillow releases the GIL): one per core
    threads: int = 1  # ONNX Runtime intra-op threads per run
    detect_min_score: float = 0.3  # /detect drops weaker boxes; ?min_score=N overrides
