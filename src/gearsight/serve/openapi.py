"""The request bodies of every POST route as JSON Schema, for /openapi.json (the handlers read raw
bodies for speed, so FastAPI cannot infer them). tests/test_serve_fuzz.py generates requests from
these schemas, so they must stay exact."""
from __future__ import annotations

_NUMBERS = {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "array"}]},
            "description": "numbers, nested or flat, row-major"}
_DATA = {"anyOf": [_NUMBERS, {"type": "string", "description": "base64 of little-endian float32 bytes"}]}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1}
IMAGE_ITEM = {"type": "object", "required": ["image"], "title": "ImageItem",
              "properties": {"image": {"type": "string", "description": "base64 of an encoded image file "
                                       "(a data: URL prefix and line breaks are accepted)"}}}


def tensor_item(default_layout: str) -> dict:
    return {"type": "object", "required": ["data", "shape"], "title": f"TensorItem ({default_layout} default)",
            "properties": {"data": _DATA, "shape": _SHAPE,
                           "layout": {"type": "string", "enum": ["chw", "hwc"], "default": default_layout},
                           "dtype": {"type": "string", "enum": ["float32", "fp32"], "default": "float32"}}}


def _json_body(item: dict) -> dict:
    schema = {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


SCORE = _json_body({"anyOf": [IMAGE_ITEM, tensor_item("chw")]})
DETECT = _json_body({"anyOf": [IMAGE_ITEM, tensor_item("hwc")]})
FILES = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}

_V2_INPUT = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"}, "shape": _SHAPE, "datatype": {"type": "string", "enum": ["FP32", "BYTES"]},
    "data": {"anyOf": [_NUMBERS, {"type": "array", "items": {"type": "string"}}],
             "description": "FP32: numbers; BYTES: base64 strings (absent with binary_data_size)"},
    "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}}}}
_V2_OUTPUT = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "enum": ["probabilities", "label"]},
    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}
V2_INFER = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": _V2_INPUT, "minItems": 1, "maxItems": 1},
        "outputs": {"type": "array", "items": _V2_OUTPUT},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description":
        "Triton's binary tensor data extension: the JSON above, then raw tensors; the header "
        "Inference-Header-Content-Length gives the JSON's length in bytes"}}}}}
