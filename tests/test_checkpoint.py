"""Resume checkpoints (gearsight.checkpoint) and the best-epoch rule the classifier and detector share."""
from __future__ import annotations

import torch

import gearsight.detect.train as detect_train
from gearsight import checkpoint


def test_ties_go_to_the_later_epoch():
    assert checkpoint.improves(0.5, None) and checkpoint.improves(0.5, 0.5) and checkpoint.improves(0.6, 0.5)
    assert not checkpoint.improves(0.4, 0.5) and not checkpoint.improves(float("nan"), 0.5)


def test_the_detector_keeps_the_later_epoch_on_a_tied_val_score(monkeypatch, tmp_path):
    """As the classifier does (train.fit): it kept the earlier one (``<=``) before."""
    saved = []
    monkeypatch.setattr(detect_train, "_save", lambda model, path, cfg, train, extra: saved.append(extra["epoch"]))
    monkeypatch.setattr(detect_train, "format_metrics", lambda *a, **kw: "")
    cfg = detect_train.DetectTrainConfig(select="AP50")
    state = {"epoch": 3, "best": None, "best_epoch": None}
    metrics = {"AP": 0.3, "AP50": 0.5, "AP75": 0.2, "per_class": {}}

    class Train:
        classes = ["a"]

    assert detect_train._update_best(metrics, state, cfg, None, tmp_path / "m", Train, None)
    state["epoch"] = 6
    assert detect_train._update_best(dict(metrics), state, cfg, None, tmp_path / "m", Train, None)
    assert (state["best"], state["best_epoch"], saved) == (0.5, 6, [3, 6])
    state["epoch"] = 9
    assert not detect_train._update_best({**metrics, "AP50": 0.49}, state, cfg, None, tmp_path / "m", Train, None)
    assert state["best_epoch"] == 6


def test_a_detector_checkpoint_keeps_its_keys_and_restores(tmp_path):
    """The file's layout is what detect/train.py wrote before the move (old last.pt files resume)."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    cfg = detect_train.DetectTrainConfig()
    state = {"epoch": 2, "step": 10, "elapsed": 1.5, "best": 0.4, "best_epoch": 2}
    checkpoint.save_detector_state(tmp_path / "last.pt", model, optimizer, state, cfg)
    blob = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(blob) == {"model", "optimizer", "state", "config"} and blob["config"] == cfg.to_json()
    fresh = torch.nn.Linear(3, 2)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    assert checkpoint.load_detector_state(tmp_path / "last.pt", fresh, opt2) == state
    assert torch.equal(fresh.weight, model.weight) and opt2.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
