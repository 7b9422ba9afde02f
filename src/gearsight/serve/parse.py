"""Request bodies -> model input batches, with a 4xx ``RequestError`` naming each mistake.

Two JSON dialects arrive here:
- ``POST /score``: one item or a JSON list of items; an item is ``{"image": "<base64>"}`` (encoded
  JPEG/PNG/...) or ``{"data": ..., "shape": [...], "layout": "chw"|"hwc"}`` where ``data`` is a
  (nested) list of numbers or a base64 string of little-endian float32 bytes. ``chw`` is a tensor
  already preprocessed like training; ``hwc`` is raw 0..255 pixels of any size. Without ``layout``
  the shape says which ([3, S, S] or [H, W, 3]). ``POST /detect`` takes the same items (``chw`` is
  raw pixels there: the detector normalises inside its graph), through the same functions.
- ``POST /v2/models/{name}/infer`` (Open Inference Protocol v2): one input, FP32 ``[N, 3, S, S]``
  or BYTES ``[N]`` holding base64-encoded images.
"""
from __future__ import annotations

import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gearsight.serve.errors import RequestError
from gearsight.serve.preprocess import Preprocessor

LAYOUTS = ("chw", "hwc")
FLOAT_DTYPES = ("float32", "fp32")
V2_OUTPUTS = ("probabilities", "label")
# Values one tensor may declare: far over what a 16 MiB body carries, far under what formats badly.
MAX_VALUES = 2**31


