"""The model file (gearsight.modelfile) and the ONNX metadata (gearsight.onnxfile): one loader for the
classifier and the detector that never unpickles, and ONNX metadata read without torch."""
from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from gearsight import onnxfile
from gearsight.modelfile import ModelSpec, load_model, read_spec

SPEC = ModelSpec(arch="gearnet", arch_config={"widths": [8, 16], "stem": 8}, classes=["a", "b"], input_size=32)


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: proof that a loader unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("loader", ["classifier", "detector"])
def test_a_pickle_named_like_a_model_file_is_refused_without_running(tmp_path, loader):
    import torch

    from gearsight.detect.predict import load_detector

    marker = tmp_path / "ran"
    for name, dump in (("raw.safetensors", lambda p: p.write_bytes(pickle.dumps(_Payload(marker)))),
                       ("torch.safetensors", lambda p: torch.save({"x": _Payload(marker)}, p))):
        path = tmp_path / name
        dump(path)
        with pytest.raises(ValueError, match="safetensors|model file"):
            (load_model if loader == "classifier" else load_detector)(path)
        assert not marker.exists(), f"{loader} loader unpickled {name}"


def test_onnx_metadata_gives_the_spec_and_the_weights_version(tmp_path):
    onnx_path = tmp_path / "m.onnx"
    import hashlib

    onnx_path.write_bytes(b"not really onnx: only hashed")
    meta = {onnxfile.SPEC_KEY: SPEC.to_json(), onnxfile.SOURCE_KEY: "ab" * 32}
    assert onnxfile.read_metadata(meta, onnx_path, "gearsight export") == (SPEC, "ab" * 6)
    spec, version = onnxfile.read_metadata({onnxfile.SPEC_KEY: SPEC.to_json()}, onnx_path, "gearsight export")
    assert spec == SPEC and version == hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:12]
    with pytest.raises(ValueError, match="without gearsight metadata.*gearsight detect export"):
        onnxfile.read_metadata({}, onnx_path, "gearsight detect export")


def test_onnxfile_and_files_never_import_torch_and_reading_specs_loads_none(tmp_path):
    """What the scoring service reads (ONNX metadata, a model file's spec) comes without torch."""
    package = REPO / "src" / "gearsight"
    for path in (package / "onnxfile.py", package / "files.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] == "torch"], path
    model = tmp_path / "m.safetensors"
    from gearsight.modelfile import save_model
    from gearsight.models import create_model

    save_model(model, create_model("gearnet", num_classes=2, widths=[8, 16], stem=8), SPEC)
    assert read_spec(model) == SPEC
    code = ("import sys; from gearsight import files, modelfile, onnxfile; "
            f"s = modelfile.read_spec({str(model)!r}); "
            "onnxfile.read_metadata({onnxfile.SPEC_KEY: s.to_json(), onnxfile.SOURCE_KEY: 'ab' * 32}, 'x', 'e'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'safetensors')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
