"""`gearsight export`: ONNX (and TorchScript) files that equal eager PyTorch and carry their spec."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import require_dataset, run_cli
from gearsight.modelfile import load_model
from gearsight.serve.model import OnnxModel
from gearsight.serve.preprocess import Preprocessor
from test_serve import make_model_file


def real_batch(spec, n: int = 48) -> np.ndarray:
    files = sorted(require_dataset("gear").glob("*/*"))
    pre = Preprocessor(spec, 10**8)
    return np.stack([pre.from_image(p.read_bytes(), p.name) for p in files[:: len(files) // n][:n]])


def test_onnx_equals_eager_pytorch_on_real_images(tmp_path):
    model_path = make_model_file(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert "wrote" in run_cli("export", model_path, "--format", "onnx", "--out", out).stdout
    model, spec = load_model(model_path)
    x = real_batch(spec)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(session.run(None, {"input": x[:1]})[0] - expected[:1]).max() < 1e-4  # dynamic batch axis
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_onnx_file_carries_the_spec_so_it_serves_alone(tmp_path):
    model_path = make_model_file(tmp_path / "m.safetensors")
    out = run_cli("export", model_path).stdout  # default --out: beside the model
    onnx_path = model_path.with_suffix(".onnx")
    assert str(onnx_path) in out
    _, spec = load_model(model_path)
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert props["gearsight"] == spec.to_json() and len(props["source_sha256"]) == 64
    served = OnnxModel(onnx_path)
    assert served.spec == spec and served.version == props["source_sha256"][:12]
    batch_dim = onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_equals_eager(tmp_path):
    model_path = make_model_file(tmp_path / "m.safetensors")
    out = tmp_path / "m.pt"
    run_cli("export", model_path, "--format", "torchscript", "--out", out)
    extra = {"gearsight.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    model, spec = load_model(model_path)
    assert extra["gearsight.json"].decode() == spec.to_json()
    x = torch.randn(3, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        assert (scripted(x) - model(x)).abs().max() < 1e-5


def test_export_errors_name_the_problem(tmp_path):
    missing = run_cli("export", tmp_path / "nope.safetensors", check=False)
    assert missing.returncode == 2 and "model file not found" in missing.stderr
    not_a_model = tmp_path / "x.safetensors"
    not_a_model.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}              ")
    bad = run_cli("export", not_a_model, check=False)
    assert bad.returncode == 2 and "without a gearsight header" in bad.stderr
