"""Two serving-side choices, timed alone: the request decode path, and ONNX Runtime's intra-op threads.

    nice -n 10 .venv/bin/python bench/bench_serve_parts.py [--images 64] [--repeats 5] [--runs 200]

1. Decode: each of --images gear test photos (JPEG/PNG bytes, as a request carries them) to the
   model's normalised 3 x 64 x 64 input, two ways: ``Preprocessor.from_image`` (gearsight serve's
   path: decode and fit on one Pillow image, no array<->image copies) and ``from_pixels(
   decode_request_image(...))`` (decode_image then fit_square, training's functions). Every photo's
   two outputs are checked equal (pixel for pixel) first. Median over --repeats passes of the mean
   ms per photo.
2. ONNX Runtime: the served random-init GearNet (bench_serve.py's model, 64 px, 12 classes) exported
   to ONNX, scored with 1 and with 2 intra-op threads (gearsight serve uses 1), batches of 1, 8 and
   32; median ms of --runs runs after 10 warm-up runs, the two settings interleaved.
Prints the machine and the load average at the start and the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cifar import cpu_name  # noqa: E402  (bench/ is on sys.path when run as a script)
from bench_serve import gear_images, random_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    from gearsight.export import export_onnx
    from gearsight.serve.config import default_max_pixels
    from gearsight.serve.model import OnnxModel
    from gearsight.serve.preprocess import Preprocessor, decode_request_image

    load0 = os.getloadavg()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, {os.cpu_count()} CPUs; "
          f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(random_model(Path(tmp) / "gear.safetensors"), Path(tmp) / "gear.onnx")
        models = {t: OnnxModel(onnx, threads=t) for t in (1, 2)}
    spec = models[1].spec
    pre = Preprocessor(spec, default_max_pixels(spec.input_size))
    photos = [(p.name, p.read_bytes()) for p in gear_images(args.images)]
    paths = {
        "gearsight serve: Preprocessor.from_image": lambda d, n: pre.from_image(d, n),
        "decode_image + fit_square: from_pixels(decode_request_image)":
            lambda d, n: pre.from_pixels(decode_request_image(d, n, pre.max_pixels)),
    }
    fns = list(paths.values())
    same = sum(np.array_equal(fns[0](d, n), fns[1](d, n)) for n, d in photos)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            for n, d in photos:
                fn(d, n)
            times[name].append((time.perf_counter() - t0) / len(photos) * 1e3)
    print(f"\ndecode, {len(photos)} gear test photos (identical model input on {same}/{len(photos)}), "
          f"median of {args.repeats} passes:")
    print("| decode path | ms per photo |\n|---|---:|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.2f} |")

    print(f"\nONNX Runtime, GearNet 64 px, median of {args.runs} runs after 10 warm-up runs:")
    print("| batch | 1 intra-op thread, ms | 2 intra-op threads, ms |\n|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for batch in (1, 8, 32):
        x = rng.standard_normal((batch, 3, spec.input_size, spec.input_size)).astype(np.float32)
        ms: dict[int, list[float]] = {1: [], 2: []}
        for i in range(args.runs + 10):
            for t, m in models.items():
                t0 = time.perf_counter()
                m.probabilities(x)
                if i >= 10:
                    ms[t].append((time.perf_counter() - t0) * 1e3)
        print(f"| {batch} | {statistics.median(ms[1]):.2f} | {statistics.median(ms[2]):.2f} |")
    load1 = os.getloadavg()
    print(f"\nload average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
