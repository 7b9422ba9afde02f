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
