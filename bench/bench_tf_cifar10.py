"""TensorFlow's CIFAR-10 tutorial CNN in TensorFlow vs the same net in PyTorch (--arch tf_cifar10), plus gearsight's AirNet at the TF run's time.

One table, one machine, one packed copy of the shared CIFAR-10 tar (50,000 train / 10,000 test):
1. TensorFlow: examples/tensorflow_cifar10.py in .venv-tf (`make tf`): tf.data from the packed arrays,
   N epochs, batch 128, Nesterov SGD with gearsight's one-cycle schedule, evaluated on the central crops;
2. PyTorch: `gearsight train --config configs/cifar10-tf-tutorial.yaml` (the same net, augmentation,
   optimizer, schedule, batch and epochs), then `gearsight evaluate --no-tta` (as the TF side);
3. gearsight's own recipe: AirNet with configs/cifar10-10min.yaml, its training budget (`--minutes`) set
   to the TensorFlow run's training time, evaluated with its own TTA.

    make tf
    .venv/bin/python bench/bench_tf_cifar10.py --epochs 4 --train-limit 10000 --out work/bench_tf_cifar10

Prints the machine, the load average before and after each run, the commands and the table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from bench_cifar import cpu_name  # noqa: E402  (bench/ is on sys.path when run as a script)
TF_PYTHON = REPO / ".venv-tf" / "bin" / "python"


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` (output to ``log`` and the console's tail), return its wall seconds; fail loudly."""
    print("$ " + " ".join(map(str, cmd)), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(list(map(str, cmd)), cwd=REPO, stdout=f, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"exit {proc.returncode}: see {log}\n" + log.read_text()[-3000:])
    return wall


def epoch_seconds(run_dir: Path) -> float:
    """Training time as gearsight logged it: the sum of metrics.csv's epoch_time (no start-up)."""
    import csv

    with open(run_dir / "metrics.csv") as f:
        return sum(float(row["epoch_time"]) for row in csv.DictReader(f))


def subset_pack(packed: Path, out: Path, n_train: int, seed: int = 0) -> Path:
    """A pack holding a seeded sample of ``n_train`` train images and every test image of ``packed``
    (the same files, rows and meta.json fields, fewer items): all three runs train on the same sample."""
    import numpy as np

    from gearsight.data.pack import PackedDataset, PackWriter

    if (out / "meta.json").is_file():
        return out
    ds = PackedDataset(packed)
    keep = np.sort(np.concatenate([np.random.default_rng(seed).choice(ds.indices("train"), n_train, replace=False),
                                   ds.indices("test")]))
    writer = PackWriter(out, len(keep), ds.size)
    writer.add_rows(ds.images[keep], ds.labels[keep], ds.splits[keep], [ds.meta["items"][i] for i in keep])
    written = {"format", "format_version", "size", "resize", "fill", "layout", "classes", "splits", "counts",
               "items", "skipped"}
    extra = {**{k: v for k, v in ds.meta.items() if k not in written}, "subset_of": str(packed)}
    writer.finish(ds.classes, ds.meta["resize"], ds.meta["fill"], ds.meta["skipped"], extra=extra,
                  read=ds.meta["counts"]["read"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tar", default=str(REPO.parent / "shared" / "data" / "cifar10" / "cifar10_jpg.tar"))
    ap.add_argument("--packed", type=Path, help="an existing pack of the tar (--split 1,0,0); default: pack into --out")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-limit", type=int, help="train on a seeded sample of N of the 50,000 (all three runs)")
    ap.add_argument("--out", type=Path, default=REPO / "work" / "bench_tf_cifar10")
    ap.add_argument("--skip-airnet", action="store_true")
    args = ap.parse_args()
    if not TF_PYTHON.is_file():
        sys.exit(f"{TF_PYTHON} is absent: run `make tf` first")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    gs = [sys.executable, "-m", "gearsight"]
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_name()}, {os.cpu_count()} cores; "
          f"load average {load()}", flush=True)

    packed = args.packed or out / "packed"
    if not (packed / "meta.json").is_file():
        run([*gs, "pack", args.tar, packed, "--split", "1,0,0"], out / "pack.log")
    if args.train_limit:
        packed = subset_pack(packed, out / f"packed-train{args.train_limit}", args.train_limit)
    n_train = json.loads((packed / "meta.json").read_text())["counts"]["packed_train"]

    rows = []
    # 1. TensorFlow
    before = load()
    tf_json = out / "tf.json"
    wall = run([TF_PYTHON, "examples/tensorflow_cifar10.py", packed, "--epochs", args.epochs,
                "--onnx", out / "tf_cifar10.onnx", "--json", tf_json], out / "tf.log")
    tf = json.loads(tf_json.read_text())
    rows.append(("TF tutorial CNN, TensorFlow " + tf["tensorflow"], args.epochs, tf["train_seconds"],
                 tf["test_accuracy"], wall, before, load()))

    # 2. the same net in PyTorch through gearsight train / evaluate
    before = load()
    t0 = time.perf_counter()
    run([*gs, "train", packed, "--out", out / "torch", "--config", "configs/cifar10-tf-tutorial.yaml",
         "--epochs", args.epochs, "--quiet"], out / "torch_train.log")
    train_s = epoch_seconds(out / "torch")
    run([*gs, "evaluate", out / "torch" / "model.safetensors", packed, "--split", "test", "--out", out / "torch_eval",
         "--no-tta"], out / "torch_eval.log")  # the central crop once, as TensorFlow evaluates
    report = json.loads((out / "torch_eval" / "report.json").read_text())
    import torch

    rows.append((f"TF tutorial CNN, PyTorch {torch.__version__} (--arch tf_cifar10)", args.epochs, train_s,
                 report["accuracy"], time.perf_counter() - t0, before, load()))

    # 3. gearsight's recipe in the TensorFlow run's training time
    if not args.skip_airnet:
        minutes = tf["train_seconds"] / 60
        before = load()
        t0 = time.perf_counter()
        run([*gs, "train", packed, "--out", out / "airnet", "--config", "configs/cifar10-10min.yaml",
             "--minutes", f"{minutes:.2f}", "--quiet"], out / "airnet_train.log")
        train_s = epoch_seconds(out / "airnet")
        run([*gs, "evaluate", out / "airnet" / "model.safetensors", packed, "--split", "test", "--out",
             out / "airnet_eval"], out / "airnet_eval.log")
        report = json.loads((out / "airnet_eval" / "report.json").read_text())
        import yaml

        epochs = yaml.safe_load((out / "airnet" / "config.yaml").read_text())["epochs"]
        rows.append((f"gearsight AirNet (cifar10-10min.yaml, --minutes {minutes:.2f}, TTA)", epochs, train_s,
                     report["accuracy"], time.perf_counter() - t0, before, load()))

    print(f"\nCIFAR-10 test accuracy (10,000 test images) after training on {n_train:,} images; {cpu_name()}, {os.cpu_count()} cores; "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print("| model | epochs | training s (epochs only) | test acc | wall s (start-up, train, evaluate) | load before | load after |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name, epochs, train_s, acc, wall, before, after in rows:
        print(f"| {name} | {epochs} | {train_s:.0f} | {acc:.2%} | {wall:.0f} | {before} | {after} |")
    (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
