"""Serving latency and throughput: gearsight serve (ONNX Runtime, dynamic batching) vs a plain baseline.

Baseline: FastAPI + eager PyTorch, one forward per request, a sync endpoint with a pydantic body
(what a first serving script looks like), calling the same preprocessing code as gearsight serve
(``Preprocessor.from_image``, pixel-identical to training's decode_image -> fit_square), so the
comparison is of the serving stack and the runtime. Both answer the same JSON ``{"image": base64}``
requests of real gear test photos on 127.0.0.1; each concurrency level sends a fixed number of
requests. Servers are measured in rounds (order rotated each round) and medians reported, with the
server process's CPU time per request beside the wall-clock numbers: the machine is shared, and
CPU time is what other jobs disturb least.

    python bench/bench_serve.py [--model work/runs/gear/model.safetensors] [--rounds 3]

Without --model, a random-init GearNet at 64 px with the 12 gear classes is used (same compute as
the trained one; its predictions mean nothing). The load generator is a raw asyncio HTTP/1.1
keep-alive client: httpx's own per-request CPU cost would compete with the servers for the
machine's 2 cores.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- baseline server (own process)
class Item(BaseModel):  # module level: FastAPI resolves the string annotation in module globals
    image: str


def baseline_app(model_path: str):
    import torch
    from fastapi import FastAPI

    from gearsight.modelfile import load_model
    from gearsight.serve.preprocess import Preprocessor

    model, spec = load_model(model_path)
    pre = Preprocessor(spec, max_pixels=40_000_000)
    app = FastAPI()

    @app.post("/score")
    def score(item: Item):
        x = torch.from_numpy(pre.from_image(base64.b64decode(item.image)))[None]
        with torch.inference_mode():
            probs = model(x).softmax(1)[0]
        top = probs.topk(min(5, len(spec.classes)))
        return {"predictions": [{"label": spec.classes[i], "probability": float(p)}
                                for p, i in zip(top.values, top.indices)]}

    return app


# ---------------------------------------------------------------- load generator
async def _one(reader, writer, request: bytes) -> float:
    start = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length"))
    body = await reader.readexactly(length)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
    return time.perf_counter() - start


async def load(port: int, requests: list[bytes], concurrency: int, total: int) -> tuple[list[float], float]:
    """Send ``total`` requests over ``concurrency`` keep-alive connections; latencies and wall time."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in counter:
            latencies.append(await _one(reader, writer, requests[i % len(requests)]))
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


