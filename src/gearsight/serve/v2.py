"""Open Inference Protocol (KServe v2 / Triton) REST endpoints, so v2 clients and gateways work unchanged.

Inputs: ``input`` FP32 ``[N, 3, S, S]`` preprocessed like training, or ``image`` BYTES ``[N]``
holding base64-encoded JPEG/PNG files. Outputs: ``probabilities`` FP32 ``[N, classes]`` and
``label`` BYTES ``[N]`` (the top-1 class name). Triton's binary tensor data extension (what
``tritonclient`` sends by default) is read and, when asked for, written: raw FP32 / length-prefixed
BYTES after the JSON, whose length is the Inference-Header-Content-Length header.
"""
from __future__ import annotations

import json

import numpy as np
from fastapi import APIRouter, Request, Response

from gearsight import __version__
from gearsight.serve.errors import RequestError
from gearsight.serve import openapi
from gearsight.serve.parse import V2Request, parse_v2
from gearsight.serve.routes import Service, _call, client_of, is_heavy, json_response, service

router = APIRouter(prefix="/v2")
MODEL_PATHS = ("/models/{name}", "/models/{name}/versions/{version}")


def checked(request: Request, name: str, version: str | None = None) -> Service:
    svc = service(request)
    if name != svc.model.name:
        raise RequestError(f"unknown model {name!r}; this server serves {svc.model.name!r}", status=404)
    if version is not None and version != svc.model.version:
        raise RequestError(f"unknown version {version!r} of {name!r}; served: {svc.model.version!r}", status=404)
    return svc


@router.get("")
async def server_metadata() -> Response:
    return json_response({"name": "gearsight", "version": __version__, "extensions": ["binary_tensor_data"]})


@router.get("/health/live")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    # The model is loaded before the app accepts requests; the batching worker may have died.
    healthy = service(request).engine.healthy
    return json_response({"ready": healthy}, 200 if healthy else 503)


async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    svc = checked(request, name, version)
    size, n = svc.model.spec.input_size, len(svc.model.classes)
    return json_response({
        "name": svc.model.name, "versions": [svc.model.version], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, size, size]},
                   {"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, n]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]}],
        "parameters": {"classes": svc.model.classes},
    })


async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    svc = checked(request, name, version)
    return json_response({"name": svc.model.name, "ready": svc.engine.healthy}, 200 if svc.engine.healthy else 503)


HEADER_LENGTH = "Inference-Header-Content-Length"


def _header_length(request: Request) -> int | None:
    text = request.headers.get(HEADER_LENGTH)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) < 12):
        raise RequestError(f"{HEADER_LENGTH}: expected a byte count, got {text[:40]!r}")
    return int(text)


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


def _answer(svc: Service, req: V2Request, probs: np.ndarray) -> Response:
    """JSON, or with Triton's binary extension (outputs asked as binary_data) JSON + raw tensors."""
    labels = [svc.model.classes[i] for i in probs.argmax(axis=1)]
    values = {"probabilities": ("FP32", list(probs.shape), probs.ravel().tolist,
                                lambda: probs.astype("<f4").tobytes()),
              "label": ("BYTES", [len(probs)], lambda: labels, lambda: _bytes_tensor([s.encode() for s in labels]))}
    outputs, blobs = [], []
    for name in req.outputs:
        datatype, shape, as_json, as_binary = values[name]
        out = {"name": name, "datatype": datatype, "shape": shape}
        if req.binary[name]:
            blobs.append(as_binary())
            out["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            out["data"] = as_json()
        outputs.append(out)
    answer = {"model_name": svc.model.name, "model_version": svc.model.version, "outputs": outputs}
    if req.id is not None:
        answer["id"] = req.id
    if not blobs:
        return json_response(answer)
    head = json.dumps(answer, allow_nan=False).encode()
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(head))})


async def infer(request: Request, name: str, version: str | None = None) -> Response:
    svc = checked(request, name, version)
    header_length = _header_length(request)
    body = await request.body()
    parsed: list[V2Request] = []

    heavy = is_heavy(body)

    def prepare() -> np.ndarray:
        run = svc.engine.offload if heavy else _call
        parsed.append(run(parse_v2, body, svc.pre, svc.config.max_items, header_length))
        return parsed[0].batch

    probs = await svc.engine.score(prepare, heavy=heavy, client=client_of(request))
    return _answer(svc, parsed[0], probs)


for _path in MODEL_PATHS:
    router.add_api_route(_path, model_metadata, methods=["GET"])
    router.add_api_route(_path + "/ready", model_ready, methods=["GET"])
    router.add_api_route(_path + "/infer", infer, methods=["POST"], openapi_extra=openapi.V2_INFER)
