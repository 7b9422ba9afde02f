"""A small client for ``gearsight serve`` (httpx; no torch).

    from gearsight.client import ScoringClient
    with ScoringClient("http://127.0.0.1:8000", api_key=None) as client:
        client.score_file("boot.jpg")                 # [{"filename": ..., "predictions": [...]}]
        client.score_image(open("boot.jpg", "rb").read())   # [{"label": ..., "probability": ...}, ...]
        client.score_array(chw_float32)               # a tensor preprocessed like training
        client.infer_v2(chw_batch)                    # Open Inference Protocol: {"probabilities": ..., "label": ...}
"""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np

Predictions = list[dict[str, Any]]  # [{"label": str, "probability": float}, ...], most probable first


class ScoringError(RuntimeError):
    """The server answered an error; ``status`` is the HTTP status, the message the server's own."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _image_bytes(image: bytes | str | os.PathLike) -> bytes:
    return bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else Path(image).read_bytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class ScoringClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self._model_name: str | None = None

    def __enter__(self) -> "ScoringClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw) -> Any:
        response = self.http.request(method, path, **kw)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ScoringError(response.status_code, message)
        return response.json()

    def _params(self, top_k: int | None) -> dict:
        return {"top_k": top_k} if top_k is not None else {}

    # -- gearsight's own API ---------------------------------------------------------------------
    def metadata(self) -> dict:
        return self._call("GET", "/metadata")

    def ready(self) -> bool:
        try:
            return bool(self._call("GET", "/v2/health/ready").get("ready"))
        except (httpx.HTTPError, ScoringError):
            return False

    def score_file(self, paths: str | os.PathLike | Sequence[str | os.PathLike], top_k: int | None = None) -> list[dict]:
        """Multipart upload of one or more image files: ``[{"filename", "predictions"}, ...]``."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        files = [("file", (Path(p).name, Path(p).read_bytes())) for p in paths]
        return self._call("POST", "/score/file", files=files, params=self._params(top_k))["results"]

    def score_image(self, image: bytes | str | os.PathLike, top_k: int | None = None) -> Predictions:
        """One encoded image (bytes or a path), sent as base64 JSON."""
        body = {"image": _b64(_image_bytes(image))}
        return self._call("POST", "/score", json=body, params=self._params(top_k))["predictions"]

    def score_images(self, images: Sequence[bytes | str | os.PathLike], top_k: int | None = None) -> list[Predictions]:
        """Several encoded images in one request (a JSON list)."""
        body = [{"image": _b64(_image_bytes(im))} for im in images]
        return [r["predictions"] for r in self._call("POST", "/score", json=body, params=self._params(top_k))["results"]]

    def score_array(self, array: np.ndarray, layout: str = "chw", top_k: int | None = None) -> Predictions | list[Predictions]:
        """A float32 array: ``chw`` = ``[3, S, S]`` preprocessed like training, ``hwc`` = ``[H, W, 3]``
        pixels 0..255. A leading batch axis sends a list and returns one prediction list per item."""
        array = np.asarray(array, dtype="<f4")
        batched = array.ndim == 4
        items = [{"data": _b64(a.tobytes()), "shape": list(a.shape), "layout": layout, "dtype": "float32"}
                 for a in (array if batched else [array])]
        answer = self._call("POST", "/score", json=items if batched else items[0], params=self._params(top_k))
        return [r["predictions"] for r in answer["results"]] if batched else answer["predictions"]

    # -- Open Inference Protocol v2 ---------------------------------------------------------------
    def model_name(self) -> str:
        if self._model_name is None:
            self._model_name = self.metadata()["name"]
        return self._model_name

    def infer_v2(self, inputs: np.ndarray | Sequence[bytes | str | os.PathLike], outputs: Sequence[str] | None = None,
                 model: str | None = None) -> dict[str, Any]:
        """``inputs``: an ``[N, 3, S, S]`` float32 array (FP32) or a list of images (BYTES, base64).
        Returns ``{output name: array or list}``, e.g. probabilities ``[N, classes]`` and labels."""
        if isinstance(inputs, np.ndarray):
            x = inputs.astype(np.float32, copy=False)
            tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        else:
            data = [_b64(_image_bytes(im)) for im in inputs]
            tensor = {"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}
        body: dict[str, Any] = {"inputs": [tensor]}
        if outputs:
            body["outputs"] = [{"name": n} for n in outputs]
        answer = self._call("POST", f"/v2/models/{model or self.model_name()}/infer", json=body)
        return {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) if o["datatype"] == "FP32"
                else o["data"] for o in answer["outputs"]}
