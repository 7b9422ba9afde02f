"""Device handling: gearsight.devices.resolve_device, the NCCL/gloo choice, resume onto the model's
device, and ``--device cpu`` end to end (train with resume, lookahead and EMA; evaluate; predict;
detect train/evaluate/predict) on tiny generated data. The GPU side is bench/gpu_check.py."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import gearsight.distributed as distributed
import gearsight.train as train_mod
from conftest import REPO, run_cli
from gearsight.devices import model_device, resolve_device
from test_detect_data import make_voc

CUDA = torch.cuda.is_available()


# -- resolve_device ------------------------------------------------------------------------------

def test_resolve_device_names():
    want_auto = torch.device("cuda", 0) if CUDA else torch.device("cpu")
    assert resolve_device() == resolve_device("auto") == resolve_device(None) == resolve_device(" AUTO ") == want_auto
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu", "cpu:0", "auto:1", "cuda:x", "", "mps"):
        with pytest.raises(ValueError, match="--device .*expected cpu, cuda, cuda:N or auto"):
            resolve_device(bad)


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(ValueError, match=r"--device cuda.*CUDA is not available.*--device cpu"):
            resolve_device(name)


def test_cuda_names_map_to_local_rank_and_check_the_index(monkeypatch):
    # No GPU needed: torch.device("cuda", n) is only a name until a tensor is put there.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=1) == resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)  # an explicit index wins
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"--device cuda:2: asks for GPU 2, but PyTorch sees 2"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match=r"asks for GPU 3"):
        resolve_device("cuda", local_rank=3)


def test_model_device():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


# -- torch.distributed: backend and all-reduce device ----------------------------------------------

def _fake_process_group(monkeypatch, calls: dict) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: calls.update(backend=backend))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.update(set_device=torch.device(d)))


def test_backend_follows_the_device(monkeypatch):
    calls: dict = {}
    _fake_process_group(monkeypatch, calls)
    info = distributed.init_from_env("cpu")
    assert calls == {"backend": "gloo"} and info.device == torch.device("cpu") and info.local_rank == 1 and info.joined
    calls.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    info = distributed.init_from_env("auto")  # under torchrun: cuda:LOCAL_RANK, NCCL
    assert calls == {"backend": "nccl", "set_device": torch.device("cuda", 1)}
    assert info.device == torch.device("cuda", 1) and (info.rank, info.world_size) == (1, 2)


def test_torchrun_with_one_process_joins_a_group_of_one(monkeypatch):
    calls: dict = {}
    _fake_process_group(monkeypatch, calls)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 1)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert distributed.init_from_env("cpu") == distributed.DistInfo() and calls == {}  # plain python: no group
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # torchrun --nproc_per_node=1
    info = distributed.init_from_env("cpu")
    assert calls == {"backend": "gloo"} and info.joined and info.world_size == 1


def test_all_reduce_sum_builds_its_tensor_on_the_process_device(monkeypatch):
    seen = []

    def fake_all_reduce(t):
        seen.append((t.device, t.dtype))
        t.mul_(2)  # as if a second process had the same values

    monkeypatch.setattr(distributed.dist, "all_reduce", fake_all_reduce)
    info = distributed.DistInfo(0, 2, 0, torch.device("cpu"), joined=True)
    assert distributed.all_reduce_sum([1.5, 3.0, 4.0], info) == [3.0, 6.0, 8.0]
    assert seen == [(info.device, torch.float64)]
    assert distributed.all_reduce_sum([1.0], distributed.DistInfo()) == [1.0]  # no process group: no collective
    assert seen == [(info.device, torch.float64)]


# -- resume -------------------------------------------------------------------------------------

def test_load_resume_state_maps_every_tensor_to_the_model_device(tmp_path, monkeypatch):
    cfg = train_mod.TrainConfig(widths=[4, 8, 8], epochs=1, ema=0.9, lookahead=True, amp="off", device="cpu")
    model = train_mod.build_model(cfg, 3, torch.device("cpu"))
    optimizer = train_mod.make_optimizer(model, cfg)
    scheduler = train_mod.make_scheduler(optimizer, cfg, 10)
    ema, lookahead = train_mod.make_ema(model, cfg.ema), train_mod.Lookahead(model, 10)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    optimizer.step()  # momentum buffers exist
    path = tmp_path / "last.pt"
    train_mod.save_resume_state(path, model, optimizer, scheduler, 0, {"val_acc": 0.5}, cfg, ema, lookahead)

    asked = []
    real_load = torch.load
    monkeypatch.setattr(train_mod.torch, "load", lambda *a, **kw: asked.append(kw["map_location"]) or real_load(*a, **kw))
    fresh = train_mod.build_model(cfg, 3, torch.device("cpu"))
    opt2 = train_mod.make_optimizer(fresh, cfg)
    ema2, look2 = train_mod.make_ema(fresh, cfg.ema), train_mod.Lookahead(fresh, 10)
    look2.slow = {k: v.to("meta") for k, v in look2.slow.items()}  # must be replaced, not reused
    epoch, best = train_mod.load_resume_state(path, fresh, opt2, train_mod.make_scheduler(opt2, cfg, 10), ema2, look2)
    assert (epoch, best) == (0, {"val_acc": 0.5})
    assert asked == [model_device(fresh)]
    device = model_device(fresh)
    tensors = [*fresh.state_dict().values(), *look2.slow.values(), *ema2.module.state_dict().values(),
               *(v for s in opt2.state.values() for v in s.values() if torch.is_tensor(v))]
    assert tensors and all(t.device == device for t in tensors)
    assert set(look2.slow) == set(lookahead.slow)
    for name, value in lookahead.slow.items():
        assert torch.equal(look2.slow[name], value)


# -- the CLI with --device cpu ------------------------------------------------------------------

def _shapes(root, per_class: int = 24) -> None:
    rng = np.random.default_rng(1)
    for label in ("circle", "square"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            im = Image.new("RGB", (24, 24), tuple(int(v) for v in rng.integers(160, 256, 3)))
            d = ImageDraw.Draw(im)
            x, y, r = int(rng.integers(8, 16)), int(rng.integers(8, 16)), 6
            fill = tuple(int(v) for v in rng.integers(0, 100, 3))
            (d.ellipse if label == "circle" else d.rectangle)([x - r, y - r, x + r, y + r], fill=fill)
            im.save(root / label / f"{i}.png")


TRAIN = ["--device", "cpu", "--amp", "off", "--widths", "4,8,8", "--batch-size", "8", "--ema", "0.9",
         "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("device")
    _shapes(tmp / "shapes")
    run_cli("pack", tmp / "shapes", tmp / "packed", "--size", "16", "--quiet", "--workers", "1")
    (tmp / "run.yaml").write_text("lookahead: true\n")  # lookahead has no flag of its own
    return tmp


class _Killed(Exception):
    """Stands in for a crash: raised in-process at the start of an epoch."""


def test_train_resume_evaluate_predict_on_cpu(packed, tmp_path, monkeypatch, capsys):
    """Train, resume, evaluate, predict with --device cpu. The CLI runs in-process (cli.main) where a
    fresh process adds nothing but start-up time; the resume and predict run as real subprocesses."""
    from gearsight import cli

    common = ["--epochs", "3", *TRAIN, "--config", str(packed / "run.yaml")]
    assert cli.main(["train", str(packed / "packed"), "--out", str(tmp_path / "straight"), *common]) == 0

    # The same run, dying at the start of epoch 2 (after last.pt of epoch 1), then resumed.

    real_epoch = train_mod.train_one_epoch

    def dies_at_epoch_2(model, batches, optimizer, scheduler, epoch, *args, **kwargs):
        if epoch == 2:
            raise _Killed
        return real_epoch(model, batches, optimizer, scheduler, epoch, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", dies_at_epoch_2)
    with pytest.raises(_Killed):
        cli.main(["train", str(packed / "packed"), "--out", str(tmp_path / "run"), *common])
    monkeypatch.undo()
    proc = run_cli("train", packed / "packed", "--out", tmp_path / "run", "--resume", *common)
    assert "resumed from" in proc.stdout and "at epoch 2" in proc.stdout
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert state["config"]["device"] == "cpu" and state["config"]["lookahead"] and "ema" in state and "lookahead" in state
    straight = torch.load(tmp_path / "straight" / "last.pt", map_location="cpu", weights_only=True)
    for part in ("model", "ema", "lookahead"):  # resume continued the very run (amp off: same numbers)
        for name, value in straight[part].items():
            assert torch.allclose(state[part][name].float(), value.float(), atol=1e-5), (part, name)
    import yaml

    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["device"] == "cpu"

    model = tmp_path / "run" / "model.safetensors"
    capsys.readouterr()
    assert cli.main(["evaluate", str(model), str(packed / "packed"), "--split", "test", "--out", str(tmp_path / "eval"),
                     "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["n"] == sum(map(sum, report["confusion_matrix"])) > 0 and "accuracy" in capsys.readouterr().out

    photos = sorted((packed / "shapes" / "circle").glob("*.png"))[:2]
    proc = run_cli("predict", model, *photos, "--json", "--top-k", "2", "--device", "cpu")
    results = json.loads(proc.stdout)
    from gearsight.predict import Classifier

    clf = Classifier.load(model, device="cpu")
    assert clf.device == torch.device("cpu") and model_device(clf.model) == torch.device("cpu")
    for r, photo in zip(results, photos):
        pred = clf.predict(str(photo), top_k=2)
        assert r["label"] == pred.label and r["probability"] == pytest.approx(pred.probability, abs=1e-6)


def test_cuda_request_without_cuda_fails_clearly(packed, tmp_path, capsys):
    if CUDA:
        pytest.skip("this machine has CUDA: --device cuda is valid here (bench/gpu_check.py covers it)")
    proc = run_cli("train", packed / "packed", "--out", tmp_path / "run", "--device", "cuda", check=False)
    assert proc.returncode == 2 and "argument --device: cuda: CUDA is not available" in proc.stderr, proc.stderr
    assert "--device cpu" in proc.stderr and "Traceback" not in proc.stderr and not (tmp_path / "run").exists()

    from gearsight import cli  # the other commands in-process: argparse exits 2 with the same line

    for args in (["evaluate", "m.safetensors", str(packed / "packed"), "--device", "cuda"],
                 ["predict", "m.safetensors", "x.png", "--device", "cuda:0"],
                 ["detect", "train", str(tmp_path), "--out", str(tmp_path / "d"), "--device", "cuda"],
                 ["detect", "evaluate", "m.safetensors", str(tmp_path), "--device", "cuda"],
                 ["detect", "predict", "m.safetensors", "x.png", "--device", "cuda"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(args)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "argument --device: cuda" in err and "CUDA is not available" in err, (args, err)
    # A config file asking for CUDA: the same clear line, before any data is read.
    (tmp_path / "gpu.yaml").write_text("device: cuda\n")
    assert cli.main(["train", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "run"),
                     "--config", str(tmp_path / "gpu.yaml")]) == 2
    assert "gearsight train: error: --device cuda: CUDA is not available" in capsys.readouterr().err


def test_detect_train_evaluate_predict_on_cpu(tmp_path, capsys):
    """detect train (and --resume), evaluate, predict with --device cpu, in-process (cli.main):
    test_detect_cli.py runs the same commands as subprocesses."""
    from gearsight import cli
    from gearsight.detect.predict import Detector

    voc = make_voc(tmp_path / "voc", n=4, size=(96, 72))
    tiny = ["--min-size", "64", "--max-size", "96", "--batch-size", "2", "--workers", "0", "--warmup", "2",
            "--device", "cpu"]
    run, model = tmp_path / "run", str(tmp_path / "run" / "model.safetensors")
    assert cli.main(["detect", "train", str(voc), "--out", str(run), "--epochs", "1", *tiny]) == 0
    assert cli.main(["detect", "train", str(voc), "--out", str(run), "--epochs", "2", "--resume", *tiny]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"
    assert cli.main(["detect", "evaluate", model, str(voc), "--split", "test", "--draw", "0", "--device", "cpu"]) == 0
    assert "AP50" in capsys.readouterr().out
    image = str(voc / "JPEGImages" / "img_000.jpg")
    assert cli.main(["detect", "predict", model, image, "--min-score", "0", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["image"] == image and len(printed["boxes"]) == len(printed["scores"])

    detector = Detector.load(model, device="cpu")
    assert detector.device == torch.device("cpu") == model_device(detector.model)
    assert detector.predict([image], min_score=0.0)[0]["scores"] == printed["scores"]


def test_torchrun_s_environment_is_read_in_one_place(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.DistInfo.from_env() == distributed.DistInfo() and distributed.DistInfo.from_env().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = distributed.DistInfo.from_env()
    assert (info.rank, info.world_size, info.local_rank, info.launched, info.joined) == (3, 4, 1, True, False)
    assert not info.is_main
    source = "\n".join(p.read_text() for p in (REPO / "src" / "gearsight").rglob("*.py"))
    assert source.count('environ.get("RANK"') == 1  # distributed.DistInfo.from_env
