"""Can two models cover both goals of issue 10? A catalog-only and a background-augmented model,
their probabilities averaged (weight w on the catalog one), on the gear test split and the outdoor
benchmark.

    python bench/bench_outdoor_ensemble.py CATALOG_MODEL BACKGROUND_MODEL TEST_PACK OUTDOOR_PACK

e.g. the lite0 and lite0-bg models bench/bench_outdoor.py trains (RUN/run-lite0, RUN/run-lite0-bg)
with its 144 px packs (RUN/gear144, RUN/outdoor144). Flip TTA as gearsight evaluate; also the
geometric mean and "the more confident model" for comparison. No training: seconds.
"""
from __future__ import annotations

import argparse

import numpy as np

from gearsight.data.pack import PackedDataset
from gearsight.predict import Classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("catalog_model", "background_model", "test_pack", "outdoor_pack"):
        ap.add_argument(name)
    args = ap.parse_args()
    models = [Classifier.load(args.catalog_model, device="cpu"), Classifier.load(args.background_model, device="cpu")]
    rows: dict[str, list[str]] = {}
    for pack in (args.test_pack, args.outdoor_pack):
        images, labels = PackedDataset(pack).subset("test")
        cat, bg = (m.predict_packed(images) for m in models)
        combos = {f"average, w = {w:g}": w * cat + (1 - w) * bg for w in (0.0, 0.3, 0.5, 0.7, 1.0)}
        combos["geometric mean"] = np.log(cat + 1e-9) + np.log(bg + 1e-9)
        combos["the more confident model"] = np.where((cat.max(1) > bg.max(1))[:, None], cat, bg)
        for name, probs in combos.items():
            wrong = int((probs.argmax(1) != labels).sum())
            rows.setdefault(name, []).append(f"{1 - wrong / len(labels):.2%} ({wrong} wrong)")
    print("| combination (w: weight of the catalog-only model) | test split | outdoor benchmark |\n|---|---:|---:|")
    for name, cells in rows.items():
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
