"""POST /detect: a real Faster R-CNN exported to ONNX (`gearsight detect export`), served next to a
classifier by a real uvicorn server on 127.0.0.1; answers must equal gearsight's PyTorch Detector."""
from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from gearsight.detect.export import match_fraction
from gearsight.detect.model import PRESETS, DetectorConfig, create_detector
from gearsight.detect.predict import Detector, detector_spec, save_detector
from gearsight.image.decode import decode_image
from test_serve import make_model_file, make_photo, ok, running_server

DET_CLASSES = ["RBC", "WBC", "Platelets"]


def make_detector_file(path):
    """A random-init CPU-preset detector at 128 px: real weights, real pre/postprocessing."""
    torch.manual_seed(0)
    cfg = DetectorConfig(**{**PRESETS["cpu"], "min_size": 128, "max_size": 171})
    model = create_detector("fasterrcnn_mobilenet_v3_large_fpn", len(DET_CLASSES), cfg).eval()
    save_detector(path, model, detector_spec("fasterrcnn_mobilenet_v3_large_fpn", cfg, DET_CLASSES, [1, 2, 3]))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve_detect")
    det = make_detector_file(d / "cells.safetensors")
    proc = run_cli("detect", "export", det, "--out", d / "cells.onnx")
    assert "outputs match PyTorch" in proc.stdout
    photos = [make_photo(d / "a.jpg", (200, 150), 5), make_photo(d / "b.png", (120, 180), 6, "PNG")]
    expected = {p.name: Detector.load(det).predict([str(p)], min_score=0.0)[0] for p in photos}
    classifier = make_model_file(d / "gear.safetensors")
    with running_server(classifier, "--detector", str(d / "cells.onnx"), "--max-items", "4") as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield {"http": client, "photos": photos, "expected": expected, "dir": d, "det": det,
                   "classifier": classifier}


def assert_same_detections(result: dict, expected: dict) -> None:
    assert set(result) == {"boxes", "labels", "scores"} and len(result["boxes"]) > 0
    assert set(result["labels"]) <= set(DET_CLASSES)
    assert result["scores"] == sorted(result["scores"], reverse=True)
    as_arrays = [(np.array(r["boxes"]), np.array(r["labels"]), np.array(r["scores"])) for r in (result, expected)]
    assert match_fraction(*as_arrays, atol=0.05) >= 0.97


def test_detect_base64_image_equals_pytorch(setup):
    photo = setup["photos"][0]
    result = ok(setup["http"].post("/detect?min_score=0", json={"image": base64.b64encode(photo.read_bytes()).decode()}))
    assert_same_detections(result, setup["expected"][photo.name])


def test_detect_list_of_float32_pixels_and_min_score(setup):
    items = []
    for photo in setup["photos"]:
        rgb = decode_image(photo).astype(np.float32)
        items.append({"data": base64.b64encode(rgb.astype("<f4").tobytes()).decode(), "shape": list(rgb.shape)})
    body = ok(setup["http"].post("/detect?min_score=0", json=items))
    assert len(body["results"]) == 2
    for photo, result in zip(setup["photos"], body["results"]):
        assert_same_detections(result, setup["expected"][photo.name])
    strict = ok(setup["http"].post("/detect?min_score=0.99", json=items[0]))
    assert strict["boxes"] == [] and strict["labels"] == [] and strict["scores"] == []


def test_detect_file_multipart(setup):
    files = [("file", (p.name, p.read_bytes())) for p in setup["photos"]]
    body = ok(setup["http"].post("/detect/file?min_score=0", files=files))
    assert [r["filename"] for r in body["results"]] == [p.name for p in setup["photos"]]
    for photo, result in zip(setup["photos"], body["results"]):
        assert_same_detections({k: result[k] for k in ("boxes", "labels", "scores")}, setup["expected"][photo.name])


def test_detect_mistakes_are_named_4xx(setup):
    http = setup["http"]
    cases = [
        ("/detect", {"image": "not base64!"}, 400, "body.image: invalid base64"),
        ("/detect", {"image": base64.b64encode(b"GIF89a junk").decode()}, 400, "body.image"),
        ("/detect", {"data": [1, 2, 3], "shape": [1, 3]}, 400, "needs shape [H, W, 3]"),
        ("/detect", {"data": [300.0] * 3, "shape": [1, 1, 3]}, 400, "0..255"),
        ("/detect?min_score=2", {"image": "AAAA"}, 400, "min_score must be a number from 0 to 1"),
        ("/detect", [{"image": "AAAA"}] * 5, 413, "limit is 4"),
        ("/detect", [], 400, "empty list"),
    ]
    for path, payload, status, message in cases:
        r = http.post(path, json=payload)
        assert r.status_code == status and message in r.json()["error"], (path, payload, r.text)
    r = http.post("/detect", content=b"{not json")
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    # still serving, and the classifier routes are unaffected
    assert ok(http.post("/detect?min_score=0", json={"image": base64.b64encode(setup["photos"][0].read_bytes()).decode()}))
    meta = ok(http.get("/metadata"))
    assert meta["detector"]["classes"] == DET_CLASSES and meta["classes"][0] == "axes"


def test_server_without_detector_says_how_to_add_one(setup):
    with running_server(setup["classifier"]) as (url, _):
        r = httpx.post(url + "/detect", json={"image": "AAAA"}, timeout=30)
    assert r.status_code == 404 and "--detector" in r.json()["error"]
    assert json.loads(r.text)["error"].startswith("this server has no detector")


def test_detect_refuses_lossless_bombs_before_decoding_and_drafts_big_jpegs(setup):
    """Issue 11 finding 2: /detect kept every full-size decoded image (64 x 40 MP WebPs in ~10 KB
    was ~7.7 GB); now it decodes on the engine's workers, one image at a time, under max_pixels."""
    from test_serve_hostile import solid_webp

    http = setup["http"]
    bomb = base64.b64encode(solid_webp(6000, 6000)).decode()
    start = time.perf_counter()
    for path, kw in [("/detect", {"json": [{"image": bomb}] * 4}),
                     ("/detect/file", {"files": [("file", (f"b{i}.webp", base64.b64decode(bomb))) for i in range(4)]})]:
        r = http.post(path, **kw)
        assert r.status_code == 413 and "6000x6000 exceeds" in r.json()["error"], r.text
    assert time.perf_counter() - start < 2.0  # before: 8 x 36 MP decoded (and held) first
    big = io.BytesIO()
    Image.open(setup["photos"][0]).resize((3200, 2400)).save(big, "JPEG", quality=90)  # 7.7 MP > 4.2 MP
    result = ok(http.post("/detect?min_score=0", json={"image": base64.b64encode(big.getvalue()).decode()}))
    boxes = np.asarray(result["boxes"])
    assert len(boxes) and boxes[:, 2].max() <= 3200 and boxes[:, 3].max() <= 2400
    assert boxes[:, 2].max() > 1600  # boxes in the sent image's pixels, not the 1/2-scale decode's
