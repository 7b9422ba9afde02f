"""``POST /detect`` (JSON, the request forms of /score) and ``POST /detect/file`` (multipart).

JSON: one item or a list; an item is ``{"image": "<base64>"}`` or ``{"data": ..., "shape": [H, W, 3],
"layout": "hwc"}`` (raw 0..255 pixels as numbers or base64 float32; ``"chw"`` takes [3, H, W]).
A detector takes images of any size, so there is no preprocessed-tensor form. ``?min_score=`` (0..1)
drops weaker boxes. Present only when the server was started with ``--detector``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from gearsight.serve.errors import RequestError
from gearsight.serve.parse import LAYOUTS, _check_dtype, decode_base64, parse_json, tensor
from gearsight.serve.preprocess import decode_request_image, pixels_from_floats
from gearsight.serve.routes import _uploads, json_response, service

router = APIRouter()


def _min_score(request: Request, default: float) -> float:
    text = request.query_params.get("min_score")
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise RequestError(f"min_score must be a number from 0 to 1, got {text!r}")
    return value


def _item_pixels(item: Any, where: str, max_pixels: int) -> np.ndarray:
    if not isinstance(item, dict):
        raise RequestError(f"{where}: expected an object with 'image' or 'data', got {type(item).__name__}")
    if "image" in item:
        return decode_request_image(decode_base64(item["image"], f"{where}.image"), f"{where}.image", max_pixels)
    if "data" not in item or "shape" not in item:
        raise RequestError(f"{where}: needs 'image' (base64) or 'data' + 'shape' (float32 pixels); got keys {sorted(item)}")
    _check_dtype(item, where)
    layout = item.get("layout", "hwc")
    if layout not in LAYOUTS:
        raise RequestError(f"{where}.layout: must be one of {LAYOUTS}, got {layout!r}")
    arr = tensor(item["data"], item["shape"], where)
    if layout == "chw" and arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)  # checked below as [H, W, 3]
    return pixels_from_floats(arr, where, max_pixels)


def _detector(request: Request):
    svc = service(request)
    if svc.detector is None:
        raise RequestError("this server has no detector: start it with `gearsight serve MODEL --detector DET`", 404)
    return svc


async def _run(svc, images: list[np.ndarray], min_score: float) -> list[dict]:
    # One image per ONNX Runtime call (the graph takes one image of any size); off the event loop.
    return await run_in_threadpool(lambda: [svc.detector.detect(im, min_score) for im in images])


@router.post("/detect")
async def detect(request: Request) -> Response:
    svc = _detector(request)
    min_score = _min_score(request, svc.config.detect_min_score)
    payload = parse_json(await request.body())
    is_list = isinstance(payload, list)
    items = payload if is_list else [payload]
    if not items:
        raise RequestError("empty list: send at least one item")
    if len(items) > svc.config.max_items:
        raise RequestError(f"{len(items)} items in one request; the limit is {svc.config.max_items}", status=413)
    where = "item[{}]" if is_list else "body"
    images = await run_in_threadpool(
        lambda: [_item_pixels(it, where.format(i), svc.config.max_pixels) for i, it in enumerate(items)])
    results = await _run(svc, images, min_score)
    return json_response({"results": results} if is_list else results[0])


@router.post("/detect/file")
async def detect_file(request: Request) -> Response:
    svc = _detector(request)
    min_score = _min_score(request, svc.config.detect_min_score)
    uploads = await _uploads(request, svc)
    images = await run_in_threadpool(
        lambda: [decode_request_image(data, name, svc.config.max_pixels) for name, data in uploads])
    results = await _run(svc, images, min_score)
    return json_response({"results": [{"filename": name, **r} for (name, _), r in zip(uploads, results)]})
