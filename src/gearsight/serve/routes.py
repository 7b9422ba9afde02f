"""gearsight's own endpoints: the web page, /score (JSON), /score/file (multipart), /metadata, /metrics."""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.datastructures import UploadFile

from gearsight import __version__
from gearsight.serve.config import ServeConfig
from gearsight.serve.engine import Engine
from gearsight.serve import openapi
from gearsight.serve.errors import RequestError
from gearsight.serve.metrics import Metrics
from gearsight.serve.detector import OnnxDetector
from gearsight.serve.model import OnnxModel
from gearsight.serve.parse import parse_score
from gearsight.serve.preprocess import Preprocessor

router = APIRouter()
PAGE = resources.files("gearsight.serve").joinpath("static/index.html")
HEAVY_BYTES = 1 << 20  # bodies over this are prepared on the engine's heavy thread


def is_heavy(body: bytes) -> bool:
    return len(body) > HEAVY_BYTES


def _call(fn, *args):
    return fn(*args)


def prepare_files(uploads: list[tuple[str, bytes]], pre: Preprocessor) -> np.ndarray:
    return np.stack([pre.from_image(data, name) for name, data in uploads])


@dataclass
class Service:
    """Everything a request handler needs; one per app, kept in ``app.state.service``."""

    model: OnnxModel
    pre: Preprocessor
    engine: Engine
    metrics: Metrics
    config: ServeConfig
    detector: "OnnxDetector | None" = None  # POST /detect, when started with --detector


def service(request: Request) -> Service:
    return request.app.state.service


def client_of(request: Request) -> str:
    """The address whose turn a request waits for (engine.FairPool); behind a proxy, run uvicorn
    with --proxy-headers/--forwarded-allow-ips so this is the user's, not the proxy's."""
    return request.client.host if request.client else ""


def json_response(payload, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # Serialised here, not by FastAPI's jsonable_encoder: the payload is plain JSON types already.
    # allow_nan=False: NaN/Infinity are not JSON; Engine.score refuses them before this point.
    return Response(json.dumps(payload, allow_nan=False).encode(), status, headers, media_type="application/json")


def top_k(request: Request, svc: Service) -> int:
    text = request.query_params.get("top_k")
    n = len(svc.model.classes)
    if text is None:
        return min(svc.config.top_k, n)
    if not (text.isascii() and text.isdigit() and len(text) < 10) or not 1 <= int(text) <= n:  # isdigit alone takes '²'
        raise RequestError(f"top_k must be an integer from 1 to {n}, got {text!r}")
    return int(text)


def predictions(svc: Service, probs: np.ndarray, k: int) -> list[dict]:
    return [{"label": p.label, "probability": p.probability} for p in svc.model.top_k(probs, k)]


@router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


@router.post("/score", openapi_extra=openapi.SCORE)
async def score(request: Request) -> Response:
    svc, body = service(request), await request.body()
    k = top_k(request, svc)
    sent_list = False

    heavy = is_heavy(body)

    def prepare() -> np.ndarray:
        nonlocal sent_list
        run = svc.engine.offload if heavy else _call
        batch, sent_list = run(parse_score, body, svc.pre, svc.config.max_items)
        return batch

    probs = await svc.engine.score(prepare, heavy=heavy, client=client_of(request))
    results = [{"predictions": predictions(svc, row, k)} for row in probs]
    return json_response({"results": results} if sent_list else results[0])


async def _uploads(request: Request, svc: Service) -> list[tuple[str, bytes]]:
    limit = svc.config.max_items
    async with request.form(max_files=limit, max_fields=limit, max_part_size=svc.config.max_body_bytes) as form:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise RequestError("no file in the request: send multipart/form-data with one or more 'file' fields")
        return [(f.filename or f"file[{i}]", await f.read()) for i, f in enumerate(files)]


@router.post("/score/file", openapi_extra=openapi.FILES)
async def score_file(request: Request) -> Response:
    svc = service(request)
    k = top_k(request, svc)
    uploads = await _uploads(request, svc)

    heavy = sum(len(d) for _, d in uploads) > HEAVY_BYTES

    def prepare() -> np.ndarray:
        return (svc.engine.offload if heavy else _call)(prepare_files, uploads, svc.pre)

    probs = await svc.engine.score(prepare, heavy=heavy, client=client_of(request))
    results = [{"filename": name, "predictions": predictions(svc, row, k)} for (name, _), row in zip(uploads, probs)]
    return json_response({"results": results})


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    svc = service(request)
    spec, cfg = svc.model.spec, svc.config
    return json_response({
        "name": svc.model.name, "version": svc.model.version, "platform": "onnxruntime",
        "arch": spec.arch, "classes": svc.model.classes, "input_shape": list(svc.model.input_shape),
        "preprocessing": {"resize": spec.resize, "pad_fill": spec.pad_fill, "mean": spec.mean, "std": spec.std,
                          "formula": "(pixels / 255 - mean) / std, CHW"},
        "top_k": min(cfg.top_k, len(svc.model.classes)),
        "limits": {"max_body_bytes": cfg.max_body_bytes, "max_pixels": cfg.max_pixels, "max_items": cfg.max_items},
        "batching": {"enabled": cfg.batching, "max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms},
        "gearsight_version": __version__,
        "detector": None if svc.detector is None else {
            "name": svc.detector.name, "version": svc.detector.version, "arch": svc.detector.spec.arch,
            "classes": svc.detector.classes, "min_score": cfg.detect_min_score},
    })


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = service(request).metrics.render()
    return Response(body, media_type=content_type)
