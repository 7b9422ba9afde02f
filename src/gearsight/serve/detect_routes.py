"""``POST /detect`` (JSON, the request forms of /score) and ``POST /detect/file`` (multipart).

JSON: one item or a list, parsed by serve/parse.py as /score's; an item is ``{"image": "<base64>"}``
or ``{"data": ..., "shape": [H, W, 3]}`` (raw 0..255 pixels as numbers or base64 float32; [3, H, W]
is read as ``"layout": "chw"``, and ``layout`` may say so).
A detector takes images of any size, so there is no preprocessed-tensor form. ``?min_score=`` (0..1)
drops weaker boxes. Present only when the server was started with ``--detector``. Everything but the
body read runs on the engine's decode workers, one image decoded at a time, under the same limits
(max_items before decoding, max_pixels before allocating, the queue bound and deadline).
"""
from __future__ import annotations

import contextlib
import functools
import io
from typing import Any, Callable

import numpy as np
from fastapi import APIRouter, Request, Response
from PIL import Image

from gearsight.serve import openapi
from gearsight.serve.errors import RequestError
from gearsight.serve.parse import check_item, decode_base64, json_items, tensor_item
from gearsight.serve.preprocess import decode_request_image, pixels_from_floats
from gearsight.serve.routes import HEAVY_BYTES, _uploads, client_of, is_heavy, json_response, service

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


def _image_pixels(data: bytes, where: str, max_pixels: int) -> tuple[np.ndarray, float]:
    """Encoded bytes -> (RGB, factor from decoded to sent pixels): a big JPEG decodes at 1/2..1/8 scale."""
    rgb = decode_request_image(data, where, max_pixels)
    with contextlib.suppress(Exception), Image.open(io.BytesIO(data)) as im:  # the header only
        return rgb, max(im.size) / max(rgb.shape[:2])
    return rgb, 1.0


def _item_pixels(item: Any, where: str, max_pixels: int) -> tuple[np.ndarray, float]:
    check_item(item, where)
    if "image" in item:
        return _image_pixels(decode_base64(item["image"], f"{where}.image"), f"{where}.image", max_pixels)
    arr, layout = tensor_item(item, where)
    if layout == "chw" and arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)  # checked below as [H, W, 3]
    return pixels_from_floats(arr, where, max_pixels), 1.0


def _detector(request: Request):
    svc = service(request)
    if svc.detector is None:
        raise RequestError("this server has no detector: start it with `gearsight serve MODEL --detector DET`", 404)
    return svc


def _detect_each(svc, decoders: list[Callable[[], tuple[np.ndarray, float]]], min_score: float) -> list[dict]:
    """Decode, detect and drop one image at a time: one full-size image in memory per request."""
    results = []
    for decode in decoders:
        rgb, factor = decode()
        results.append(svc.detector.detect(rgb, min_score, scale=factor))  # boxes in the sent image's pixels
        del rgb
    return results


@router.post("/detect", openapi_extra=openapi.DETECT)
async def detect(request: Request) -> Response:
    svc = _detector(request)
    min_score = _min_score(request, svc.config.detect_min_score)
    body = await request.body()

    def work() -> tuple[list[dict], bool]:  # on the engine's decode workers: JSON, decode, detect
        items, is_list = json_items(body, svc.config.max_items)
        where = "item[{}]" if is_list else "body"
        decoders = [functools.partial(_item_pixels, it, where.format(i), svc.config.max_pixels)
                    for i, it in enumerate(items)]
        return _detect_each(svc, decoders, min_score), is_list

    results, is_list = await svc.engine.run(work, heavy=is_heavy(body), client=client_of(request))
    return json_response({"results": results} if is_list else results[0])


@router.post("/detect/file", openapi_extra=openapi.FILES)
async def detect_file(request: Request) -> Response:
    svc = _detector(request)
    min_score = _min_score(request, svc.config.detect_min_score)
    uploads = await _uploads(request, svc)
    decoders = [functools.partial(_image_pixels, data, name, svc.config.max_pixels) for name, data in uploads]
    results = await svc.engine.run(lambda: _detect_each(svc, decoders, min_score),
                                   heavy=sum(len(d) for _, d in uploads) > HEAVY_BYTES, client=client_of(request))
    return json_response({"results": [{"filename": name, **r} for (name, _), r in zip(uploads, results)]})
