"""`gearsight serve` as a real uvicorn server on 127.0.0.1: every request form, every client mistake.

One server (started from a .safetensors file, so the on-the-fly export runs too) with an API key
and small limits serves the whole module; answers are checked against eager PyTorch on the same
images, and after the mistakes the server must still answer correctly.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from gearsight.modelfile import ModelSpec, load_model, save_model
from gearsight.client import ScoringClient, ScoringError
from gearsight.image.decode import decode_image
from gearsight.models import create_model
from gearsight.serve.preprocess import Preprocessor
from imagefactory import write_huge_png_header

CLASSES = ["axes", "boots", "helmets", "rope", "tents"]
SIZE = 64
KEY = "s3cret-test-key"
REPO = Path(__file__).resolve().parents[1]


# -- a real model and real image files ---------------------------------------------------------
def make_model_file(path: Path, classes=CLASSES, size: int = SIZE) -> Path:
    """A random-init GearNet with non-trivial BatchNorm statistics and a peaked head."""
    torch.manual_seed(0)
    model = create_model("gearnet", num_classes=len(classes), widths=(16, 32, 64), stem=16)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        model.head.weight.mul_(20)  # spread the classes apart so wrong preprocessing shows
    spec = ModelSpec(arch="gearnet", arch_config={"widths": [16, 32, 64], "stem": 16}, classes=list(classes),
                     input_size=size, resize="pad", pad_fill=255, mean=[0.45, 0.5, 0.55], std=[0.2, 0.25, 0.3])
    save_model(path, model.eval(), spec)
    return path


def make_photo(path: Path, size: tuple[int, int], seed: int, fmt: str = "JPEG") -> Path:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        x1, y1 = x0 + rng.integers(10, size[0] // 2), y0 + rng.integers(10, size[1] // 2)
        draw.ellipse((int(x0), int(y0), int(x1), int(y1)), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    im.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def reference(model, spec: ModelSpec, data: bytes) -> dict[str, float]:
    """Eager PyTorch on training's preprocessing: label -> probability."""
    x = Preprocessor(spec, 10**8).from_pixels(decode_image(data))
    with torch.no_grad():
        probs = model(torch.from_numpy(x)[None]).softmax(1)[0].numpy()
    return dict(zip(spec.classes, probs.tolist()))


def assert_matches(predictions: list[dict], expected: dict[str, float], k: int | None = None) -> None:
    assert len(predictions) == (k or len(expected))
    probs = [p["probability"] for p in predictions]
    assert probs == sorted(probs, reverse=True)
    for p in predictions:
        assert abs(p["probability"] - expected[p["label"]]) < 1e-4, (p, expected)


