"""Fuzz the running service from its own OpenAPI schema (Hypothesis): every POST route gets bodies
built from its documented request schema, plus mutations and arbitrary JSON, with the API key
set. Nothing may answer 5xx, every error must be a JSON ``{"error": ...}`` without NaN, and the
server must still score correctly afterwards. Bounded: a fixed number of examples (~30-60 s here).
"""
from __future__ import annotations

import base64
import io
import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gearsight.export import export_onnx
from test_serve import KEY, make_model_file, make_photo, running_server
from test_serve_hostile import PPM_1x1, solid_webp, strict_json, thin_png

EXAMPLES = 250  # per route; ~5-30 ms a request on this machine: ~40 s in all
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    onnx = export_onnx(make_model_file(d / "gear.safetensors"), d / "gear.onnx")
    photo = make_photo(d / "p.jpg", (120, 90), 4).read_bytes()
    with running_server(onnx, "--api-key", KEY, "--max-items", "4", "--max-body-mb", "1", "--name", "gear") as (url, _):
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            yield client, photo


def image_files(photo: bytes) -> st.SearchStrategy[bytes]:
    png = io.BytesIO()
    Image.new("LA", (5, 3)).save(png, "PNG")
    return st.sampled_from([photo, photo[: len(photo) // 2], png.getvalue(), PPM_1x1, solid_webp(3000, 3000),
                            thin_png(5000), b"", b"GIF89a"]) | st.binary(max_size=64)


def from_schema(schema: dict, photo: bytes, name: str = "") -> st.SearchStrategy:
    """A JSON value that fits ``schema`` (the subset openapi.py uses), sometimes one that does not."""
    junk = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats()
    if "anyOf" in schema:
        return st.one_of([from_schema(s, photo, name) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | junk
    kind = schema.get("type")
    if kind == "object":
        props = {k: from_schema(v, photo, k) for k, v in schema.get("properties", {}).items()}
        required = {k: v for k, v in props.items() if k in schema.get("required", [])}
        optional = {k: v for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional) | junk
    if kind == "array":
        items = from_schema(schema.get("items", {}), photo, name)
        if name == "shape":  # mostly small real shapes, sometimes absurd ones
            items = st.integers(1, 64) | st.integers()
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=5) | junk
    if kind == "string":
        if name in ("image", "data", ""):
            return image_files(photo).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=20)
        return st.text(max_size=20)
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), 2**40) | st.integers()
    if kind == "number":
        return st.floats(width=32) | st.floats()
    return st.recursive(junk, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                        max_leaves=8)


def check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: HTTP {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert "error" in strict_json(response.text), what
    elif response.headers.get("content-type", "").startswith("application/json"):
        strict_json(response.text)


def json_routes(schema: dict) -> list[tuple[str, dict]]:
    out = []
    for path, ops in schema["paths"].items():
        body = ops.get("post", {}).get("requestBody", {}).get("content", {})
        if "application/json" in body:
            out.append((path.replace("{name}", "gear").replace("{version}", "v"), body["application/json"]["schema"]))
    return out


def test_openapi_documents_every_post_body(service):
    schema = service[0].get("/openapi.json").json()
    posts = {p for p, ops in schema["paths"].items() if "post" in ops}
    assert {"/score", "/score/file", "/detect", "/detect/file", "/v2/models/{name}/infer"} <= posts
    for path in posts:
        content = schema["paths"][path]["post"]["requestBody"]["content"]
        assert "application/json" in content or "multipart/form-data" in content, path


def test_fuzz_from_the_openapi_schema_no_5xx_and_still_scoring(service):
    client, photo = service
    routes = json_routes(client.get("/openapi.json").json())
    assert len(routes) >= 4, routes
    start = time.perf_counter()
    sent = 0
    for path, schema in routes:
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(body=from_schema(schema, photo), top_k=st.none() | st.text(max_size=4), raw=st.booleans())
        def one(body, top_k, raw):
            nonlocal sent
            params = {} if top_k is None else {"top_k": top_k, "min_score": top_k}
            if raw:  # json.dumps writes NaN/Infinity, which Python's parser (the server's) accepts
                r = client.post(path, content=json.dumps(body).encode(), params=params)
            else:
                r = client.post(path, content=json.dumps(body).encode()[:-1], params=params)  # truncated
            sent += 1
            check(r, f"POST {path} {json.dumps(body)[:200]}")

        one()

    @settings(max_examples=EXAMPLES // 3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(files=st.lists(image_files(photo), min_size=0, max_size=6))
    def upload(files):
        nonlocal sent
        r = client.post("/score/file", files=[("file", (f"f{i}", b)) for i, b in enumerate(files)] or None,
                        data={} if files else {"x": "1"})
        sent += 1
        check(r, f"/score/file {[len(b) for b in files]}")

    upload()
    elapsed = time.perf_counter() - start
    print(f"fuzz: {sent} requests in {elapsed:.1f} s")
    r = client.post("/score", json={"image": base64.b64encode(photo).decode()})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 5
    assert 'status="5' not in client.get("/metrics").text
