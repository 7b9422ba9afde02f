"""Prometheus metrics (prometheus_client, one registry per app so tests can run several apps).

Requests and errors are counted by route template (``/v2/models/{name}/infer``), never by raw
path, so a scanner hitting random URLs cannot grow the label set.
"""
from __future__ import annotations

import os
import time

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest, multiprocess)
from starlette.routing import Match

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multi-process mode (serve --processes)
disable_created_metrics()  # the *_created timestamp series double the output and nobody graphs them

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self, model_name: str, model_version: str):
        self.registry = CollectorRegistry()
        kw = {"registry": self.registry}
        self.requests = Counter("gearsight_requests", "HTTP requests by route and status", ["endpoint", "status"], **kw)
        self.errors = Counter("gearsight_request_errors", "HTTP requests answered 4xx/5xx", ["endpoint", "status"], **kw)
        self.latency = Histogram("gearsight_request_latency_seconds", "Time from request start to response end",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, **kw)
        self.batch_size = Histogram("gearsight_batch_size", "Inputs per model run", buckets=BATCH_BUCKETS, **kw)
        self.images = Counter("gearsight_images_scored", "Inputs scored by the model", **kw)
        # multiprocess_mode: under `serve --processes N` every worker sets it to 1, and /metrics says 1
        info = Gauge("gearsight_model_info", "The served model", ["name", "version"], multiprocess_mode="max", **kw)
        info.labels(model_name, model_version).set(1)

    def observe_batch(self, n: int) -> None:
        self.batch_size.observe(n)
        self.images.inc(n)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """This process's metrics; under ``serve --processes N`` (prometheus_client's multi-process
        mode: PROMETHEUS_MULTIPROC_DIR set before the workers start) the sum over every worker, so a
        scrape that reaches any one of them counts every request."""
        if not os.environ.get(MULTIPROC_DIR_ENV):
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): times every HTTP request, records its status."""

    def __init__(self, app, metrics: Metrics, routes):
        self.app, self.metrics, self.routes = app, metrics, routes

    def _endpoint(self, scope) -> str:
        route = scope.get("route")
        if route is None:  # answered before routing (auth, size limit): match it ourselves
            route = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        return getattr(route, "path", "other")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.observe_request(self._endpoint(scope), status, time.perf_counter() - start)
