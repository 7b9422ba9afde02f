"""Open Inference Protocol (KServe v2 / Triton) REST endpoints, so v2 clients and gateways work unchanged.

Inputs: ``input`` FP32 ``[N, 3, S, S]`` preprocessed like training, or ``image`` BYTES ``[N]``
holding base64-encoded JPEG/PNG files. Outputs: ``probabilities`` FP32 ``[N, classes]`` and
``label`` BYTES ``[N]`` (the top-1 class name).
"""
from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request, Response

from gearsight import __version__
from gearsight.serve.errors import RequestError
from gearsight.serve.parse import parse_v2
from gearsight.serve.routes import Service, json_response, service

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
    return json_response({"name": "gearsight", "version": __version__, "extensions": []})


@router.get("/health/live")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready")
async def ready() -> Response:
    return json_response({"ready": True})  # the model is loaded before the app accepts requests


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
    return json_response({"name": svc.model.name, "ready": True})


async def infer(request: Request, name: str, version: str | None = None) -> Response:
    svc = checked(request, name, version)
    body = await request.body()
    request_id, wanted = None, []

    def prepare() -> np.ndarray:
        nonlocal request_id, wanted
        batch, request_id, wanted = parse_v2(body, svc.pre, svc.config.max_items)
        return batch

    probs = await svc.engine.score(prepare)
    outputs = {
        "probabilities": {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape),
                          "data": probs.ravel().tolist()},
        "label": {"name": "label", "datatype": "BYTES", "shape": [len(probs)],
                  "data": [svc.model.classes[i] for i in probs.argmax(axis=1)]},
    }
    answer = {"model_name": svc.model.name, "model_version": svc.model.version,
              "outputs": [outputs[n] for n in wanted]}
    if request_id is not None:
        answer["id"] = request_id
    return json_response(answer)


for _path in MODEL_PATHS:
    router.add_api_route(_path, model_metadata, methods=["GET"])
    router.add_api_route(_path + "/ready", model_ready, methods=["GET"])
    router.add_api_route(_path + "/infer", infer, methods=["POST"])
