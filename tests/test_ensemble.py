"""Seed ensembles (models/ensemble.py): one model file whose probabilities are the members' average."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, write_gear_subset
from gearsight.data.pack import PackedDataset
from gearsight.modelfile import load_model, read_spec
from gearsight.models import create_model
from gearsight.predict import Classifier


def _members(n: int) -> list[torch.nn.Module]:
    members = []
    for seed in range(n):
        torch.manual_seed(seed)
        members.append(create_model("gearnet", num_classes=5, widths=[8, 16, 16]).eval())
    return members


def test_output_is_the_log_of_the_members_mean_probability():
    members = _members(3)
    ensemble = create_model("ensemble", num_classes=5, member_arch="gearnet", n_members=3,
                            member_config={"widths": [8, 16, 16]}).eval()
    ensemble.members.load_state_dict(torch.nn.ModuleList(members).state_dict())
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        out = ensemble(x)
    torch.testing.assert_close(torch.softmax(out, 1), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))  # already normalised log-probabilities


def test_a_certain_member_does_not_make_the_output_infinite():
    ensemble = create_model("ensemble", num_classes=5, member_arch="gearnet", n_members=2,
                            member_config={"widths": [8, 16, 16]}).eval()
    with torch.no_grad():
        ensemble.members[0].head.bias.fill_(0).add_(torch.tensor([1e4, 0, 0, 0, 0]))
        out = ensemble(torch.zeros(1, 3, 32, 32))
    assert torch.isfinite(out).all()
    assert out.exp()[0, 0] >= 0.5 - 1e-6  # member 0 is certain of class 0: at least half the mass


def test_members_must_not_be_ensembles_and_their_count_is_bounded():
    with pytest.raises(ValueError, match="cannot be ensembles"):
        create_model("ensemble", num_classes=3, member_arch="ensemble", n_members=2)
    with pytest.raises(ValueError, match="n_members"):
        create_model("ensemble", num_classes=3, member_arch="gearnet", n_members=0)


@pytest.fixture(scope="module")
def ensemble_run(gear_dir, tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("ensemble")
    csv_path = write_gear_subset(gear_dir, work / "subset.csv", ("axes", "boots", "tents"),
                                 {"train": 32, "val": 8, "test": 8})
    run_cli("pack", csv_path, work / "packed", "--size", "32", "--quiet")
    proc = run_cli("train", work / "packed", "--out", work / "run", "--epochs", "3", "--batch-size", "32", "--lr", "0.05",
                   "--ensemble", "2", "--seed", "5", "--amp", "off", "--quiet")
    return {"packed": work / "packed", "run": work / "run", "stdout": proc.stdout}


def test_train_ensemble_writes_members_and_one_model_file_of_their_average(ensemble_run):
    run = ensemble_run["run"]
    assert "ensemble of 2: val accuracy" in ensemble_run["stdout"]
    spec = read_spec(run / "model.safetensors")
    assert spec.arch == "ensemble"
    assert spec.arch_config["member_arch"] == "gearnet" and spec.arch_config["n_members"] == 2
    assert [m["seed"] for m in spec.extra["members"]] == [5, 6]
    images, labels = PackedDataset(ensemble_run["packed"]).subset("test")
    members = [Classifier.load(run / f"member-{i}" / "model.safetensors", device="cpu") for i in range(2)]
    stems = [m.model.stem[0].weight for m in members]
    assert not torch.allclose(stems[0], stems[1])  # different seeds, different models
    member_probs = [m.predict_packed(images, tta=False) for m in members]
    ensemble_probs = Classifier.load(run / "model.safetensors", device="cpu").predict_packed(images, tta=False)
    np.testing.assert_allclose(ensemble_probs, np.mean(member_probs, axis=0), rtol=1e-4, atol=1e-5)


def test_ensemble_model_file_evaluates_and_exports_to_onnx_unchanged(ensemble_run, tmp_path):
    import onnxruntime as ort

    run = ensemble_run["run"]
    run_cli("evaluate", run / "model.safetensors", ensemble_run["packed"], "--out", tmp_path / "eval")
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["n"] == 24 and np.array(report["confusion_matrix"]).sum() == 24
    run_cli("export", run / "model.safetensors", "--out", tmp_path / "model.onnx")
    model, spec = load_model(run / "model.safetensors")
    x = torch.randn(3, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_ensemble_refuses_map_files_with_a_clear_error(tmp_path):
    (tmp_path / "train.txt").write_text("")  # found, so the refusal is about the ensemble, not the path
    (tmp_path / "val.txt").write_text("")
    proc = run_cli("train", tmp_path / "train.txt", "--val", tmp_path / "val.txt", "--transforms",
                   'transforms = ({type = "Scale"; width = 32; height = 32; channels = 3})', "--out",
                   tmp_path / "run", "--ensemble", "2", check=False)
    assert proc.returncode != 0
    assert "ensemble: train from packed data or CTF files" in proc.stderr


def test_an_ensemble_of_zero_members_is_refused_before_any_data_is_read(tmp_path):
    proc = run_cli("train", tmp_path / "missing", "--out", tmp_path / "run", "--ensemble", "0", check=False)
    assert proc.returncode != 0 and "ensemble: the number of members must be >= 1, not 0" in proc.stderr