def parse_json(body: bytes) -> Any:
    if not body:
        raise RequestError("empty body: send a JSON object")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestError("body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts (sys.int_info)
        raise RequestError(f"malformed JSON: {exc}") from None


def decode_base64(text: Any, where: str) -> bytes:
    """Standard base64 (a ``data:...;base64,`` prefix and line breaks are tolerated)."""
    if not isinstance(text, str):
        raise RequestError(f"{where}: expected a base64 string, got {type(text).__name__}")
    if text.startswith("data:"):  # a data URL, as a browser's FileReader makes
        text = text.partition(",")[2]
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        pass
    try:  # `base64` without -w0 wraps lines at 76 characters
        return binascii.a2b_base64("".join(text.split()), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: invalid base64 ({exc})") from None


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(type(d) is int and 0 < d <= MAX_VALUES for d in value):
        raise RequestError(f"{where}: 'shape' must be a list of positive integers, got {_short(value)}")
    count = 1
    for d in value:  # stop early: the product of a long list of big dims is too long to print
        count *= d
        if count > MAX_VALUES:
            raise RequestError(f"{where}: 'shape' holds over {MAX_VALUES:,} values", status=413)
    return tuple(value)


def _short(value: Any) -> str:
    """``value`` for an error message: at most 80 characters, whatever was sent."""
    if isinstance(value, str):
        return repr(value[:80])
    try:
        return json.dumps(value)[:80]
    except ValueError:  # an int too long for str()
        return type(value).__name__


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
        except (ValueError, RecursionError) as exc:  # ragged or too deep nesting
            raise RequestError(f"{where}.data: not a regular array ({str(exc)[:200]})") from None
        if arr.dtype.kind not in "iuf":
            found = {"U": "strings", "b": "booleans"}.get(arr.dtype.kind, "nulls or mixed values")
            raise RequestError(f"{where}.data: must hold numbers (float32), found {found}")
        arr = arr.astype(np.float32).ravel()
    else:
        raise RequestError(f"{where}.data: expected a list of numbers or a base64 string, got {type(data).__name__}")
    if arr.size != math.prod(dims):
        raise RequestError(f"{where}: shape {list(dims)} needs {math.prod(dims)} values, got {arr.size}")
    return _finite(arr, where).reshape(dims)


def _check_dtype(item: dict, where: str) -> None:
    dtype = item.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype.lower() not in FLOAT_DTYPES:
        raise RequestError(f"{where}.dtype: only float32 is accepted, got {dtype!r}")


def check_item(item: Any, where: str) -> None:
    """An item of /score or /detect is an object with 'image', or 'data' + 'shape'."""
    if not isinstance(item, dict):
        raise RequestError(f"{where}: expected an object with 'image' or 'data', got {type(item).__name__}")
    if "image" in item:
        return
    if "data" not in item:
        raise RequestError(f"{where}: needs 'image' (base64) or 'data' + 'shape' (float32); got keys {sorted(item)}")
    if "shape" not in item:
        raise RequestError(f"{where}: 'data' needs a 'shape'")


def tensor_item(item: dict, where: str) -> tuple[np.ndarray, str]:
    """An item's ``data`` as a float32 array of its ``shape``, and its layout: ``"chw"`` or ``"hwc"``
    as sent, else read from the shape ([3, H, W] is chw, [H, W, 3] hwc), the same on /score and /detect."""
    _check_dtype(item, where)
    arr = tensor(item["data"], item["shape"], where)
    layout = item.get("layout")
    if layout is None:
        if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[2] == 3:
            raise RequestError(f"{where}: shape {list(arr.shape)} could be [3, H, W] or [H, W, 3]: "
                               "say which with 'layout': 'chw' or 'hwc'")
        layout = "hwc" if arr.ndim == 3 and arr.shape[2] == 3 else "chw"
    if layout not in LAYOUTS:
        raise RequestError(f"{where}.layout: must be one of {LAYOUTS}, got {layout!r}")
    return arr, layout


def score_item(item: Any, pre: Preprocessor, where: str) -> np.ndarray:
    """One ``/score`` item -> ``3 x S x S`` float32: ``chw`` data is a tensor preprocessed like
    training, ``hwc`` data raw 0..255 pixels of any size."""
    check_item(item, where)
    if "image" in item:
        return pre.from_image(decode_base64(item["image"], f"{where}.image"), f"{where}.image")
    arr, layout = tensor_item(item, where)
    return pre.check_chw(arr, where) if layout == "chw" else pre.from_hwc_floats(arr, where)


def json_items(body: bytes, max_items: int) -> tuple[list, bool]:
    """A JSON body of one item or a list of them -> (items, whether a list was sent); the count is
    checked before any item is decoded."""
    payload = parse_json(body)
    is_list = isinstance(payload, list)
    items = payload if is_list else [payload]
    if not items:
        raise RequestError("empty list: send at least one item")
    if len(items) > max_items:
        raise RequestError(f"{len(items)} items in one request; the limit is {max_items}", status=413)
    return items, is_list


def parse_score(body: bytes, pre: Preprocessor, max_items: int) -> tuple[np.ndarray, bool]:
    """A ``/score`` body -> (``N x 3 x S x S`` batch, whether the client sent a list)."""
    items, is_list = json_items(body, max_items)
    where = "item[{}]" if is_list else "body"
    return np.stack([score_item(it, pre, where.format(i)) for i, it in enumerate(items)]), is_list


@dataclass
class V2Request:
    batch: np.ndarray
    id: Any  # echoed back when sent
    outputs: list[str]  # names, in the order asked
    binary: dict[str, bool]  # output name -> answer as binary data (Triton's extension)


def _split_binary(body: bytes, header_length: int | None) -> tuple[bytes, bytes | None]:
    """Triton's binary tensor data extension: ``header_length`` bytes of JSON, then raw tensors."""
    if header_length is None:
        return body, None
    if not 0 < header_length <= len(body):
        raise RequestError(f"Inference-Header-Content-Length: {header_length} is not within the "
                           f"{len(body):,}-byte body")
    return body[:header_length], body[header_length:]


def _binary_size(spec: dict, where: str) -> int | None:
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(f"{where}.parameters: expected an object")
    size = params.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise RequestError(f"{where}.parameters.binary_data_size: expected a non-negative integer")
    return size


def split_bytes_tensor(raw: bytes, count: int, where: str) -> list[bytes]:
    """Triton's BYTES serialisation: each element is a 4-byte little-endian length, then the bytes."""
    out, at = [], 0
    for i in range(count):
        if at + 4 > len(raw):
            raise RequestError(f"{where}: binary BYTES data holds {i} elements, the shape says {count}")
        n = int.from_bytes(raw[at : at + 4], "little")
        if at + 4 + n > len(raw):
            raise RequestError(f"{where}[{i}]: element of {n:,} bytes runs past the binary data")
        out.append(raw[at + 4 : at + 4 + n])
        at += 4 + n
    if at != len(raw):
        raise RequestError(f"{where}: {len(raw) - at} bytes left after {count} BYTES elements")
    return out


def _v2_input(spec: Any, pre: Preprocessor, max_items: int, raw: bytes | None) -> np.ndarray:
    """The one input -> a batch; every count and shape checked before any decoding."""
    if not isinstance(spec, dict):
        raise RequestError("inputs[0]: expected an object with name, shape, datatype, data")
    missing = [k for k in ("name", "shape", "datatype") if k not in spec]
    size = _binary_size(spec, "inputs[0]")
    if size is None and "data" not in spec:
        missing.append("data")
    if missing:
        raise RequestError(f"inputs[0]: missing {', '.join(missing)}")
    dtype, where = spec["datatype"], f"inputs[0] ({_short(spec['name'])})"
    dims = _shape(spec["shape"], where)
    if dims[0] > max_items:
        raise RequestError(f"{dims[0]} items in one request; the limit is {max_items}", status=413)
    if size is not None and (raw is None or size != len(raw)):
        raise RequestError(f"{where}: binary_data_size {size} does not match the {0 if raw is None else len(raw)} "
                           "bytes after the JSON header (send Inference-Header-Content-Length)")
    if dtype == "FP32":
        s = pre.size
        if dims[1:] != (3, s, s):
            raise RequestError(f"{where}: FP32 input needs shape [N, 3, {s}, {s}], got {list(dims)}")
        if size is not None:
            if size != math.prod(dims) * 4:
                raise RequestError(f"{where}: shape {list(dims)} needs {math.prod(dims) * 4} bytes of FP32, got {size}")
            return _finite(np.frombuffer(raw, dtype="<f4").reshape(dims), where)
        return tensor(spec["data"], spec["shape"], where)
    if dtype == "BYTES":
        if len(dims) != 1:
            raise RequestError(f"{where}: BYTES input needs shape [N], got {list(dims)}")
        if size is not None:
            files = split_bytes_tensor(raw, dims[0], where)
        else:
            data = spec["data"]
            if not isinstance(data, list) or len(data) != dims[0]:
                raise RequestError(f"{where}: BYTES input needs shape [N] and a list of N base64 strings")
            files = [decode_base64(d, f"{where}[{i}]") for i, d in enumerate(data)]
        return np.stack([pre.from_image(f, f"{where}[{i}]") for i, f in enumerate(files)])
    raise RequestError(f"{where}: datatype {_short(dtype)} not supported; send FP32 [N, 3, S, S] or BYTES [N] images")


def _finite(arr: np.ndarray, where: str) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise RequestError(f"{where}.data: contains NaN or Inf")
    return arr


def _v2_outputs(payload: dict) -> tuple[list[str], dict[str, bool]]:
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError("parameters: expected an object")
    binary_default = params.get("binary_data_output", False) is True
    outputs = payload.get("outputs")
    if outputs is None:
        return list(V2_OUTPUTS), {n: binary_default for n in V2_OUTPUTS}
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise RequestError("outputs: expected a list of objects like {\"name\": \"probabilities\"}")
    names = [o.get("name") for o in outputs]
    unknown = [n for n in names if n not in V2_OUTPUTS]
    if unknown:
        raise RequestError(f"unknown output(s) {_short(unknown)}; this model has {list(V2_OUTPUTS)}")
    binary = {}
    for o in outputs:
        p = o.get("parameters") or {}
        binary[o["name"]] = p.get("binary_data", binary_default) is True if isinstance(p, dict) else binary_default
    return names, binary


def parse_v2(body: bytes, pre: Preprocessor, max_items: int, header_length: int | None = None) -> V2Request:
    """A v2 infer body (JSON, or JSON + binary tensors) -> the batch and what to answer."""
    head, raw = _split_binary(body, header_length)
    payload = parse_json(head)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise RequestError("v2 infer body must be an object with an 'inputs' list")
    if len(payload["inputs"]) != 1:
        raise RequestError(f"this model takes exactly one input, got {len(payload['inputs'])}")
    names, binary = _v2_outputs(payload)
    batch = _v2_input(payload["inputs"][0], pre, max_items, raw)
    return V2Request(batch, payload.get("id"), names, binary)