# -- a real server in a subprocess --------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model: Path, *args: str, timeout: float = 90):
    """``gearsight serve MODEL ARGS`` on a free port; yields (base URL, process)."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GEARSIGHT_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "gearsight", "serve", str(model), "--port", str(port), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}:\n{proc.stdout.read()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v2/health/live", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("server did not start in time")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    model_path = make_model_file(d / "gear.safetensors")
    model, spec = load_model(model_path)
    photos = [make_photo(d / "wide.jpg", (160, 96), 1), make_photo(d / "tall.png", (70, 130), 2, "PNG"),
              make_photo(d / "big.jpg", (640, 480), 3)]
    expected = {p.name: reference(model, spec, p.read_bytes()) for p in photos}
    return {"model": model_path, "spec": spec, "photos": photos, "expected": expected, "dir": d}


@pytest.fixture(scope="module")
def server(files):
    args = ["--api-key", KEY, "--max-body-mb", "1", "--max-pixels", "4000000", "--max-items", "8", "--name", "gear"]
    with running_server(files["model"], *args) as (url, proc):
        yield url, proc


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


# -- every request form ---------------------------------------------------------------------------
def test_score_base64_image(http, files):
    for photo in files["photos"]:
        answer = ok(http.post("/score", json={"image": b64(photo.read_bytes())}))
        assert_matches(answer["predictions"], files["expected"][photo.name])


def test_score_list_is_a_batch_in_order(http, files):
    photos = files["photos"]
    answer = ok(http.post("/score?top_k=2", json=[{"image": b64(p.read_bytes())} for p in photos]))
    assert len(answer["results"]) == len(photos)
    for result, photo in zip(answer["results"], photos):
        assert_matches(result["predictions"], files["expected"][photo.name], k=2)


def test_score_float32_chw_tensor_forms(http, files):
    photo = files["photos"][0]
    x = Preprocessor(files["spec"], 10**8).from_image(photo.read_bytes())
    forms = {
        "nested list": {"data": x.tolist(), "shape": [3, SIZE, SIZE]},
        "flat list, explicit layout and dtype": {"data": x.ravel().tolist(), "shape": [3, SIZE, SIZE],
                                                 "layout": "chw", "dtype": "float32"},
        "base64 float32 bytes": {"data": b64(x.astype("<f4").tobytes()), "shape": [3, SIZE, SIZE]},
    }
    for name, body in forms.items():
        answer = ok(http.post("/score", json=body))
        assert_matches(answer["predictions"], files["expected"][photo.name]), name


def test_score_raw_hwc_pixels(http, files):
    for photo in files["photos"][:2]:
        rgb = decode_image(photo.read_bytes())
        body = {"data": rgb.astype(np.float32).ravel().tolist(), "shape": list(rgb.shape), "layout": "hwc"}
        assert_matches(ok(http.post("/score", json=body))["predictions"], files["expected"][photo.name])


def test_score_file_multipart(http, files):
    photos = files["photos"]
    upload = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in photos]
    answer = ok(http.post("/score/file?top_k=3", files=upload))
    assert [r["filename"] for r in answer["results"]] == [p.name for p in photos]
    for result, photo in zip(answer["results"], photos):
        assert_matches(result["predictions"], files["expected"][photo.name], k=3)


def test_open_inference_protocol_v2(server, http, files):
    url = server[0]
    assert httpx.get(url + "/v2/health/live").json() == {"live": True}  # open without the key
    assert httpx.get(url + "/v2/health/ready").json() == {"ready": True}
    assert ok(http.get("/v2"))["name"] == "gearsight"
    meta = ok(http.get("/v2/models/gear"))
    assert meta["name"] == "gear" and meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}
    version = meta["versions"][0]
    assert ok(http.get(f"/v2/models/gear/versions/{version}/ready"))["ready"] is True

    photos = files["photos"][:2]
    pre = Preprocessor(files["spec"], 10**8)
    batch = np.stack([pre.from_image(p.read_bytes()) for p in photos])
    fp32 = {"id": "req-7", "inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32",
                                       "data": batch.ravel().tolist()}]}
    as_bytes = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(p.read_bytes()) for p in photos]}],
                "outputs": [{"name": "probabilities"}]}
    for path, body in [("/v2/models/gear/infer", fp32), (f"/v2/models/gear/versions/{version}/infer", as_bytes)]:
        answer = ok(http.post(path, json=body))
        assert answer["model_name"] == "gear" and answer["model_version"] == version
        out = {o["name"]: o for o in answer["outputs"]}
        assert out["probabilities"]["shape"] == [2, len(CLASSES)] and out["probabilities"]["datatype"] == "FP32"
        probs = np.asarray(out["probabilities"]["data"]).reshape(2, -1)
        for row, photo in zip(probs, photos):
            want = files["expected"][photo.name]
            assert np.allclose(row, [want[c] for c in CLASSES], atol=1e-4)
        if "label" in out:
            assert out["label"]["data"] == [CLASSES[i] for i in probs.argmax(1)]
    assert ok(http.post("/v2/models/gear/infer", json=fp32))["id"] == "req-7"
    assert [o["name"] for o in ok(http.post("/v2/models/gear/infer", json=as_bytes))["outputs"]] == ["probabilities"]


def test_metadata(http, files):
    meta = ok(http.get("/metadata"))
    assert meta["classes"] == CLASSES and meta["input_shape"] == [3, SIZE, SIZE] and meta["name"] == "gear"
    assert meta["preprocessing"]["mean"] == files["spec"].mean and meta["preprocessing"]["resize"] == "pad"
    assert meta["limits"]["max_items"] == 8 and len(meta["version"]) == 12


def test_python_client(server, files):
    photos = files["photos"]
    expected = files["expected"]
    with ScoringClient(server[0], api_key=KEY) as client:
        assert client.ready() and client.metadata()["classes"] == CLASSES
        assert_matches(client.score_file(photos[0])[0]["predictions"], expected[photos[0].name])
        assert_matches(client.score_image(photos[1], top_k=2), expected[photos[1].name], k=2)
        for preds, photo in zip(client.score_images([p.read_bytes() for p in photos]), photos):
            assert_matches(preds, expected[photo.name])
        pre = Preprocessor(files["spec"], 10**8)
        chw = np.stack([pre.from_image(p.read_bytes()) for p in photos[:2]])
        for preds, photo in zip(client.score_array(chw), photos):
            assert_matches(preds, expected[photo.name])
        hwc = decode_image(photos[0].read_bytes()).astype(np.float32)
        assert_matches(client.score_array(hwc, layout="hwc"), expected[photos[0].name])
        out = client.infer_v2(chw)
        assert out["probabilities"].shape == (2, len(CLASSES)) and len(out["label"]) == 2
        assert client.infer_v2([photos[0]], outputs=["label"])["label"] == [max(expected[photos[0].name], key=expected[photos[0].name].get)]
    with ScoringClient(server[0], api_key="nope") as client, pytest.raises(ScoringError, match="wrong API key"):
        client.metadata()


def test_concurrent_requests_are_all_answered_correctly(server, files):
    photos = files["photos"]

    def one(i: int):
        photo = photos[i % len(photos)]
        r = httpx.post(server[0] + "/score", json={"image": b64(photo.read_bytes())},
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        return photo.name, ok(r)["predictions"]

    with ThreadPoolExecutor(16) as pool:
        for name, predictions in pool.map(one, range(48)):
            assert_matches(predictions, files["expected"][name])


# -- every client mistake: a 4xx JSON error that names it ------------------------------------------
def _png_header(files, side: int) -> bytes:
    return write_huge_png_header(files["dir"] / f"huge{side}.png", side, side).read_bytes()


def _truncated_jpeg(files) -> bytes:
    return files["photos"][0].read_bytes()[:600]


def _chunks(n: int):
    for _ in range(n):
        yield b"x" * 65536


def mistakes(files) -> list[tuple[str, dict, int, str]]:
    chw = {"shape": [3, SIZE, SIZE], "data": [0.0] * (3 * SIZE * SIZE)}
    fp32 = lambda **kw: {"inputs": [{"name": "input", "shape": [1, 3, SIZE, SIZE], "datatype": "FP32",  # noqa: E731
                                     "data": [0.0] * (3 * SIZE * SIZE), **kw}]}
    photo = files["photos"][0].read_bytes()
    return [
        ("malformed JSON", {"content": b'{"image": '}, 400, "malformed JSON"),
        ("body not UTF-8", {"content": b"\xff\xfe\x00"}, 400, "not UTF-8"),
        ("empty body", {"content": b""}, 400, "empty body"),
        ("JSON of the wrong type", {"json": 42}, 400, "expected an object"),
        ("neither image nor data", {"json": {"picture": "x"}}, 400, "needs 'image'"),
        ("data without shape", {"json": {"data": [1.0]}}, 400, "needs a 'shape'"),
        ("wrong CHW shape", {"json": {**chw, "shape": [3, 32, 32], "data": [0.0] * 3072}}, 400, "needs shape [3, 64, 64]"),
        ("shape and data disagree", {"json": {**chw, "data": [0.0] * 10}}, 400, "needs 12288 values, got 10"),
        ("bad shape", {"json": {**chw, "shape": [3, -64, 64]}}, 400, "list of positive integers"),
        ("wrong declared dtype", {"json": {**chw, "dtype": "int64"}}, 400, "only float32"),
        ("strings as data", {"json": {**chw, "data": ["a"] * (3 * SIZE * SIZE)}}, 400, "must hold numbers"),
        ("ragged data", {"json": {**chw, "data": [[0.0, 1.0], [2.0]]}}, 400, "not a regular array"),
        ("bad layout", {"json": {**chw, "layout": "nchw"}}, 400, "layout: must be one of"),
        ("hwc values out of range", {"json": {"shape": [2, 2, 3], "layout": "hwc", "data": [300.0] * 12}}, 400, "0..255"),
        ("NaN", {"content": json.dumps({**chw, "data": [float("nan")] + chw["data"][1:]}).encode()}, 400, "NaN or Inf"),
        ("Infinity", {"content": json.dumps({**chw, "data": [float("inf")] + chw["data"][1:]}).encode()}, 400, "NaN or Inf"),
        ("Inf in base64 floats", {"json": {**chw, "data": b64(np.full(3 * SIZE * SIZE, np.inf, "<f4").tobytes())}}, 400, "NaN or Inf"),
        ("bad base64", {"json": {"image": "this is not base64!"}}, 400, "invalid base64"),
        ("non-image bytes", {"json": {"image": b64(b"hello, I am plain text")}}, 400, "not an image"),
        ("truncated JPEG", {"json": {"image": b64(_truncated_jpeg(files))}}, 400, "body.image:"),
        ("large declared image", {"json": {"image": b64(_png_header(files, 3000))}}, 413,
         "declared size 3000x3000 exceeds the 4,000,000-pixel limit"),
        ("bomb-sized declared image", {"json": {"image": b64(_png_header(files, 100_000))}}, 413, "pixel limit"),
        ("oversized body", {"json": {"image": b64(b"\0" * 900_000)}}, 413, "over the 1,048,576-byte limit"),
        ("oversized chunked body", {"content": _chunks(20)}, 413, "over the 1,048,576-byte limit"),
        ("too many items", {"json": [{"image": b64(photo)}] * 9}, 413, "the limit is 8"),
        ("bad top_k", {"json": {"image": b64(photo)}, "params": {"top_k": "0"}}, 400, "top_k must be an integer"),
        ("v2 wrong datatype", {"path": "/v2/models/gear/infer", "json": fp32(datatype="INT64")}, 400, "'INT64' not supported"),
        ("v2 wrong shape", {"path": "/v2/models/gear/infer", "json": fp32(shape=[1, 3, SIZE, SIZE, 1])}, 400, "FP32 input needs shape"),
        ("v2 NaN", {"path": "/v2/models/gear/infer", "content": json.dumps(fp32(data=[float("nan")] * (3 * SIZE * SIZE))).encode()}, 400, "NaN"),
        ("v2 missing inputs", {"path": "/v2/models/gear/infer", "json": {"input": []}}, 400, "'inputs' list"),
        ("v2 unknown output", {"path": "/v2/models/gear/infer", "json": {**fp32(), "outputs": [{"name": "x"}]}}, 400, "unknown output"),
        ("v2 BYTES count", {"path": "/v2/models/gear/infer", "json": {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(photo)]}]}}, 400, "list of N base64"),
        ("v2 unknown model", {"path": "/v2/models/other/infer", "json": fp32()}, 404, "unknown model 'other'"),
        ("multipart without a file", {"path": "/score/file", "data": {"note": "hi"}, "files": {}}, 400, "no file"),
        ("multipart non-image", {"path": "/score/file", "files": [("file", ("notes.txt", b"just text"))]}, 400, "notes.txt: not an image"),
        ("unknown path", {"path": "/nope", "json": {}}, 404, "Not Found"),
        ("wrong method", {"path": "/score", "method": "GET"}, 405, "Method Not Allowed"),
        ("missing API key", {"headers": {"Authorization": ""}, "json": {"image": b64(photo)}}, 401, "missing API key"),
        ("wrong API key", {"headers": {"Authorization": "Bearer guess"}, "json": {"image": b64(photo)}}, 401, "wrong API key"),
        ("not a bearer key", {"headers": {"Authorization": f"Basic {KEY}"}, "json": {"image": b64(photo)}}, 401, "wrong API key"),
    ]


def test_every_client_mistake_is_a_named_4xx_and_the_server_keeps_serving(server, files):
    url = server[0]
    failures = []
    for name, req, status, message in mistakes(files):
        req = dict(req)
        method, path = req.pop("method", "POST"), req.pop("path", "/score")
        headers = {"Authorization": f"Bearer {KEY}", **req.pop("headers", {})}
        if headers["Authorization"] == "":
            del headers["Authorization"]
        r = httpx.request(method, url + path, headers=headers, timeout=30, **req)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {"error": r.text}
        if r.status_code != status or message not in body.get("error", ""):
            failures.append(f"{name}: HTTP {r.status_code} {body}")
    assert not failures, "\n".join(failures)
    # ...and it still answers correctly.
    photo = files["photos"][2]
    answer = ok(httpx.post(url + "/score", json={"image": b64(photo.read_bytes())}, headers={"Authorization": f"Bearer {KEY}"}))
    assert_matches(answer["predictions"], files["expected"][photo.name])


def test_metrics_count_requests_errors_latency_and_batches(server, http, files):
    ok(http.post("/score", json={"image": b64(files["photos"][0].read_bytes())}))
    http.post("/score", content=b"{")
    text = http.get("/metrics").text
    assert 'gearsight_requests_total{endpoint="/score",status="200"}' in text
    assert 'gearsight_request_errors_total{endpoint="/score",status="400"}' in text
    assert 'gearsight_request_latency_seconds_bucket{endpoint="/score",le="0.005"}' in text
    assert "gearsight_batch_size_bucket" in text and "gearsight_images_scored_total" in text
    assert 'status="5' not in text, "a request ended in a 5xx"
    assert httpx.get(server[0] + "/metrics").status_code == 401  # behind the key


def test_serving_process_never_loads_torch(server):
    maps = Path(f"/proc/{server[1].pid}/maps")
    if not maps.exists():
        pytest.skip("needs Linux /proc to inspect the server's loaded libraries")
    libs = maps.read_text()
    assert "onnxruntime" in libs and "libtorch" not in libs
    code = ("import sys, gearsight.cli, gearsight.serve.app, gearsight.serve.cli, gearsight.client; "
            "import gearsight.image.decode, gearsight.image.resize; gearsight.cli.build_parser(); "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch']; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_serve_cli_refuses_bad_arguments_in_one_line(tmp_path, files):
    for args, message in [([str(tmp_path / "none.onnx")], "model file not found"),
                          ([str(files["model"]), "--top-k", "0"], "--top-k must be positive")]:
        proc = subprocess.run([sys.executable, "-m", "gearsight", "serve", *args], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_processes_share_the_port_and_metrics_count_every_worker(files):
    """--processes 2: two workers answer on one port (each with the model, torch-free), /metrics adds
    up their counts whichever one a scrape reaches, and SIGTERM takes them all down."""
    if not Path("/proc/self/task").exists():
        pytest.skip("needs Linux /proc to see the worker processes")
    photo = files["photos"][0]
    with running_server(files["model"], "--processes", "2", "--api-key", KEY) as (url, proc):
        headers = {"Authorization": f"Bearer {KEY}"}
        deadline = time.monotonic() + 60
        while True:  # the first worker up answers the health check; the second may still be loading
            servers = [p for p in _children(proc.pid) if "onnxruntime" in Path(f"/proc/{p}/maps").read_text()]
            if len(servers) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(servers) == 2, f"expected 2 worker processes with the model, got {servers}"
        assert not any("libtorch" in Path(f"/proc/{p}/maps").read_text() for p in servers)
        sent = 24

        def one(i: int) -> int:  # a client of its own per request: new connections spread over the workers
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                answer = ok(client.post("/score", json={"image": b64(photo.read_bytes())}))
                assert_matches(answer["predictions"], files["expected"][photo.name])
                return client.get("/metadata").status_code

        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(one, range(sent))) == [200] * sent
        for _ in range(4):  # every scrape, whichever worker answers it, counts all of them
            text = httpx.get(url + "/metrics", headers=headers, timeout=30).text
            assert f'gearsight_requests_total{{endpoint="/score",status="200"}} {sent}.0' in text, text[:2000]
            assert f"gearsight_images_scored_total {sent}.0" in text
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        for pid in servers:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
