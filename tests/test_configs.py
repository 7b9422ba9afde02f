"""Every shipped config loads as a TrainConfig: a misspelt option fails here, not in a user's run."""
from __future__ import annotations

import pytest

from conftest import REPO
from gearsight.config import TrainConfig

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads_and_names_a_registered_model(path):
    from gearsight.models.registry import create_model
    from gearsight.train import arch_config

    cfg = TrainConfig.load(path)
    create_model(cfg.arch, num_classes=3, **arch_config(cfg))  # the network the trainer would build


def test_the_configs_folder_is_found():
    assert len(CONFIGS) >= 6, CONFIGS


def test_the_catalog_recipe_is_a_three_seed_ensemble_trained_on_train_and_val():
    cfg = TrainConfig.load(REPO / "configs" / "gear-scratch-catalog.yaml")
    assert (cfg.arch, cfg.ensemble, cfg.train_splits, cfg.translate) == ("gearnet", 3, ["train", "val"], 6)


def test_an_integer_in_a_yaml_float_option_is_read_as_a_float(tmp_path):
    import torch

    from gearsight.train import make_scheduler

    (tmp_path / "c.yaml").write_text("warmup: 0\nlr: 2\nlr_start: 1\nepochs: 3\nlookahead: true\n")
    cfg = TrainConfig.load(tmp_path / "c.yaml")
    assert (cfg.warmup, cfg.lr, cfg.epochs, cfg.lookahead) == (0.0, 2.0, 3, True)
    assert type(cfg.warmup) is float and type(cfg.epochs) is int and type(TrainConfig(lr=1).lr) is float
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    make_scheduler(opt, cfg, total_steps=10)  # OneCycleLR refused the int: "Expected float ... pct_start"
