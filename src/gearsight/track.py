"""Run logging: console lines, RUN/metrics.csv, a training-curve PNG, and optional MLflow."""
from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict
from pathlib import Path

COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "img_per_s", "data_wait", "epoch_time"]


def mlflow_wanted(flag: bool) -> bool:
    return flag or bool(os.environ.get("MLFLOW_TRACKING_URI"))


class RunLogger:
    def __init__(self, run_dir: Path, cfg, start_epoch: int = 0):
        self.run_dir = run_dir
        self.csv_path = run_dir / "metrics.csv"
        self._rewrite_csv(keep_before=start_epoch)
        self.mlflow = self._start_mlflow(cfg) if mlflow_wanted(cfg.mlflow) else None
        print(f"{'epoch':>5} {'loss':>7} {'acc':>6} {'val_loss':>8} {'val_acc':>7} {'lr':>7} {'img/s':>7} {'wait':>5}")

    def _rewrite_csv(self, keep_before: int) -> None:
        """Keep the rows of epochs already in the resume checkpoint; drop any a crash left after it."""
        rows = []
        if keep_before and self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < keep_before]
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows([[r.get(c, "") for c in COLUMNS] for r in rows])

    def _start_mlflow(self, cfg):
        try:
            import mlflow
        except ImportError:
            raise ValueError("--mlflow needs MLflow: pip install 'gearsight[mlflow]'") from None
        # A local sqlite store by default, as the MLflow docs recommend over the file store.
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}")
            _use_local_experiment(mlflow, self.run_dir)
        mlflow.start_run(run_name=self.run_dir.name)
        mlflow.log_params({k: str(v) for k, v in asdict(cfg).items()})
        return mlflow

    def log_epoch(self, row: dict, improved: bool) -> None:
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c)) for c in COLUMNS])
        no_val = math.isnan(row["val_acc"])  # trained without a val split: "-", not "nan"
        val_loss, val_acc = ("-", "-") if no_val else (f"{row['val_loss']:.4f}", f"{row['val_acc']:.3f}")
        print(f"{row['epoch']:>5} {row['train_loss']:7.4f} {row['train_acc']:6.3f} {val_loss:>8} "
              f"{val_acc:>7} {row['lr']:7.4f} {row['img_per_s']:7.0f} {row['data_wait']:5.1%}"
              f"{'  *' if improved else ''}", flush=True)
        if self.mlflow:
            self.mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    def finish(self, summary: dict, model_path: Path) -> None:
        save_curves(self.csv_path, self.run_dir / "curves.png")
        if self.mlflow:
            self.mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})
            for name in ("model.safetensors", "metrics.csv", "curves.png", "config.yaml"):
                if (self.run_dir / name).is_file():
                    self.mlflow.log_artifact(str(self.run_dir / name))
            self.mlflow.end_run()


def _use_local_experiment(mlflow, run_dir: Path, name: str = "gearsight") -> None:
    """Artifacts beside the store, in RUN/mlartifacts: MLflow's default experiment would put them in
    ./mlruns of whatever directory training was started from."""
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(run_dir / "mlartifacts").resolve().as_uri())
    mlflow.set_experiment(name)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def read_metrics(csv_path: Path) -> dict[str, list[float]]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: [float(r[c]) for r in rows if r.get(c)] for c in COLUMNS}


def save_curves(csv_path: Path, png_path: Path) -> None:
    """Loss and accuracy per epoch, train vs val, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = read_metrics(csv_path)
    if not m["epoch"]:
        return
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
        ax.plot(m["epoch"], m[f"train_{key}"], label="train")
        ax.plot(m["epoch"], m[f"val_{key}"], label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.set_title(f"best val acc {max(m['val_acc']):.3f}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
