"""TensorFlow's CIFAR-10 tutorial CNN: examples/tensorflow_cifar10.py in .venv-tf (a subprocess) on a small
pack made by `gearsight pack`, its ONNX export served by `gearsight serve` (main venv, a real HTTP server),
and the same net as gearsight's ``--arch tf_cifar10`` (PyTorch), checked against the TensorFlow model.

The data: 32x32 JPEGs of a noisy colour field with a dark square, one colour per class, in a tar laid
out like the shared CIFAR JPEG tar (train/<class>/NNNN.jpg, test/<class>/NNNN.jpg)."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, run_cli
from gearsight.modelfile import read_spec
from gearsight.models import create_model
from gearsight.models.tf_cifar10 import TFCifar10Net, load_tf_weights, per_image_standardization
from test_serve import running_server

TF_PYTHON = REPO / ".venv-tf" / "bin" / "python"
needs_tf = pytest.mark.skipif(not TF_PYTHON.is_file(),
                              reason=f"{TF_PYTHON} is absent: `make tf` builds the TensorFlow venv (`make test` does)")
COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 40, 40)}


def make_tar(path: Path, per_class: dict[str, int], seed: int = 0) -> Path:
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


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tfcifar")
    tar = make_tar(d / "tiny.tar", {"train": 40, "test": 10})
    run_cli("pack", tar, d / "packed", "--split", "1,0,0")
    return d / "packed"


@pytest.fixture(scope="module")
def tf_run(packed) -> dict:
    out = packed.parent / "tf"
    proc = subprocess.run([str(TF_PYTHON), "examples/tensorflow_cifar10.py", str(packed), "--epochs", "6",
                           "--batch-size", "16", "--lr", "0.05", "--onnx", str(out / "tf.onnx"),
                           "--weights", str(out / "weights.npz"), "--json", str(out / "result.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"stdout": proc.stdout, "result": json.loads((out / "result.json").read_text()), "dir": out}


def test_tensorflow_pixels_standardize_like_tensorflow():
    # tf.image.per_image_standardization's floor on the std: a flat image maps to 0, not NaN
    x = torch.cat([torch.full((1, 3, 24, 24), 7.0), torch.arange(3 * 24 * 24.0).view(1, 3, 24, 24)])
    y = per_image_standardization(x)
    assert torch.equal(y[0], torch.zeros_like(y[0]))
    assert abs(y[1].mean().item()) < 1e-5 and abs(y[1].std(unbiased=False).item() - 1) < 1e-5


@needs_tf
def test_tutorial_cnn_trains_in_tensorflow_from_packed_arrays(tf_run):
    result, stdout = tf_run["result"], tf_run["stdout"]
    assert result["train"] == 120 and result["test"] == 30 and result["classes"] == sorted(COLOURS)
    assert len(result["train_accuracy_per_epoch"]) == 6
    cm = np.array(result["confusion_matrix"])
    assert cm.sum() == 30 and np.trace(cm) / 30 == pytest.approx(result["test_accuracy"])
    assert result["test_accuracy"] >= 0.8, stdout  # three colours: chance is 1/3
    # sklearn's confusion matrix and classification report, as gearsight evaluate prints them
    assert "confusion matrix" in stdout and "precision" in stdout and "macro avg" in stdout
    assert all(name in stdout for name in COLOURS)
    assert result["tensorflow"].startswith("2.") and (tf_run["dir"] / "tf.onnx").is_file()


@needs_tf
def test_gearsight_serve_scores_the_tensorflow_onnx_file_unchanged(tf_run, packed):
    """The tf2onnx file goes to `gearsight serve` as written; a test JPEG scores as TensorFlow scored it."""
    meta = json.loads((packed / "meta.json").read_text())
    test_rows = [i for i, item in enumerate(meta["items"]) if item["split"] == "test"]
    logits = np.array(tf_run["result"]["test_logits_first"])  # TensorFlow's logits of the first test images
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    tar = packed.parent / "tiny.tar"
    with tarfile.open(tar) as t:
        members = [meta["items"][row]["path"].split("::", 1)[1] for row in test_rows[:len(expected)]]
        photos = [t.extractfile(m).read() for m in members]
    with running_server(tf_run["dir"] / "tf.onnx") as (url, _):
        info = httpx.get(url + "/metadata", timeout=10).json()
        assert info["classes"] == sorted(COLOURS) and info["input_shape"] == [3, 32, 32]
        assert info["arch"] == "tensorflow:cifar10_tutorial"
        upload = [("file", (Path(m).name, data, "image/jpeg")) for m, data in zip(members, photos)]
        answer = httpx.post(url + "/score/file?top_k=3", files=upload, timeout=60)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(expected) >= 10
    for result, probs in zip(results, expected):
        got = {p["label"]: p["probability"] for p in result["predictions"]}
        assert got == pytest.approx({c: float(p) for c, p in zip(sorted(COLOURS), probs)}, abs=1e-4)


@needs_tf
def test_pytorch_tf_cifar10_is_the_tensorflow_net(tf_run, packed):
    """TensorFlow's trained weights in --arch tf_cifar10 give TensorFlow's logits (crop + standardization inside)."""
    net = load_tf_weights(TFCifar10Net(3), dict(np.load(tf_run["dir"] / "weights.npz"))).eval()
    images = np.load(packed / "images.npy")[np.load(packed / "splits.npy") == 2]
    logits = np.array(tf_run["result"]["test_logits_first"])
    x = torch.from_numpy(images[:len(logits)].astype(np.float32)).permute(0, 3, 1, 2)  # pixel values, as trained
    with torch.no_grad():
        got = net(x).numpy()
    assert np.abs(got - logits).max() < 1e-3, np.abs(got - logits).max()


def test_gearsight_trains_and_evaluates_the_tutorial_net(packed, tmp_path):
    run = tmp_path / "run"
    run_cli("train", packed, "--out", run, "--config", "configs/cifar10-tf-tutorial.yaml", "--epochs", "6",
            "--batch-size", "16", "--lr", "0.05")
    report_dir = tmp_path / "eval"
    proc = run_cli("evaluate", run / "model.safetensors", packed, "--split", "test", "--out", report_dir)
    report = json.loads((report_dir / "report.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 30 and report["accuracy"] >= 0.8, proc.stdout
    assert read_spec(run / "model.safetensors").arch == "tf_cifar10"
    model = create_model("tf_cifar10", num_classes=3)
    model.train()
    out = model(torch.full((4, 3, 32, 32), 128.0))  # training mode: random crops + jitter of a flat image
    assert out.shape == (4, 3) and torch.isfinite(out).all()
