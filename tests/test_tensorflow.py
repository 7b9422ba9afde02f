"""examples/tensorflow_cifar10.py (TensorFlow's CIFAR-10 CNN tutorial) run in .venv-tf, in a subprocess,
on a small tar laid out like the shared CIFAR JPEG tar (train/<class>/NNNN.jpg, test/<class>/NNNN.jpg)."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

TF_PYTHON = REPO / ".venv-tf" / "bin" / "python"
COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 40, 40)}


def make_tar(path: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """JPEGs of a noisy colour field with a dark square, one colour per class."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w") as tar:
        for split, n in per_class.items():
            for name, colour in COLOURS.items():
                for i in range(n):
                    pixels = (np.array(colour) + rng.normal(0, 30, (32, 32, 3))).clip(0, 255).astype(np.uint8)
                    x, y = rng.integers(0, 24, 2)
                    pixels[y:y + 8, x:x + 8] //= 3
                    buf = io.BytesIO()
                    Image.fromarray(pixels).save(buf, "JPEG", quality=75)
                    info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return path


@pytest.mark.skipif(not TF_PYTHON.is_file(), reason=f"{TF_PYTHON} is absent: `make tf` builds the TensorFlow venv")
def test_tutorial_cnn_trains_in_tensorflow(tmp_path):
    tar = make_tar(tmp_path / "tiny.tar", {"train": 40, "test": 10})
    out = tmp_path / "result.json"
    proc = subprocess.run([str(TF_PYTHON), "examples/tensorflow_cifar10.py", "--tar", str(tar), "--epochs", "3",
                           "--per-class", "30", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["train"] == 90 and result["test"] == 30  # --per-class caps train only
    assert len(result["val_accuracy_per_epoch"]) == 3
    assert result["test_accuracy"] == pytest.approx(result["val_accuracy_per_epoch"][-1], abs=1e-6)
    assert result["test_accuracy"] >= 0.7, proc.stdout  # three colours: chance is 1/3
    assert result["tensorflow"].startswith("2.") and "test accuracy" in proc.stdout
