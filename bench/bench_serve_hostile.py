"""The scoring service under hostile load (issue 11): does a normal client still get fast answers?

One `gearsight serve` (default limits, 127.0.0.1) of the 12-class GearNet at 64 px. A normal client
scores real gear test photos one request at a time, first alone (idle), then while 64 hostile
clients (another process) loop over: 16 MiB bodies (a valid JSON base64 string of random bytes,
declared; the same chunked; a v2 BYTES flood of ~950,000 1x1 PPMs), and the decompression bombs of
findings 1-4 (8 x 36 MP lossless WebPs in one request, a 36 MP 16-bit PNG, a 40,000 x 1 PNG).
Reported: the normal client's p50/p99 idle and under attack and their ratio (goal: p99 < 10x idle),
every status it and the attackers got (goal: no 5xx), and the server's RSS, its heavy-body process
included, sampled every 20 ms (goal: < 1.5 GB). Then, in the same run, bench/bench_serve.py's
throughput goal: >= 3x the FastAPI + eager torch baseline at concurrency 32, p50 <= 5 ms at 1.

    python bench/bench_serve_hostile.py [--seconds 30] [--rounds 3] [--before-src DIR]

--before-src: the throughput part also serves from an older tree's src/ (git worktree add DIR/.. REV),
interleaved, so "hardening must not cost the speed" is one comparison on the same busy machine.

Bounded: the attack lasts --seconds, every request has a timeout, all traffic is on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]
import bench_serve  # noqa: E402  (load generator, servers, gear photos)

MiB = 1 << 20
CLIENTS = 64
# The hostile clients connect from another loopback address (all of 127/8 is this machine's), as
# hostile clients on a network come from addresses of their own: the server takes client addresses
# in turn (serve/fairpool.py) and caps each one's share of the queue. --same-address sends them
# from 127.0.0.1 as the normal client, where that cannot help.
ATTACKER_ADDRESS = "127.0.0.2"


# ---------------------------------------------------------------- hostile requests
def hostile_requests() -> list[tuple[str, bytes, bytes]]:
    """(name, HTTP head, body) of each attack; the body is sent in 256 KiB pieces."""
    from test_serve_hostile import PPM_1x1, png16, solid_webp, thin_png

    rng = np.random.default_rng(0)
    junk = base64.b64encode(rng.integers(0, 256, 12 * MiB, dtype=np.uint8).tobytes()).decode()
    big_json = json.dumps({"image": junk[: 16 * MiB - 100]}).encode()
    one = base64.b64encode(PPM_1x1).decode()
    n = (16 * MiB - 200) // (len(one) + 4)  # each element: "...", 
    flood = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [n], "data": [one] * n}]}).encode()
    webp = base64.b64encode(solid_webp(6000, 6000)).decode()
    bombs = json.dumps([{"image": webp}] * 8).encode()
    deep = json.dumps({"image": base64.b64encode(png16(6000, 6000)).decode()}).encode()
    thin = json.dumps({"image": base64.b64encode(thin_png(40_000)).decode()}).encode()

    def head(path: str, body: bytes, chunked: bool = False) -> bytes:
        length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
        return b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%s\r\n\r\n" % (
            path.encode(), length)

    return [("16 MiB base64 JSON", head("/score", big_json), big_json),
            ("16 MiB chunked", head("/score", big_json, True), big_json),
            ("16 MiB v2 PPM flood", head("/v2/models/model/infer", flood), flood),
            ("8 x 36 MP WebP", head("/score", bombs), bombs),
            ("36 MP 16-bit PNG", head("/score", deep), deep),
            ("40000x1 PNG", head("/score", thin), thin)]


async def _send(writer: asyncio.StreamWriter, head: bytes, body: bytes, chunked: bool) -> None:
    writer.write(head)
    view = memoryview(body)
    for i in range(0, len(body), 256 * 1024):
        piece = view[i : i + 256 * 1024]
        writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _status(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length"))
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), any(x.startswith(b"connection: close") for x in lines)


async def attacker(port: int, requests, seconds: float, counts: Counter, k: int, source: str) -> None:
    stop = time.monotonic() + seconds
    reader = writer = None
    i = k
    while time.monotonic() < stop:
        name, head, body = requests[i % len(requests)]
        i += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            send = asyncio.ensure_future(_send(writer, head, body, b"chunked" in head))
            send.add_done_callback(lambda t: t.cancelled() or t.exception())  # a reset is expected
            status, close = await asyncio.wait_for(_status(reader), 60)
            counts[f"{name}: {status}"] += 1
            if close or not send.done():  # answered before the body was read: the server drops it
                send.cancel()
                writer.close()
                writer = None
            else:
                await send
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            counts[f"{name}: {type(exc).__name__}"] += 1
            if writer is not None:
                writer.close()
            writer = None


def attack(port: int, seconds: float, out: multiprocessing.Queue, only: str = "", source: str = ATTACKER_ADDRESS) -> None:
    """The 64 hostile clients, in a process of their own (their CPU is not the normal client's)."""
    requests = [r for r in hostile_requests() if not only or any(w in r[0] for w in only.split(","))]
    counts: Counter = Counter()

    async def run():
        await asyncio.gather(*(attacker(port, requests, seconds, counts, k, source) for k in range(CLIENTS)))

    asyncio.run(run())
    out.put(dict(counts))


# ---------------------------------------------------------------- the normal client and the server
async def normal_client(port: int, requests: list[bytes], seconds: float | None, total: int) -> tuple[list, Counter]:
    latencies, statuses = [], Counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    stop = time.monotonic() + (seconds or 1e9)
    i = 0
    while i < total or (seconds and time.monotonic() < stop):
        start = time.perf_counter()
        writer.write(requests[i % len(requests)])
        status, _ = await asyncio.wait_for(_status(reader), 60)
        latencies.append(time.perf_counter() - start)
        statuses[status] += 1
        i += 1
        if seconds and time.monotonic() >= stop:
            break
    writer.close()
    return latencies, statuses


def rss_of_tree(pid: int) -> int:
    """RSS of ``pid`` and all its descendants (workers of --processes, heavy-body processes), bytes."""
    total = 0
    for p in bench_serve.process_tree(pid):
        try:
            total += sum(int(line.split()[1]) * 1024 for line in Path(f"/proc/{p}/status").read_text().splitlines()
                         if line.startswith("VmRSS:"))
        except FileNotFoundError:
            pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.running = pid, [], True

    def run(self) -> None:
        while self.running:
            self.samples.append(rss_of_tree(self.pid))
            time.sleep(0.02)


def pct(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies) * 1000, q))


