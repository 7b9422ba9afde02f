"""The scoring app: wires model, preprocessing, engine, metrics, guards and routes together.

``create_app(path)`` takes an exported .onnx file (see ``gearsight export``) and never imports
torch; ``run(...)`` serves it with uvicorn. Every client mistake is a 4xx ``{"error": "..."}``.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from contextlib import asynccontextmanager
from dataclasses import asdict, replace

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from gearsight import __version__
from gearsight.serve.config import ServeConfig
from gearsight.serve.engine import Engine
from gearsight.serve.errors import RequestError
from gearsight.serve.guards import ApiKeyMiddleware, BodyLimitMiddleware
from gearsight.serve.metrics import MULTIPROC_DIR_ENV, Metrics, MetricsMiddleware
from gearsight.serve.model import OnnxModel
from gearsight.serve.preprocess import Preprocessor
from gearsight.serve import detect_routes, routes, v2
from gearsight.serve.detector import OnnxDetector
from gearsight.serve.routes import Service, json_response

log = logging.getLogger("gearsight.serve")

# Paths a load balancer or a browser reaches without the API key.
OPEN_PATHS = frozenset({"/", "/favicon.ico", "/v2/health/live", "/v2/health/ready"})


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return json_response({"error": exc.message}, exc.status, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # 404, 405, multipart parse errors
        return json_response({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return json_response({"error": f"invalid request: {exc.errors()}"}, 400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):  # a bug, not a client mistake
        log.exception("unhandled error on %s", request.url.path)
        return json_response({"error": f"internal error ({type(exc).__name__})"}, 500)


def create_app(model: str | os.PathLike | OnnxModel, config: ServeConfig | None = None,
               detector: str | os.PathLike | OnnxDetector | None = None) -> FastAPI:
    """``detector``: an exported detector .onnx (``gearsight detect export``) adds POST /detect."""
    config = config or ServeConfig()
    if not isinstance(model, OnnxModel):
        model = OnnxModel(model, config.name, config.threads)
    if detector is not None and not isinstance(detector, OnnxDetector):
        detector = OnnxDetector(detector, config.threads)
    config = replace(config, max_pixels=config.pixels_for(model.spec.input_size))
    metrics = Metrics(model.name, model.version)
    engine = Engine(model, batching=config.batching, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                    workers=config.workers, on_batch=metrics.observe_batch, max_queue=config.max_queue,
                    timeout_s=config.timeout_s, max_queue_per_client=config.max_queue_per_client)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        await engine.stop()

    # No /docs or /redoc: they load their JavaScript from a CDN; the API is documented in docs/SERVING.md.
    # telemetry off: /metrics is ours (Prometheus); FastAPI's OpenTelemetry hook otherwise looks up its
    # providers (and the environment) on every request, ~3% of the event loop's time under load (py-spy).
    app = FastAPI(title="gearsight scoring", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.service = Service(model, Preprocessor(model.spec, config.max_pixels), engine, metrics, config, detector)
    app.include_router(routes.router)
    app.include_router(v2.router)
    app.include_router(detect_routes.router)
    _error_handlers(app)
    # add_middleware puts each new one outermost: metrics sees the guards' 401/413 answers too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, budget_bytes=config.body_budget_bytes)
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, open_paths=OPEN_PATHS)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    return app


#: What each of ``--processes N`` workers serves (model, detector, ServeConfig as JSON): uvicorn starts
#: them as fresh interpreters that import the app by name, so the settings travel in the environment.
WORKER_ENV = "GEARSIGHT_SERVE_WORKER"


def run(model: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
        access_log: bool = False, detector: str | os.PathLike | None = None, http: str = "auto") -> None:
    """Serve with uvicorn; ``http``: uvicorn's HTTP parser (auto: httptools where installed, else h11).

    ``config.processes`` > 1: that many worker processes share the port (uvicorn's supervisor
    restarts one that dies), each with its share of the queue and body bounds (``per_process``);
    /metrics adds up every worker's counts.
    """
    import uvicorn

    config = config or ServeConfig()
    # Access logs cost ~0.1 ms a request on a 2-core box; /metrics counts requests instead.
    # limit_concurrency bounds connections + requests (uvicorn answers 503 past it); on SIGTERM,
    # in-flight requests get timeout_graceful_shutdown seconds, then the process exits regardless.
    worker = config.per_process()  # each of N workers gets 1/N of the server-wide bounds
    options = dict(host=host, port=port, access_log=access_log, log_level="info", http=http, timeout_keep_alive=5,
                   limit_concurrency=worker.limit_concurrency, timeout_graceful_shutdown=config.shutdown_timeout_s)
    if config.processes <= 1:
        return uvicorn.run(_quiet_pillow(create_app(model, config, detector)), **options)
    OnnxModel(model, config.name, config.threads)  # a bad file fails here, once, not in every worker
    if detector is not None:
        OnnxDetector(detector, config.threads)
    with tempfile.TemporaryDirectory(prefix="gearsight-metrics-") as metrics_dir:
        os.environ[WORKER_ENV] = json.dumps({"model": str(model), "detector": detector and str(detector),
                                             "config": asdict(worker)})
        os.environ[MULTIPROC_DIR_ENV] = metrics_dir
        uvicorn.run("gearsight.serve.app:worker_app", factory=True, workers=config.processes, **options)


def worker_app() -> FastAPI:
    """The app of one ``--processes`` worker, from the settings ``run`` put in WORKER_ENV."""
    job = json.loads(os.environ[WORKER_ENV])
    return _quiet_pillow(create_app(job["model"], ServeConfig(**job["config"]), job["detector"]))


def _quiet_pillow(app: FastAPI) -> FastAPI:
    from PIL import Image

    # Our max_pixels check runs before decoding; Pillow's own bomb warning (at 89 MP) is log noise.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    return app