def build_requests(images: list[Path]) -> list[bytes]:
    out = []
    for path in images:
        body = json.dumps({"image": base64.b64encode(path.read_bytes()).decode()}).encode()
        out.append(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return out


# ---------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cmd: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {' '.join(cmd)}\n{proc.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {' '.join(cmd)}")


def gear_images(n: int) -> list[Path]:
    from gearsight.data.paths import dataset_dir

    root = dataset_dir("gear")
    if root is None:
        raise SystemExit("the gear dataset is not available (../shared/data/gear); set GEARSIGHT_DATA")
    with open(root / "split.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    return [root / r["path"] for r in rows[:: max(1, len(rows) // n)][:n]]


def random_model(path: Path) -> Path:
    from gearsight.modelfile import ModelSpec, save_model
    from gearsight.models import create_model

    classes = sorted(p.name for p in gear_images(1)[0].parents[1].iterdir() if p.is_dir())
    save_model(path, create_model("gearnet", num_classes=len(classes)),
               ModelSpec(arch="gearnet", arch_config={}, classes=classes, input_size=64))
    return path


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (`serve --processes N`'s workers, the heavy-body processes)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:  # exited while we looked
        return []
    return [pid] + [p for c in children for p in process_tree(int(c))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants: unlike req/s, barely moved by other
    load on the box."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def top1(port: int, request: bytes) -> str:
    """The top label a server answers for one prebuilt request (checks both servers agree)."""
    body = request.partition(b"\r\n\r\n")[2]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/score", body, {"Content-Type": "application/json"})
    return json.loads(conn.getresponse().read())["predictions"][0]["label"]


def measure(name: str, cmd: list[str], requests: list[bytes], plan: dict[int, int], env: dict | None = None) -> dict:
    """Start one server, warm it up, then run each (concurrency, requests) level of ``plan``."""
    port = free_port()
    proc = start_server(cmd + [str(port)], port, env)
    try:
        asyncio.run(load(port, requests, 4, 64))  # warm-up: sessions, allocators, thread pools
        rows: dict = {"top1": [top1(port, r) for r in requests[:16]]}
        for concurrency, total in plan.items():
            cpu = cpu_seconds(proc.pid)
            lat, wall = asyncio.run(load(port, requests, concurrency, total))
            ms = np.asarray(lat) * 1000
            r = rows[concurrency] = {"p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99), "rps": total / wall,
                                     "cpu_ms": (cpu_seconds(proc.pid) - cpu) * 1000 / total}
            print(f"  {name:<30} c={concurrency:<3} p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
                  f"{r['rps']:7.1f} req/s  server CPU {r['cpu_ms']:.2f} ms/req", flush=True)
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def median_rows(rounds: list[dict]) -> dict[int, dict]:
    levels = [c for c in rounds[0] if c != "top1"]
    return {c: {k: float(np.median([r[c][k] for r in rounds])) for k in rounds[0][c]} for c in levels}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a .safetensors model (default: random-init GearNet, 64 px)")
    ap.add_argument("--images", type=int, default=64, help="distinct gear test photos to cycle through")
    ap.add_argument("--requests", type=int, nargs=2, default=(300, 1500), metavar=("C1", "C32"),
                    help="requests sent at concurrency 1 and 32")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds, servers interleaved in each; medians reported (the box is shared and noisy)")
    ap.add_argument("--before-src", type=Path, help="also serve with the gearsight package in this src/ folder "
                    "(e.g. a `git worktree` of an older commit), interleaved like the others: does a change cost speed?")
    ap.add_argument("--processes", type=int, default=2,
                    help="also measure `gearsight serve --processes N` (N worker processes on one port); 1: skip")
    ap.add_argument("--baseline-server", type=Path, help=argparse.SUPPRESS)  # internal: run the baseline
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_server:
        import uvicorn

        uvicorn.run(baseline_app(str(args.baseline_server)), host="127.0.0.1", port=args.port,
                    access_log=False, log_level="warning")
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = args.model or random_model(tmp / "gearnet-random.safetensors")
    label = str(model) if args.model else "random-init GearNet 64 px (12 classes), NOT a trained model"
    onnx = tmp / "model.onnx"
    subprocess.run([sys.executable, "-m", "gearsight", "export", str(model), "--out", str(onnx)], check=True, cwd=REPO)
    requests = build_requests(gear_images(args.images))
    plan = {1: args.requests[0], 32: args.requests[1]}
    print(f"model: {label}\nimages: {len(requests)} gear test photos as base64 JSON; cores: {os.cpu_count()}; "
          f"requests per level: {plan}; rounds: {args.rounds}")

    serve = [sys.executable, "-m", "gearsight", "serve", str(onnx)]
    servers = {
        "baseline (FastAPI+eager torch)": [sys.executable, __file__, "--baseline-server", str(model), "--port"],
        "gearsight serve (batching)": serve + ["--port"],
        "gearsight serve --no-batching": serve + ["--no-batching", "--port"],
    }
    if args.processes > 1:
        servers[f"gearsight serve --processes {args.processes}"] = serve + ["--processes", str(args.processes), "--port"]
    envs = {}
    if args.before_src:
        servers[f"gearsight serve, {args.before_src}"] = serve + ["--port"]
        envs[f"gearsight serve, {args.before_src}"] = {**os.environ, "PYTHONPATH": str(args.before_src.resolve())}
    rounds: dict[str, list] = {name: [] for name in servers}
    names = list(servers)
    for i in range(args.rounds):
        print(f"round {i + 1}/{args.rounds}")
        for name in names[i % len(names):] + names[: i % len(names)]:  # rotate who goes first
            rounds[name].append(measure(name, servers[name], requests, plan, envs.get(name)))
    runs = {name: median_rows(r) for name, r in rounds.items()}
    labels = [r[0]["top1"] for r in rounds.values()]
    agree = sum(len(set(per_image)) == 1 for per_image in zip(*labels))
    print(f"same top-1 label from every server on {agree}/{len(labels[0])} images")

    base = runs["baseline (FastAPI+eager torch)"]
    print(f"\nmedians of {args.rounds} rounds")
    print("| server | c | p50 ms | p99 ms | req/s | req/s vs baseline | server CPU ms/req | CPU vs baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        for c, r in rows.items():
            print(f"| {name} | {c} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | "
                  f"{r['rps'] / base[c]['rps']:.2f}x | {r['cpu_ms']:.2f} | {base[c]['cpu_ms'] / r['cpu_ms']:.2f}x less |")


if __name__ == "__main__":
    main()