def hostile_round(onnx: Path, requests: list[bytes], seconds: float, idle_requests: int, only: str = "",
                  source: str = ATTACKER_ADDRESS, processes: int = 1) -> dict:
    port = bench_serve.free_port()
    proc = bench_serve.start_server([sys.executable, "-m", "gearsight", "serve", str(onnx), "--name", "model",
                                     "--processes", str(processes), "--port", str(port)], port)
    try:
        if processes > 1:
            time.sleep(5.0)  # the port answers once the first worker is up; let the others load too
        asyncio.run(bench_serve.load(port, requests, 4, 64))  # warm-up
        idle, idle_status = asyncio.run(normal_client(port, requests, None, idle_requests))
        rss_idle = rss_of_tree(proc.pid)
        sampler = RssSampler(proc.pid)
        sampler.start()
        queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        attackers = multiprocessing.get_context("spawn").Process(target=attack, args=(port, seconds, queue, only, source))
        attackers.start()
        time.sleep(2.0)  # let all 64 get going
        hot, hot_status = asyncio.run(normal_client(port, requests, seconds - 4.0, 1))
        counts = queue.get(timeout=seconds + 120)
        attackers.join(timeout=60)
        sampler.running = False
        sampler.join()
        after, after_status = asyncio.run(normal_client(port, requests, None, 50))
        return {"idle_p50": pct(idle, 50), "idle_p99": pct(idle, 99), "hot_p50": pct(hot, 50), "hot_p99": pct(hot, 99),
                "hot_n": len(hot), "normal_status": dict(idle_status + hot_status + after_status),
                "attack": counts, "rss_idle_mb": rss_idle / MiB, "rss_max_mb": max(sampler.samples) / MiB,
                "alive": proc.poll() is None}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30, help="length of each attack")
    ap.add_argument("--rounds", type=int, default=3, help="attack rounds and bench_serve rounds; medians reported")
    ap.add_argument("--idle-requests", type=int, default=400)
    ap.add_argument("--skip-throughput", action="store_true", help="only the hostile part")
    ap.add_argument("--before-src", type=Path, help="passed to bench_serve.py: the same servers from this src/ too")
    ap.add_argument("--same-address", action="store_true",
                    help="hostile clients from 127.0.0.1, the normal client's address (default: 127.0.0.2)")
    ap.add_argument("--processes", type=int, default=1,
                    help="attack `gearsight serve --processes N`; the throughput part measures it beside 1 process")
    ap.add_argument("--only", default="", help="attacks whose names contain one of these comma-separated words")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    model = bench_serve.random_model(tmp / "gearnet-random.safetensors")
    onnx = tmp / "model.onnx"
    subprocess.run([sys.executable, "-m", "gearsight", "export", str(model), "--out", str(onnx)], check=True, cwd=REPO)
    requests = bench_serve.build_requests(bench_serve.gear_images(64))
    print(f"server: gearsight serve --processes {args.processes}; "
          f"machine: {os.cpu_count()} cores; model: random-init GearNet 64 px, 12 classes; {CLIENTS} hostile clients "
          f"from {'127.0.0.1' if args.same_address else ATTACKER_ADDRESS} for {args.seconds:g} s a round; {args.rounds} rounds", flush=True)
    rounds = []
    for i in range(args.rounds):
        r = hostile_round(onnx, requests, args.seconds, args.idle_requests, args.only,
                          "127.0.0.1" if args.same_address else ATTACKER_ADDRESS, args.processes)
        rounds.append(r)
        print(f"round {i + 1}: idle p50 {r['idle_p50']:.2f} ms p99 {r['idle_p99']:.2f} ms | under attack p50 "
              f"{r['hot_p50']:.2f} ms p99 {r['hot_p99']:.2f} ms ({r['hot_n']} requests) | p99 ratio "
              f"{r['hot_p99'] / r['idle_p99']:.1f}x | RSS idle {r['rss_idle_mb']:.0f} MiB, max {r['rss_max_mb']:.0f} MiB"
              f" | normal client statuses {r['normal_status']} | server alive: {r['alive']}", flush=True)
        print("  attackers got: " + ", ".join(f"{k} x{v}" for k, v in sorted(r["attack"].items())), flush=True)
    med = {k: float(np.median([r[k] for r in rounds])) for k in ("idle_p50", "idle_p99", "hot_p50", "hot_p99",
                                                                    "rss_idle_mb", "rss_max_mb")}
    ratios = [r["hot_p99"] / r["idle_p99"] for r in rounds]
    five = sum(v for r in rounds for k, v in list(r["attack"].items()) + [(str(s), n) for s, n in r["normal_status"].items()]
               if k.rsplit(": ", 1)[-1].startswith("5"))
    normal_ok = all(set(r["normal_status"]) == {200} for r in rounds)
    print(f"\nmedians of {args.rounds} rounds")
    print("| normal client | p50 ms | p99 ms |\n|---|---|---|")
    print(f"| idle | {med['idle_p50']:.2f} | {med['idle_p99']:.2f} |")
    print(f"| under attack | {med['hot_p50']:.2f} | {med['hot_p99']:.2f} |")
    print(f"p99 under attack / idle: median {np.median(ratios):.1f}x, worst {max(ratios):.1f}x (goal < 10x)")
    print(f"server RSS (with its heavy-body process): idle {med['rss_idle_mb']:.0f} MiB, max {max(r['rss_max_mb'] for r in rounds):.0f} MiB "
          f"(goal < 1536 MiB)")
    print(f"5xx answers: {five} (goal 0); normal client all 200: {normal_ok}; server alive after each round: "
          f"{all(r['alive'] for r in rounds)}", flush=True)
    if not args.skip_throughput:
        print("\nthroughput goal (bench/bench_serve.py's comparison, same run):", flush=True)
        sys.argv = [sys.argv[0], "--rounds", str(args.rounds), "--processes", str(max(2, args.processes))] + (
            ["--before-src", str(args.before_src)] if args.before_src else [])
        bench_serve.main()


if __name__ == "__main__":
    main()
