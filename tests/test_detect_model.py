"""Detector factory, model file round trip, loading a torchvision checkpoint, anchor fitting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gearsight.detect.model import PRESETS, DetectorConfig, auto_anchor_sizes, create_detector, load_torchvision_weights
from gearsight.detect.predict import Detector, detector_spec, load_detector, save_detector
from gearsight.modelfile import ModelSpec, read_spec, save_model

SMALL = DetectorConfig.from_dict({**PRESETS["cpu"], "min_size": 64, "max_size": 96,
                                  "anchor_sizes": [[8, 12], [20, 30], [45, 70]]})


def test_model_file_round_trip_gives_identical_predictions(tmp_path):
    torch.manual_seed(0)
    model = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 2, SMALL).eval()
    model.roi_heads.score_thresh = 0.0  # an untrained net scores low; keep every box to compare
    path = tmp_path / "det.safetensors"
    save_detector(path, model, detector_spec("fasterrcnn_mobilenet_v3_large_fpn", SMALL, ["a", "b"], [1, 2]))
    spec = read_spec(path)
    assert spec.arch_config["anchor_sizes"] == [[8, 12], [20, 30], [45, 70]] and spec.classes == ["a", "b"]
    detector = Detector.load(path)
    detector.model.roi_heads.score_thresh = 0.0
    image = np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    ours, theirs = detector.raw_outputs([image])[0], model([torch.from_numpy(image).permute(2, 0, 1) / 255])[0]
    np.testing.assert_allclose(ours["boxes"], theirs["boxes"].detach().numpy(), atol=1e-4)
    result = detector.predict([image])[0]
    assert set(result) == {"boxes", "labels", "scores"} and set(result["labels"]) <= {"a", "b"}


def test_a_classifier_file_is_refused_clearly(tmp_path):
    path = tmp_path / "clf.safetensors"
    save_model(path, torch.nn.Linear(2, 2), ModelSpec(arch="gearnet", arch_config={}, classes=["x"], input_size=8))
    with pytest.raises(ValueError, match="not a detector model file"):
        load_detector(path)


def test_torchvision_checkpoint_loads_except_the_class_head(tmp_path):
    torch.manual_seed(0)
    tiny = DetectorConfig(min_size=64, max_size=96)  # torchvision's own shape
    coco = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 90, tiny)  # 91 outputs, like torchvision's file
    path = tmp_path / "fasterrcnn_mobilenet_v3_large_fpn.pth"
    torch.save(coco.state_dict(), path)
    mine = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 3, tiny)
    loaded, skipped = load_torchvision_weights(mine, path)
    assert skipped == sorted(k for k in mine.state_dict() if k.startswith("roi_heads.box_predictor"))
    assert loaded == len(mine.state_dict()) - len(skipped)
    torch.testing.assert_close(mine.backbone.body["0"][0].weight, coco.backbone.body["0"][0].weight)
    with pytest.raises(ValueError, match="no tensor matches"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
        load_torchvision_weights(mine, tmp_path / "other.pth")


def test_resnet50_builds_from_scratch_with_custom_anchors():
    cfg = DetectorConfig(min_size=64, max_size=64, anchor_sizes=[[16], [32], [64], [128], [256]])
    model = create_detector("fasterrcnn_resnet50_fpn", 3, cfg).eval()
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    with torch.no_grad():
        assert set(model([torch.rand(3, 64, 64)])[0]) == {"boxes", "labels", "scores"}


def test_auto_anchors_span_the_box_sizes():
    wh = np.array([[20, 20]] * 10 + [[100, 100]] * 80 + [[200, 180]] * 10, float)
    sizes = auto_anchor_sizes(wh, scale=0.5, levels=3)
    flat = [s for level in sizes for s in level]
    assert len(sizes) == 3 and all(len(level) == 2 for level in sizes)
    assert flat == sorted(flat) and flat[0] == pytest.approx(10, rel=0.05) and flat[-1] == pytest.approx(94.9, rel=0.05)
    with pytest.raises(ValueError, match="no boxes"):
        auto_anchor_sizes(np.zeros((0, 2)), 1.0, 3)
