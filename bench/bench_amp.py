"""Why bf16 autocast changes the gear results, measured: the same recipe and seeds trained in fp32
and in bf16, each model then evaluated both ways, plus where in the network bf16 departs from fp32.

    .venv/bin/python bench/bench_amp.py [--seeds 3] [--packed work/gear64] [--set epochs=40 ...]

Three questions, one run:
1. Training: test accuracy (evaluated in fp32) of fp32-trained vs bf16-trained models, per seed.
2. Evaluation: the same weights evaluated in fp32 vs under bf16 autocast (predictions that flip).
3. Layers: relative error ||bf16 - fp32|| / ||fp32|| of every module's output on the test images,
   and the BatchNorm statistics of the batch vs the running ones under each precision.
bf16 runs emulated (slowly) on CPUs without AVX512-BF16/AMX; the accuracy figures still hold.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gearsight import workflow
from gearsight.data.datasets import resolve_dataset
from gearsight.data.pack import PackedDataset
from gearsight.data.transforms import to_model_input
from gearsight.predict import Classifier
from gearsight.train import cpu_has_fast_bf16
from gearsight.tta import tta_logits


def parse_overrides(items: list[str]) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}


@torch.no_grad()
def test_logits(clf: Classifier, images: np.ndarray, bf16: bool) -> torch.Tensor:
    x = to_model_input(torch.from_numpy(np.ascontiguousarray(images)), clf.spec.mean, clf.spec.std)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with ctx:
        return torch.cat([tta_logits(clf.model, x[i:i + 256], True, clf.tta_translate).float()
                          for i in range(0, len(x), 256)])


@torch.no_grad()
def layer_errors(clf: Classifier, images: np.ndarray) -> list[tuple[str, float]]:
    """Relative error of each leaf module's output under bf16 autocast, same weights and inputs."""
    outputs: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: outputs.setdefault(name, []).append(o.float()))
             for name, m in clf.model.named_modules() if not list(m.children())]
    x = to_model_input(torch.from_numpy(np.ascontiguousarray(images[:256])), clf.spec.mean, clf.spec.std)
    clf.model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        clf.model(x)
    for h in hooks:
        h.remove()
    rows = []
    for name, outs in outputs.items():  # a module used k times per forward (GELU) has 2k outputs
        k = len(outs) // 2
        for i, (a, b) in enumerate(zip(outs[:k], outs[k:])):
            rows.append((name + (f"#{i}" if k > 1 else ""), float((b - a).norm() / a.norm().clamp_min(1e-12))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--packed", help="a packed gear dataset at 64 px (default: pack split.csv into a temp dir)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="TrainConfig overrides for every run")
    args = ap.parse_args()
    overrides = parse_overrides(args.set)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_fast_bf16()}, "
          f"overrides {overrides}")
    with tempfile.TemporaryDirectory() as tmp:
        packed = args.packed or f"{tmp}/g64"
        if not args.packed:
            workflow.pack_source(resolve_dataset("gear") / "split.csv", packed, size=64, progress=False)
        images, labels = PackedDataset(packed).subset("test")
        labels = torch.from_numpy(np.asarray(labels))
        rows = []
        for amp in ("off", "bf16"):
            for seed in range(args.seeds):
                run = Path(tmp) / f"{amp}-{seed}"
                start = time.perf_counter()
                summary = workflow.train_packed(packed, run, progress=False, **(overrides | {"seed": seed, "amp": amp}))
                seconds = time.perf_counter() - start
                clf = Classifier.load(run / "model.safetensors")
                fp32, bf16 = test_logits(clf, images, False), test_logits(clf, images, True)
                acc32 = (fp32.argmax(1) == labels).float().mean().item()
                acc16 = (bf16.argmax(1) == labels).float().mean().item()
                flips = int((fp32.argmax(1) != bf16.argmax(1)).sum())
                rows.append((amp, seed, acc32, acc16, flips, summary["best_epoch"], summary["best_val_acc"], seconds))
                print(f"train {amp:4s} seed {seed}: test {acc32:.2%} (fp32 eval) {acc16:.2%} (bf16 eval), "
                      f"{flips} flipped, best epoch {summary['best_epoch']} val {summary['best_val_acc']:.2%}, "
                      f"{seconds:.0f} s", flush=True)
                if amp == "off" and seed == 0:
                    print("  per-layer relative error of bf16 autocast (fp32-trained weights, 256 test images):")
                    for name, err in layer_errors(clf, images):
                        print(f"    {name:24s} {err:.4f}")
    print()
    print(f"{'trained in':10s} {'test acc, fp32 eval (median)':>29s} {'bf16 eval (median)':>19s} "
          f"{'flips':>6s} {'train s':>8s}  per seed (fp32 eval)")
    for amp in ("off", "bf16"):
        sel = [r for r in rows if r[0] == amp]
        print(f"{'fp32' if amp == 'off' else 'bf16':10s} {statistics.median(r[2] for r in sel):29.2%} "
              f"{statistics.median(r[3] for r in sel):19.2%} {statistics.median(r[4] for r in sel):6.0f} "
              f"{statistics.median(r[7] for r in sel):8.0f}  {', '.join(f'{r[2]:.2%}' for r in sel)}")


if __name__ == "__main__":
    main()
