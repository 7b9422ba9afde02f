"""Request bodies -> model input batches, with a 4xx ``RequestError`` naming each mistake.

Two JSON dialects arrive here:
- ``POST /score``: one item or a JSON list of items; an item is ``{"image": "<base64>"}`` (encoded
  JPEG/PNG/...) or ``{"data": ..., "shape": [...], "layout": "chw"|"hwc"}`` where ``data`` is a
  (nested) list of numbers or a base64 string of little-endian float32 bytes. ``chw`` (default) is
  a tensor already preprocessed like training; ``hwc`` is raw 0..255 pixels of any size.
- ``POST /v2/models/{name}/infer`` (Open Inference Protocol v2): one input, FP32 ``[N, 3, S, S]``
  or BYTES ``[N]`` holding base64-encoded images.
"""
from __future__ import annotations

import binascii
import json
import math
from typing import Any

import numpy as np

from gearsight.serve.errors import RequestError
from gearsight.serve.preprocess import Preprocessor

LAYOUTS = ("chw", "hwc")
FLOAT_DTYPES = ("float32", "fp32")
V2_OUTPUTS = ("probabilities", "label")


def parse_json(body: bytes) -> Any:
    if not body:
        raise RequestError("empty body: send a JSON object")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestError("body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def decode_base64(text: Any, where: str) -> bytes:
    """Standard base64 (a ``data:...;base64,`` prefix and line breaks are tolerated)."""
    if not isinstance(text, str):
        raise RequestError(f"{where}: expected a base64 string, got {type(text).__name__}")
    if text.startswith("data:"):  # a data URL, as a browser's FileReader makes
        text = text.partition(",")[2]
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        pass
    try:  # `base64` without -w0 wraps lines at 76 characters
        return binascii.a2b_base64("".join(text.split()), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: invalid base64 ({exc})") from None


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(type(d) is int and d > 0 for d in value):
        raise RequestError(f"{where}: 'shape' must be a list of positive integers, got {json.dumps(value)[:80]}")
    return tuple(value)


def tensor(data: Any, shape: Any, where: str) -> np.ndarray:
    """``data`` (numbers or base64 float32 bytes) -> a finite float32 array of ``shape``."""
    dims = _shape(shape, where)
    if isinstance(data, str):
        raw = decode_base64(data, f"{where}.data")
        if len(raw) % 4:
            raise RequestError(f"{where}.data: {len(raw)} bytes is not a whole number of float32 values")
        arr = np.frombuffer(raw, dtype="<f4")
    elif isinstance(data, list):
        try:
            arr = np.asarray(data)
        except ValueError as exc:  # ragged nesting
            raise RequestError(f"{where}.data: not a regular array ({exc})") from None
        if arr.dtype.kind not in "iuf":
            found = {"U": "strings", "b": "booleans"}.get(arr.dtype.kind, "nulls or mixed values")
            raise RequestError(f"{where}.data: must hold numbers (float32), found {found}")
        arr = arr.astype(np.float32).ravel()
    else:
        raise RequestError(f"{where}.data: expected a list of numbers or a base64 string, got {type(data).__name__}")
    if arr.size != math.prod(dims):
        raise RequestError(f"{where}: shape {list(dims)} needs {math.prod(dims)} values, got {arr.size}")
    if not np.isfinite(arr).all():
        raise RequestError(f"{where}.data: contains NaN or Inf")
    return arr.reshape(dims)


def _check_dtype(item: dict, where: str) -> None:
    dtype = item.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype.lower() not in FLOAT_DTYPES:
        raise RequestError(f"{where}.dtype: only float32 is accepted, got {dtype!r}")


def score_item(item: Any, pre: Preprocessor, where: str) -> np.ndarray:
    """One ``/score`` item -> ``3 x S x S`` float32."""
    if not isinstance(item, dict):
        raise RequestError(f"{where}: expected an object with 'image' or 'data', got {type(item).__name__}")
    if "image" in item:
        return pre.from_image(decode_base64(item["image"], f"{where}.image"), f"{where}.image")
    if "data" not in item:
        raise RequestError(f"{where}: needs 'image' (base64) or 'data' + 'shape' (float32); got keys {sorted(item)}")
    if "shape" not in item:
        raise RequestError(f"{where}: 'data' needs a 'shape'")
    _check_dtype(item, where)
    layout = item.get("layout", "chw")
    if layout not in LAYOUTS:
        raise RequestError(f"{where}.layout: must be one of {LAYOUTS}, got {layout!r}")
    arr = tensor(item["data"], item["shape"], where)
    return pre.check_chw(arr, where) if layout == "chw" else pre.from_hwc_floats(arr, where)


def parse_score(body: bytes, pre: Preprocessor, max_items: int) -> tuple[np.ndarray, bool]:
    """A ``/score`` body -> (``N x 3 x S x S`` batch, whether the client sent a list)."""
    payload = parse_json(body)
    is_list = isinstance(payload, list)
    items = payload if is_list else [payload]
    if not items:
        raise RequestError("empty list: send at least one item")
    if len(items) > max_items:
        raise RequestError(f"{len(items)} items in one request; the limit is {max_items}", status=413)
    where = "item[{}]" if is_list else "body"
    return np.stack([score_item(it, pre, where.format(i)) for i, it in enumerate(items)]), is_list


def _v2_input(spec: Any, pre: Preprocessor, max_items: int) -> np.ndarray:
    if not isinstance(spec, dict):
        raise RequestError("inputs[0]: expected an object with name, shape, datatype, data")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in spec]
    if missing:
        raise RequestError(f"inputs[0]: missing {', '.join(missing)}")
    dtype, where = spec["datatype"], f"inputs[0] ({spec['name']!r})"
    if dtype == "FP32":
        arr = tensor(spec["data"], spec["shape"], where)
        size = pre.size
        if arr.ndim != 4 or arr.shape[1:] != (3, size, size):
            raise RequestError(f"{where}: FP32 input needs shape [N, 3, {size}, {size}], got {list(arr.shape)}")
        batch = arr
    elif dtype == "BYTES":
        dims, data = _shape(spec["shape"], where), spec["data"]
        if len(dims) != 1 or not isinstance(data, list) or len(data) != dims[0]:
            raise RequestError(f"{where}: BYTES input needs shape [N] and a list of N base64 strings")
        batch = np.stack([pre.from_image(decode_base64(s, f"{where}[{i}]"), f"{where}[{i}]") for i, s in enumerate(data)])
    else:
        raise RequestError(f"{where}: datatype {dtype!r} not supported; send FP32 [N, 3, S, S] or BYTES [N] images")
    if len(batch) > max_items:
        raise RequestError(f"{len(batch)} items in one request; the limit is {max_items}", status=413)
    return batch


def parse_v2(body: bytes, pre: Preprocessor, max_items: int) -> tuple[np.ndarray, Any, list[str]]:
    """A v2 infer body -> (batch, request id or None, requested output names)."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise RequestError("v2 infer body must be an object with an 'inputs' list")
    if len(payload["inputs"]) != 1:
        raise RequestError(f"this model takes exactly one input, got {len(payload['inputs'])}")
    outputs = payload.get("outputs") or [{"name": n} for n in V2_OUTPUTS]
    names = [o.get("name") if isinstance(o, dict) else o for o in outputs]
    unknown = [n for n in names if n not in V2_OUTPUTS]
    if unknown:
        raise RequestError(f"unknown output(s) {unknown}; this model has {list(V2_OUTPUTS)}")
    return _v2_input(payload["inputs"][0], pre, max_items), payload.get("id"), names
