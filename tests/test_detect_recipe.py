"""gearsight.detect.recipe: the configuration `gearsight detect train` builds, callable from Python."""
from __future__ import annotations

import numpy as np
import pytest

import gearsight.detect.train as detect_train
from gearsight.cli import main
from gearsight.detect import recipe
from gearsight.detect.model import auto_anchor_sizes
from gearsight.detect.voc import read_voc
from test_detect_data import make_voc


def test_the_bccd_recipe_from_python_is_the_cli_run(tmp_path, monkeypatch):
    root = make_voc(tmp_path / "voc", n=8, size=(200, 150))
    seen = []
    monkeypatch.setattr(detect_train, "fit", lambda train, val, out, cfg, resume=False: seen.append(cfg))
    assert main(["detect", "train", str(root), "--out", str(tmp_path / "run"), *recipe.cli_args(recipe.BCCD)]) == 0
    assert seen[0] == recipe.train_config(read_voc(root, "train"), **recipe.BCCD)
    assert seen[0].model.min_size == 320 and seen[0].vflip and seen[0].select == "AP50"


def test_auto_anchors_are_fitted_at_the_median_network_scale(tmp_path):
    """What detect_cmd computed by hand for --anchors auto (and the notebook and bench_detect_step
    re-derived): boxes at the median image's network scale, widened by the scale jitter."""
    root = make_voc(tmp_path / "voc", n=6, size=(200, 150))
    train = read_voc(root, "train")
    cfg = recipe.model_config(train, min_size=96, max_size=160, scale_range=(0.75, 1.33))
    wh = np.concatenate([r.boxes[:, 2:] - r.boxes[:, :2] for r in train.records])
    scale = float(np.median([min(96 / min(r.width, r.height), 160 / max(r.width, r.height)) for r in train.records]))
    assert cfg.anchor_sizes == auto_anchor_sizes(wh, scale, recipe.anchor_levels("fasterrcnn_mobilenet_v3_large_fpn", cfg),
                                                 2, (0.75, 1.33))
    assert recipe.model_config(train, anchors=[[8, 16], [32, 64], [128, 256]]).anchor_sizes == [
        [8.0, 16.0], [32.0, 64.0], [128.0, 256.0]]
    with pytest.raises(ValueError, match="no boxes"):
        recipe.anchor_sizes_for(train.subset([]), cfg)


def test_cli_args_render_the_recipe_as_options():
    args = recipe.cli_args({"preset": "cpu", "vflip": True, "photometric": False, "aspect_ratios": (0.5, 1, 2),
                            "warmup_steps": 200, "weight_decay": 1e-4, "time_budget_min": 57.0})
    assert args == ["--preset", "cpu", "--vflip", "--no-photometric", "--aspect-ratios", "0.5,1,2", "--warmup", "200",
                    "--weight-decay", "0.0001", "--time-budget", "57"]
