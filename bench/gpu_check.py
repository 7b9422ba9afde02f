"""GPU checks of device handling (issue 9): every path that runs a model, on CUDA, in under 3 minutes.

    python bench/gpu_check.py                 # on a machine with a CUDA GPU
    nice -n 10 python bench/gpu_check.py --allow-cpu   # the same checks, small, on CPU with gloo

Checks, each printed as one PASS/FAIL line with its time:
  pack      the gear photos (gearsight.data.datasets.resolve_dataset("gear")) packed at 64 px in a temp dir
  train     the gear recipe for a few epochs on --device cuda (bf16 autocast: amp auto)
  resume    the same run with lookahead and EMA, killed after a checkpoint and resumed; every restored
            tensor (model, optimizer, EMA, lookahead) must be on the model's device
  torchrun  `torchrun --nproc_per_node=1 -m gearsight train` in a subprocess: a process group of one on
            NCCL (gloo on CPU), so the per-epoch all-reduce really runs through NCCL (NCCL_DEBUG=INFO
            output must appear)
  evaluate  workflow.evaluate_packed on the GPU; probabilities agree with a CPU Classifier
  predict   `gearsight predict --device cuda --json` in a subprocess equals Classifier.predict
  detect    one detection epoch (and a resumed second one) on a few coco128 images on the GPU, then
            Detector.predict there
Exits 0 when every check passes, 1 when one fails, 2 without CUDA (unless --allow-cpu). Needs only
the source tree (src/ is put on the path) and the shared data (../shared/data or $GEARSIGHT_DATA).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
       "PYTHONUNBUFFERED": "1"}


class Killed(Exception):
    """Stands in for a crash in the resume check."""


class Checks:
    def __init__(self):
        self.results: list[tuple[str, bool]] = []

    def run(self, name: str, fn) -> bool:
        """Run one check with its console output held back (shown only when it fails)."""
        t0 = time.perf_counter()
        held = io.StringIO()
        try:
            with contextlib.redirect_stdout(held):
                detail = fn()
            ok = True
        except Exception as exc:  # a check that fails reports and the others still run
            ok, detail = False, f"{type(exc).__name__}: {exc}"
            print(held.getvalue()[-3000:], file=sys.stderr)
            traceback.print_exc(limit=4, file=sys.stderr)
        took = time.perf_counter() - t0
        print(f"{'PASS' if ok else 'FAIL'}  {name:<9} {took:6.1f} s  {detail}", flush=True)
        self.results.append((name, ok))
        return ok


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gear_csv(tmp: Path, small: bool) -> Path:
    """The gear split.csv; small: 3 classes, 40/8/8 photos each (as tests/test_gear_cli.py)."""
    from gearsight.data.datasets import resolve_dataset

    gear = resolve_dataset("gear")
    if not small:
        return gear / "split.csv"
    quota, taken, rows = {"train": 40, "val": 8, "test": 8}, {}, []
    with open(gear / "split.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = (row["label"], row["split"])
            if row["label"] in ("axes", "boots", "tents") and taken.get(key, 0) < quota[row["split"]]:
                taken[key] = taken.get(key, 0) + 1
                rows.append([str(gear / row["path"]), row["label"], row["split"]])
    out = tmp / "subset.csv"
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], *rows])
    return out


def all_on(tensors, device) -> bool:
    import torch

    want = torch.device(device)
    return all(t.device.type == want.type and (want.index is None or t.device.index == want.index) for t in tensors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--allow-cpu", action="store_true",
                    help="without CUDA run the checks small on CPU with gloo (checks the logic, not a GPU)")
    ap.add_argument("--epochs", type=int, default=None, help="gear epochs (default 4 on GPU, 2 on CPU)")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp dir)")
    args = ap.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_check: CUDA is not available (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda}): run it on a machine with a CUDA GPU, "
              "or pass --allow-cpu for the small CPU/gloo form that only checks the logic", file=sys.stderr)
        return 2
    small = not cuda
    device = "cuda" if cuda else "cpu"
    epochs = args.epochs or (4 if cuda else 2)
    if cuda:
        name = torch.cuda.get_device_name(0)
        print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s), "
              f"cuda:0 = {name}; NCCL {torch.cuda.nccl.version()}", flush=True)
    else:
        name = "CPU"
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        print(f"gpu_check: --allow-cpu: no CUDA, the small form on CPU with gloo (torch {torch.__version__})", flush=True)

    import gearsight.train as train_mod
    from gearsight import workflow
    from gearsight.data.pack import PackedDataset

    checks = Checks()
    t_all = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        work.mkdir(parents=True, exist_ok=True)
        packed, size = work / ("gear32" if small else "gear64"), 32 if small else 64
        threads = {} if cuda else {"threads": 1, "batch_size": 16}  # small form: a few steps an epoch
        state: dict = {}

        def pack():
            meta = workflow.pack_source(gear_csv(work, small), packed, size=size, progress=False)
            counts = meta["counts"]
            check(counts["packed"] > 0, f"nothing packed: {counts}")
            return f"{packed.name}: {counts}"

        def train():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            summary = workflow.train_packed(packed, work / "train", progress=False, device=device, epochs=epochs, **threads)
            state["model"] = work / "train" / "model.safetensors"
            classes = len(PackedDataset(packed).classes)
            check(state["model"].is_file(), "no model file")
            if not small:  # the full gear set learns in a few epochs; the small CPU form may not
                check(summary["best_val_acc"] > 1.5 / classes, f"val accuracy {summary['best_val_acc']:.3f} is chance level")
            rows = list(csv.DictReader(open(work / "train" / "metrics.csv")))
            peak = f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else ""
            check(not cuda or torch.cuda.max_memory_allocated() > 0, "nothing was allocated on the GPU")
            return (f"{epochs} epochs in {summary['train_seconds']:.1f} s ({float(rows[-1]['img_per_s']):.0f} img/s "
                    f"last epoch), best val acc {summary['best_val_acc']:.3f} at epoch {summary['best_epoch']}{peak}")

        def resume():
            run = work / "resume"
            opts = dict(device=device, epochs=epochs, lookahead=True, ema=0.9, **threads)
            real = train_mod.train_one_epoch

            def dies(model, batches, optimizer, scheduler, epoch, *a, **kw):
                if epoch == epochs - 1:
                    raise Killed
                return real(model, batches, optimizer, scheduler, epoch, *a, **kw)

            train_mod.train_one_epoch = dies
            try:
                workflow.train_packed(packed, run, progress=False, **opts)
                raise AssertionError("the run was not interrupted")
            except Killed:
                pass
            finally:
                train_mod.train_one_epoch = real
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                summary = workflow.train_packed(packed, run, resume=True, progress=False, **opts)
            check(f"at epoch {epochs - 1}" in out.getvalue(), f"did not resume at epoch {epochs - 1}: {out.getvalue()[:300]}")
            logged = [int(r["epoch"]) for r in csv.DictReader(open(run / "metrics.csv"))]
            check(logged == list(range(epochs)), f"epochs logged {logged}")
            # Restore last.pt into fresh objects on the device, as fit does: every tensor must be there.
            from gearsight.config import TrainConfig
            from gearsight.devices import resolve_device

            cfg = TrainConfig().update(**opts)
            where = resolve_device(device)
            classes = len(PackedDataset(packed).classes)
            model = train_mod.build_model(cfg, classes, where)
            opt = train_mod.make_optimizer(model, cfg)
            sched = train_mod.make_scheduler(opt, cfg, 100)
            ema, look = train_mod.make_ema(model, cfg.ema), train_mod.Lookahead(model, 100)
            train_mod.load_resume_state(run / "last.pt", model, opt, sched, ema, look)
            opt_tensors = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim > 0]
            groups = {"model": list(model.state_dict().values()), "optimizer": opt_tensors,
                      "ema": list(ema.module.state_dict().values()), "lookahead": list(look.slow.values())}
            wrong = [k for k, ts in groups.items() if not ts or not all_on(ts, where)]
            check(not wrong, f"state not on {where}: {wrong}")
            look.finish(model)  # lerp_ of slow weights into the model: fails across devices
            return (f"killed at epoch {epochs - 1}, resumed; lookahead+EMA; "
                    f"{sum(map(len, groups.values()))} restored tensors on {where}; best val acc {summary['best_val_acc']:.3f}")

        def torchrun():
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                   f"--master_port={free_port()}", "-m", "gearsight", "train", str(packed), "--out",
                   str(work / "ddp"), "--epochs", "2", "--device", device, "--quiet"]
            if not cuda:
                cmd += ["--threads", "1"]
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                                  env={**ENV, "NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "1"})
            text = proc.stdout + proc.stderr
            check(proc.returncode == 0, f"exit {proc.returncode}: {text[-1500:]}")
            check("best val accuracy" in proc.stdout, "no summary line")
            if cuda:
                check("NCCL INFO" in text, "no NCCL output: the all-reduce did not run through NCCL")
            line = [ln for ln in proc.stdout.splitlines() if "best val accuracy" in ln][0]
            return f"{'NCCL' if cuda else 'gloo'}, 1 process: {line[:90]}"

        def evaluate():
            from gearsight.predict import Classifier

            report = workflow.evaluate_packed(state["model"], packed, "test", work / "eval", device=device)
            clf = Classifier.load(state["model"], device=device)
            check(all_on(clf.model.parameters(), device), f"Classifier weights not on {device}")
            images, _ = PackedDataset(packed).subset("test")
            here = clf.predict_packed(images)
            on_cpu = Classifier.load(state["model"], device="cpu").predict_packed(images)
            diff = float(abs(here - on_cpu).max())
            agree = float((here.argmax(1) == on_cpu.argmax(1)).mean())
            check(diff < 2e-2 and agree >= 0.99, f"{device} vs cpu: max |dp| {diff:.2e}, argmax agreement {agree:.3f}")
            return (f"test accuracy {report['accuracy']:.3f} on {report['n']} images; {device} vs cpu probabilities "
                    f"max |diff| {diff:.1e}, argmax agreement {agree:.1%}")

        def predict():
            from gearsight.predict import Classifier

            photos = PackedDataset(packed).paths("test")[:4]
            proc = subprocess.run([sys.executable, "-m", "gearsight", "predict", str(state["model"]), *photos,
                                   "--json", "--top-k", "2", "--device", device],
                                  cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
            check(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1500:]}")
            printed = json.loads(proc.stdout)
            preds = Classifier.load(state["model"], device=device).predict(photos, top_k=2)
            check([r["label"] for r in printed] == [p.label for p in preds], "CLI and Classifier labels differ")
            check(all(abs(r["probability"] - p.probability) < 1e-4 for r, p in zip(printed, preds)), "probabilities differ")
            return f"{len(photos)} photos: " + ", ".join(f"{r['label']} {r['probability']:.2f}" for r in printed)

        def detect():
            from gearsight import cli
            from gearsight.data.datasets import resolve_dataset
            from gearsight.detect.predict import Detector

            src = resolve_dataset("coco128")
            data = json.loads((src / "annotations/instances_train2017.json").read_text())
            n = 4 if small else 8
            data["images"] = sorted(data["images"], key=lambda im: im["id"])[:n]
            keep = {im["id"] for im in data["images"]}
            data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
            subset = work / "coco_subset.json"
            subset.write_text(json.dumps(data))
            run = work / "detect"
            common = [str(subset), "--images", str(src / "train2017"), "--out", str(run), "--train-split", "all",
                      "--val-split", "all", "--min-size", "96" if small else "320", "--max-size", "128" if small else "427",
                      "--batch-size", "2" if small else "4", "--workers", "0", "--warmup", "4", "--device", device]
            if cuda:
                common += ["--threads", str(min(8, os.cpu_count() or 1))]
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                check(cli.main(["detect", "train", *common, "--epochs", "1"]) == 0, "detect train failed")
                check(cli.main(["detect", "train", *common, "--epochs", "2", "--resume"]) == 0, "detect resume failed")
            check("resumed from" in out.getvalue(), "detect train did not resume")
            rows = list(csv.DictReader(open(run / "metrics.csv")))
            check([r["epoch"] for r in rows] == ["1", "2"], f"epochs logged {[r['epoch'] for r in rows]}")
            detector = Detector.load(run / "model.safetensors", device=device)
            check(all_on(detector.model.parameters(), device), f"Detector weights not on {device}")
            image = str(src / "train2017" / data["images"][0]["file_name"])
            result = detector.predict([image], min_score=0.0)[0]
            check(len(result["boxes"]) == len(result["scores"]), "malformed prediction")
            return (f"{n} coco128 images, 2 epochs (1 + resumed 1): loss {float(rows[-1]['loss']):.3f}, "
                    f"{float(rows[-1]['img_per_s']):.1f} img/s, val AP50 {float(rows[-1]['val_AP50'] or 0):.3f}; "
                    f"predict: {len(result['boxes'])} boxes")

        if checks.run("pack", pack):
            if checks.run("train", train):
                checks.run("evaluate", evaluate)
                checks.run("predict", predict)
            checks.run("resume", resume)
            checks.run("torchrun", torchrun)
        checks.run("detect", detect)
    passed = sum(ok for _, ok in checks.results)
    print(f"gpu_check: {passed}/{len(checks.results)} checks passed in {time.perf_counter() - t_all:.0f} s "
          f"(device {device}, {name})", flush=True)
    return 0 if passed == len(checks.results) and len(checks.results) == 7 else 1


if __name__ == "__main__":
    raise SystemExit(main())
