"""Modules moved by issue 12 still import from their old paths for one release: the very same module,
with a DeprecationWarning that names the new path (README, "Moved modules")."""
from __future__ import annotations

import importlib
import sys

import pytest

MOVED = {
    "gearsight.data.ctf": "gearsight.cntk.ctf",
    "gearsight.data.ctf_reader": "gearsight.cntk.ctf.reader",
    "gearsight.data.ctf_grammar": "gearsight.cntk.ctf.grammar",
    "gearsight.data.ctf_fast": "gearsight.cntk.ctf.fast",
    "gearsight.data.ctf_batch": "gearsight.cntk.ctf.batch",
    "gearsight.data.ctf_writer": "gearsight.cntk.ctf.writer",
    "gearsight.data.ctf_scan": "gearsight.cntk.ctf.scan",
    "gearsight.data.cntk_transforms": "gearsight.cntk.transforms",
    "gearsight.data.decode": "gearsight.image.decode",
    "gearsight.data.resize": "gearsight.image.resize",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_is_the_new_module_and_warns(old):
    new = importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is new
    assert sys.modules[old] is new


def test_old_from_import_still_gives_the_names():
    sys.modules.pop("gearsight.data.cntk_transforms", None)
    with pytest.warns(DeprecationWarning):
        from gearsight.data.cntk_transforms import Pipeline, transforms_from_config
    from gearsight.cntk.transforms import Pipeline as P2, transforms_from_config as t2

    assert Pipeline is P2 and transforms_from_config is t2


def test_cntk_config_keeps_every_public_name_though_they_now_live_in_two_modules():
    sys.modules.pop("gearsight.data.cntk_config", None)
    with pytest.warns(DeprecationWarning, match="gearsight.data.cntk_config moved to gearsight.cntk.config"):
        old = importlib.import_module("gearsight.data.cntk_config")
    import gearsight.cntk.config as config
    import gearsight.cntk.transforms as transforms

    assert old.parse_config is config.parse_config and old.find_pipelines is config.find_pipelines
    assert old.build_transform is transforms.build_transform
    assert old.transforms_from_config is transforms.transforms_from_config


def test_mapfile_keeps_its_names_though_the_dataset_moved_apart_from_the_parser():
    sys.modules.pop("gearsight.data.mapfile", None)
    with pytest.warns(DeprecationWarning, match="gearsight.data.mapfile moved to gearsight.cntk.mapfile"):
        old = importlib.import_module("gearsight.data.mapfile")
    import gearsight.cntk.dataset as dataset
    import gearsight.cntk.mapfile as mapfile

    assert old.MapFileDataset is dataset.MapFileDataset and old.read_map_file is mapfile.read_map_file


@pytest.mark.parametrize("old, new", [
    ("gearsight.export.add_metadata", "gearsight.onnxfile.write_metadata"),
    ("gearsight.export.onnx_session", "gearsight.onnxfile.cpu_session"),
    ("gearsight.export.SPEC_KEY", "gearsight.onnxfile.SPEC_KEY"),
    ("gearsight.detect.train.save_state", "gearsight.checkpoint.save_detector_state"),
    ("gearsight.detect.train.load_state", "gearsight.checkpoint.load_detector_state"),
])
def test_a_moved_name_is_the_new_object_and_warns(old, new):
    old_module, _, old_name = old.rpartition(".")
    new_module, _, new_name = new.rpartition(".")
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        got = getattr(importlib.import_module(old_module), old_name)
    assert got is getattr(importlib.import_module(new_module), new_name)


def test_the_model_file_names_still_import_from_checkpoint_with_a_warning():
    """checkpoint.py holds the resume checkpoints; the model-file names resolve to modelfile's, warning."""
    import gearsight.checkpoint as checkpoint
    import gearsight.modelfile as modelfile

    for name in ("ModelSpec", "save_model", "read_spec", "load_model", "save_ensemble", "FORMAT"):
        with pytest.warns(DeprecationWarning, match=f"gearsight.checkpoint.{name} moved to gearsight.modelfile.{name}"):
            assert getattr(checkpoint, name) is getattr(modelfile, name)
