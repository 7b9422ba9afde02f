"""``gearsight serve`` and ``python -m gearsight.serve``: the serve command's options and what it
does with them (check the model file, the API key and the limits, export a .safetensors in a child
process, run uvicorn).

It lives in serve/ so that ``python -m gearsight.serve`` (the slim container's entry point) needs
nothing outside this package; ``commands/serve_cmd.py`` registers the same options as a subcommand
of ``gearsight``. Nothing here imports torch.
"""
from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
import tempfile
from pathlib import Path

from gearsight.serve.config import API_KEY_ENV, ServeConfig

HELP = "serve a model over HTTP (JSON, multipart, Open Inference Protocol v2, web page)"
DESCRIPTION = ("Serve an exported .onnx model (or a .safetensors one, exported on the fly) with "
               "ONNX Runtime behind FastAPI + uvicorn. The serving process does not import torch.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The serve command's options, on ``p`` (a subcommand's parser or a parser of its own)."""
    p.add_argument("model", type=Path, help=".onnx from `gearsight export`, or a .safetensors model file")
    p.add_argument("--detector", type=Path, default=None,
                   help="also serve POST /detect with this detector (.onnx from `gearsight detect export`, "
                   "or its .safetensors, exported on the fly)")
    d = ServeConfig(api_key=None)
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    net.add_argument("--port", type=int, default=8000)
    net.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' (visible in `ps`: prefer "
                     f"${API_KEY_ENV} or --api-key-file)")
    net.add_argument("--api-key-file", type=Path, default=None, help="read the API key from this file (first line)")
    net.add_argument("--insecure", action="store_true",
                     help="allow a non-loopback --host without an API key (anyone who reaches the port can score)")
    net.add_argument("--access-log", action="store_true", help="log every request (costs latency)")
    net.add_argument("--http", choices=["auto", "httptools", "h11"], default="auto", help="uvicorn's HTTP parser")
    lim = p.add_argument_group("limits (over one: 413; past the back-pressure bounds: 429 with Retry-After)")
    lim.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2**20, help="largest request body, MiB")
    lim.add_argument("--max-pixels", type=int, default=None,
                     help="largest declared image, width*height (default: (32 x the model's input side)^2, "
                     "4 to 40 MP; a JPEG over it is decoded at 1/2..1/8 scale)")
    lim.add_argument("--max-items", type=int, default=d.max_items, help="images or tensors in one request")
    lim.add_argument("--max-queue", type=int, default=d.max_queue, help="requests decoding, waiting or running at once")
    lim.add_argument("--max-queue-per-client", type=int, default=None,
                     help="of those, from one client address (default: half of --max-queue; behind a proxy that "
                          "does not pass the client's address, set it to --max-queue)")
    lim.add_argument("--body-budget-mb", type=float, default=d.body_budget_bytes / 2**20,
                     help="request bodies over 1 MiB in flight at once, MiB")
    lim.add_argument("--limit-concurrency", type=int, default=d.limit_concurrency,
                     help="connections + requests at once (uvicorn answers 503 past it)")
    lim.add_argument("--timeout", type=float, default=d.timeout_s, help="per-request deadline, s (503 past it)")
    lim.add_argument("--shutdown-timeout", type=float, default=d.shutdown_timeout_s,
                     help="on SIGTERM, seconds in-flight requests get to finish")
    run = p.add_argument_group("model and batching")
    run.add_argument("--name", default=None, help="model name in URLs (default: the file's stem)")
    run.add_argument("--top-k", type=int, default=d.top_k, help="default predictions per image")
    run.add_argument("--no-batching", dest="batching", action="store_false", help="one model run per request")
    run.add_argument("--max-batch", type=int, default=d.max_batch, help="inputs per model run")
    run.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="longest wait to fill a batch, ms")
    run.add_argument("--workers", type=int, default=d.workers, help="decode threads in all (split over --processes)")
    run.add_argument("--processes", type=int, default=d.processes,
                     help="server processes sharing the port, each with the model loaded (one per core serves "
                          "the most requests; memory grows with each)")
    run.add_argument("--threads", type=int, default=d.threads, help="ONNX Runtime threads per model run")


