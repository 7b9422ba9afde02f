"""`gearsight train --mlflow` in a real subprocess, the run read back through MLflow's own client:
params, one metric point per epoch, and the artifacts (the model file among them)."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
import yaml

import gearsight
from conftest import run_cli
from test_coverage_train import write_csv, write_split

mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed: `make install` (the lock's mlflow extra)")

EPOCHS = 3


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> dict:
    import numpy as np

    work = tmp_path_factory.mktemp("mlflow")
    rng = np.random.default_rng(1)
    source = write_csv(work / "discs.csv", write_split(work, rng, "train", 16) + write_split(work, rng, "val", 4))
    run_cli("pack", source, work / "packed", "--size", "24", "--quiet")
    env_free = pytest.MonkeyPatch()
    env_free.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store: sqlite in RUN
    try:
        run_cli("train", work / "packed", "--out", work / "run", "--mlflow", "--epochs", str(EPOCHS), "--widths", "8,16",
                "--batch-size", "16", "--threads", "1", "--quiet", cwd=work)
    finally:
        env_free.undo()
    run_dir = work / "run"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gearsight")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return {"work": work, "run_dir": run_dir, "client": client, "run": runs[0]}


def test_the_run_and_its_params(logged):
    run = logged["run"]
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    dumped = yaml.safe_load((logged["run_dir"] / "config.yaml").read_text())
    assert run.data.params == {k: str(v) for k, v in dumped.items()}
    assert run.data.params["epochs"] == str(EPOCHS) and run.data.params["widths"] == "[8, 16]"
    spec = gearsight.load(logged["run_dir"] / "model.safetensors").spec
    assert run.data.metrics["best_epoch"] == spec.extra["best_epoch"]
    assert run.data.metrics["best_val_acc"] == pytest.approx(spec.extra["val_acc"])


def test_metric_history_has_one_point_per_epoch_equal_to_metrics_csv(logged):
    with open(logged["run_dir"] / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for key in ("train_loss", "val_acc", "lr", "img_per_s"):
        history = sorted(logged["client"].get_metric_history(logged["run"].info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(EPOCHS)), key
        assert [m.value for m in history] == pytest.approx([float(r[key]) for r in rows], rel=1e-5), key


def test_artifacts_hold_the_model_file_and_stay_in_the_run_folder(logged, tmp_path):
    client, run_id = logged["client"], logged["run"].info.run_id
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"model.safetensors", "metrics.csv", "curves.png", "config.yaml"} <= names
    model = Path(client.download_artifacts(run_id, "model.safetensors", str(tmp_path)))
    original = logged["run_dir"] / "model.safetensors"
    assert hashlib.sha256(model.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest()
    assert gearsight.load(model).classes == ["left", "right"]
    # Nothing lands in the directory training was started from (MLflow's default ./mlruns).
    assert not (logged["work"] / "mlruns").exists()
    assert (logged["run_dir"] / "mlartifacts").is_dir()
