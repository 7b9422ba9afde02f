"""The serving pieces without HTTP: fast preprocessing equals training's, request parsing, dynamic batching."""
from __future__ import annotations

import asyncio
import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gearsight.modelfile import ModelSpec
from gearsight.image.decode import decode_image
from gearsight.image.resize import fit_square
from gearsight.serve.batching import DynamicBatcher
from gearsight.serve.errors import RequestError
from gearsight.serve.parse import decode_base64, parse_score
from gearsight.serve.preprocess import Preprocessor
from imagefactory import make_bad_images, make_good_images


def spec(resize: str = "pad", size: int = 64) -> ModelSpec:
    return ModelSpec(arch="gearnet", arch_config={}, classes=["a", "b"], input_size=size, resize=resize,
                     pad_fill=255, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])


def training_input(data: bytes, s: ModelSpec) -> np.ndarray:
    """What training feeds the network: decode_image -> fit_square -> (x/255 - mean)/std, CHW."""
    square = fit_square(decode_image(data), s.input_size, s.resize, s.pad_fill).astype(np.float32)
    mean, std = np.asarray(s.mean, np.float32), np.asarray(s.std, np.float32)
    return ((square / 255 - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("resize", ["pad", "crop", "stretch"])
def test_fast_image_path_gives_training_pixels_on_odd_files(tmp_path, resize):
    s = spec(resize, size=24)
    pre = Preprocessor(s, 10**8)
    for name, (path, expect) in make_good_images(tmp_path).items():
        data = path.read_bytes()
        square = pre._fast_square(data, name)
        assert np.array_equal(square, fit_square(decode_image(data), 24, resize, 255)), name
        assert np.allclose(pre.from_image(data, name), training_input(data, s), atol=1e-5), name


def test_fast_image_path_on_real_photos():
    from conftest import require_dataset

    files = sorted(require_dataset("gear").glob("*/*"))[::15]
    for resize in ("pad", "crop"):
        pre = Preprocessor(spec(resize), 10**8)
        for path in files:
            data = path.read_bytes()
            assert np.array_equal(pre._fast_square(data, path.name),
                                  fit_square(decode_image(data), 64, resize, 255)), path


def test_unreadable_images_are_400_with_decode_images_reason(tmp_path):
    pre = Preprocessor(spec(), 10**8)
    for name, (path, expect) in make_bad_images(tmp_path).items():
        if not path.is_file():
            continue
        with pytest.raises(RequestError) as err:
            pre.from_image(path.read_bytes(), name)
        assert err.value.status in (400, 413) and expect.error in err.value.message, (name, err.value.message)


def test_base64_accepts_data_urls_and_wrapped_lines():
    raw = bytes(range(256)) * 3
    text = base64.encodebytes(raw).decode()  # wrapped at 76 columns, like `base64` without -w0
    assert "\n" in text and decode_base64(text, "x") == raw
    assert decode_base64("data:image/png;base64," + base64.b64encode(raw).decode(), "x") == raw
    with pytest.raises(RequestError, match="x: invalid base64"):
        decode_base64("abc$", "x")


def test_parse_score_names_the_failing_item():
    pre = Preprocessor(spec(size=8), 10**8)
    good = {"data": [0.0] * 192, "shape": [3, 8, 8]}
    batch, is_list = parse_score(json.dumps([good, good]).encode(), pre, 8)
    assert batch.shape == (2, 3, 8, 8) and is_list
    with pytest.raises(RequestError, match=r"item\[1\]: layout 'chw' needs shape \[3, 8, 8\], got \[1\]"):
        parse_score(json.dumps([good, {"data": [0.0], "shape": [1]}]).encode(), pre, 8)


# -- dynamic batching --------------------------------------------------------------------------------
def run_batcher(scenario, max_batch: int = 4, max_wait_s: float = 5.0, run=None):
    """Run ``scenario(batcher)`` on a fresh event loop; returns (its result, batch sizes seen)."""
    sizes: list[int] = []

    def double(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        return x * 2

    async def main():
        batcher = DynamicBatcher(run or double, ThreadPoolExecutor(1), max_batch, max_wait_s)
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main()), sizes


async def request(batcher: DynamicBatcher, value: float, rows: int = 1, decode_s: float = 0.0) -> np.ndarray:
    """What Engine.score does: announce, 'decode', then submit."""
    batcher.expecting += 1
    await asyncio.sleep(decode_s)
    batcher.expecting -= 1
    return await batcher.submit(np.full((rows, 2), value, np.float32))


def test_a_lone_request_does_not_wait_for_company():
    async def scenario(b):
        start = time.perf_counter()
        out = await request(b, 3.0)
        return out, time.perf_counter() - start

    (out, seconds), sizes = run_batcher(scenario, max_wait_s=5.0)
    assert np.array_equal(out, [[6.0, 6.0]]) and sizes == [1] and seconds < 1.0


def test_concurrent_requests_share_runs_and_get_their_own_rows():
    async def scenario(b):
        return await asyncio.gather(*(request(b, float(i), decode_s=0.001 * (i % 3)) for i in range(10)))

    outs, sizes = run_batcher(scenario, max_batch=4)
    for i, out in enumerate(outs):
        assert np.array_equal(out, [[2.0 * i, 2.0 * i]])
    assert sum(sizes) == 10 and max(sizes) <= 4 and len(sizes) < 10


def test_a_request_bigger_than_max_batch_runs_alone():
    async def scenario(b):
        return await asyncio.gather(request(b, 1.0, rows=6), request(b, 2.0, rows=1))

    (big, small), sizes = run_batcher(scenario, max_batch=4)
    assert big.shape == (6, 2) and np.array_equal(small, [[4.0, 4.0]]) and sorted(sizes) == [1, 6]


def test_a_failing_run_fails_its_requests_and_the_batcher_goes_on():
    calls = []

    def flaky(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x + 1

    async def scenario(b):
        with pytest.raises(RuntimeError, match="boom"):
            await request(b, 1.0)
        return await request(b, 1.0)

    out, _ = run_batcher(scenario, run=flaky)
    assert np.array_equal(out, [[2.0, 2.0]]) and calls == [1, 1]


def test_per_process_bounds_add_up_to_the_server_wide_ones():
    from gearsight.serve.config import ServeConfig

    one = ServeConfig(api_key=None, max_queue=64, max_queue_per_client=20, limit_concurrency=512)
    assert one.per_process() is one
    two = ServeConfig(api_key=None, processes=2, max_queue=64, max_queue_per_client=21, limit_concurrency=511,
                      body_budget_bytes=20 << 20, max_body_bytes=16 << 20).per_process()
    assert (two.max_queue, two.max_queue_per_client, two.limit_concurrency, two.workers) == (32, 11, 256, 1)
    assert two.body_budget_bytes == 16 << 20  # never under one largest body
    assert ServeConfig(api_key=None, processes=3).per_process().max_queue_per_client is None  # default: half the queue


def test_score_and_detect_read_an_item_the_same_way():
    """One item parser (serve/parse.py) for /score and /detect: without 'layout' the shape says which
    ([3, H, W] chw, [H, W, 3] hwc) on both; an ambiguous shape is a named 400 (issue 12: /score
    defaulted to chw, /detect to hwc)."""
    from gearsight.serve.detect_routes import _item_pixels

    pre = Preprocessor(spec(size=8), 10**8)
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.float32)
    hwc = {"data": rgb.ravel().tolist(), "shape": [5, 7, 3]}
    chw = {"data": rgb.transpose(2, 0, 1).ravel().tolist(), "shape": [3, 5, 7]}
    np.testing.assert_array_equal(parse_score(json.dumps(hwc).encode(), pre, 8)[0],
                                  parse_score(json.dumps({**hwc, "layout": "hwc"}).encode(), pre, 8)[0])
    for item in (hwc, chw, {**chw, "layout": "chw"}):
        pixels, _ = _item_pixels(item, "body", 10**8)
        np.testing.assert_array_equal(pixels, rgb.astype(np.uint8))
    square = {"data": [0.0] * 27, "shape": [3, 3, 3]}
    with pytest.raises(RequestError, match=r"body: shape \[3, 3, 3\] could be .*'layout'"):
        parse_score(json.dumps(square).encode(), pre, 8)
    with pytest.raises(RequestError, match=r"body: shape \[3, 3, 3\] could be"):
        _item_pixels(square, "body", 10**8)