def _export_in_child(model: Path, out: Path, detector: bool = False) -> None:
    """Export in a separate process so this one, which goes on to serve, never imports torch."""
    command = ["detect", "export"] if detector else ["export"]
    proc = subprocess.run([sys.executable, "-m", "gearsight", *command, str(model), "--out", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"{model}: export to ONNX failed: {proc.stderr.strip().splitlines()[-1:]}")


def main(argv: list[str] | None = None) -> int:
    """``python -m gearsight.serve MODEL ...``: the serve command alone, without importing the other
    subcommands (the slim container has no torch, and must not depend on their imports staying light)."""
    parser = argparse.ArgumentParser(prog="gearsight-serve", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return serve(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"gearsight serve: error: {exc}", file=sys.stderr)
        return 2


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file is not None:
        lines = args.api_key_file.read_text().splitlines()
        if not lines or not lines[0].strip():
            raise ValueError(f"--api-key-file {args.api_key_file}: empty")
        return lines[0].strip()
    return args.api_key or None


def _check_model_file(path: Path) -> None:
    """A training checkpoint (torch.save's zip, or pickle) is an easy mistake: say what to serve instead."""
    with path.open("rb") as f:
        head = f.read(4)
    if path.suffix in (".pt", ".pth", ".ckpt") or head[:2] == b"\x80\x02" or head == b"PK\x03\x04":
        raise ValueError(f"{path}: this is a training checkpoint; serve the run's model.safetensors "
                         "(e.g. RUN/model.safetensors) or an exported .onnx (`gearsight export`)")


def serve(args: argparse.Namespace) -> int:
    from gearsight.serve.app import run

    if not args.model.is_file():
        raise FileNotFoundError(f"model file not found: {args.model}")
    _check_model_file(args.model)
    for flag in ("max_body_mb", "max_pixels", "max_items", "top_k", "max_batch", "workers", "processes", "threads",
                 "max_queue", "max_queue_per_client", "body_budget_mb", "limit_concurrency", "timeout",
                 "shutdown_timeout"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.max_wait_ms < 0:
        raise ValueError(f"--max-wait-ms must be 0 or more, got {args.max_wait_ms}")
    config = ServeConfig(
        name=args.name or args.model.stem, max_body_bytes=int(args.max_body_mb * 2**20), max_pixels=args.max_pixels,
        max_items=args.max_items, top_k=args.top_k, batching=args.batching, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, workers=args.workers, processes=args.processes, threads=args.threads,
        max_queue=args.max_queue, body_budget_bytes=int(args.body_budget_mb * 2**20),
        limit_concurrency=args.limit_concurrency, timeout_s=args.timeout, shutdown_timeout_s=args.shutdown_timeout,
        max_queue_per_client=args.max_queue_per_client,
    )
    config.api_key = _api_key(args) or config.api_key
    if not config.api_key and not _loopback(args.host):
        if not args.insecure:
            raise ValueError(f"--host {args.host} without an API key: anyone who reaches the port can score. Set "
                             f"${API_KEY_ENV} (or --api-key-file), or pass --insecure to serve without one")
        print(f"gearsight serve: warning: serving on {args.host} with no API key (--insecure)", file=sys.stderr)
    if args.detector is not None and not args.detector.is_file():
        raise FileNotFoundError(f"detector file not found: {args.detector}")
    if args.detector is not None:
        _check_model_file(args.detector)
    with tempfile.TemporaryDirectory(prefix="gearsight-serve-") as tmp:
        model, detector = args.model, args.detector
        if model.suffix == ".safetensors":
            print(f"exporting {model} to ONNX for serving...", file=sys.stderr)
            _export_in_child(model, Path(tmp) / f"{model.stem}.onnx")
            model = Path(tmp) / f"{model.stem}.onnx"
        if detector is not None and detector.suffix == ".safetensors":
            print(f"exporting {detector} to ONNX for serving...", file=sys.stderr)
            _export_in_child(detector, Path(tmp) / f"{detector.stem}.onnx", detector=True)
            detector = Path(tmp) / f"{detector.stem}.onnx"
        run(model, args.host, args.port, config, args.access_log, detector, http=args.http)
    return 0
