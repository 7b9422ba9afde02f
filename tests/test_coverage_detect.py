"""`gearsight detect train` schedule options in real subprocesses, on a drawn 8-image VOC folder:
--time-budget (wall-clock schedule), --eval-every / --eval-from (when validation runs) and
--select (which metric picks the saved model)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import run_cli
from gearsight.modelfile import read_spec
from test_detect_data import make_voc

TINY = ["--min-size", "96", "--max-size", "128", "--batch-size", "2", "--workers", "0", "--warmup", "2", "--lr", "0.01"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return make_voc(tmp_path_factory.mktemp("detect_cov") / "voc", n=8)


def _summary(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith('{"epochs"')][-1])


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_time_budget_ends_the_run_on_the_clock(voc, tmp_path):
    budget = 0.1  # minutes
    run = tmp_path / "run"
    proc = run_cli("detect", "train", voc, "--out", run, "--val-split", "none", "--epochs", "1000",
                   "--time-budget", str(budget), *TINY)
    summary, rows = _summary(proc.stdout), _rows(run)
    assert 1 <= summary["epochs"] == len(rows) < 1000
    assert budget <= summary["minutes"] < budget + 0.25, summary  # stops at the budget, mid-epoch if need be
    assert json.loads((run / "config.json").read_text())["time_budget_min"] == budget
    # The cosine ran over the clock: the last step's lr is near zero, not the 1000-epoch schedule's peak.
    assert float(rows[-1]["lr"]) < 0.05 * 0.01
    assert read_spec(run / "model.safetensors").extra["epoch"] == summary["epochs"]


def test_eval_every_eval_from_and_select(voc, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("detect", "train", voc, "--out", run, "--epochs", "6", "--eval-every", "2",
                   "--eval-from", "0.5", "--select", "AP50", *TINY)
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    # Epoch 2 is before half the schedule and 3, 5 are off the every-2 beat; the last always runs.
    assert [r["epoch"] for r in rows if r["val_AP50"] != ""] == ["4", "6"]
    summary = _summary(proc.stdout)
    ap50 = {int(r["epoch"]): float(r["val_AP50"]) for r in rows if r["val_AP50"]}
    best_epoch = max(ap50, key=lambda e: (ap50[e], -e))  # a later epoch must beat it, not tie
    assert summary["best_epoch"] == best_epoch and summary["best_val_AP50"] == pytest.approx(ap50[best_epoch], abs=1e-5)
    assert "best_val_AP" not in summary
    extra = read_spec(run / "model.safetensors").extra
    assert extra["epoch"] == best_epoch and extra["val_metrics"]["AP50"] == pytest.approx(ap50[best_epoch], abs=1e-5)
    assert json.loads((run / "config.json").read_text())["select"] == "AP50"
