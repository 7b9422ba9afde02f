"""AirNet (airbench94's network) and the training pieces the CIFAR recipe adds: whitening init,
frozen parameters, lookahead, shift TTA, reflect padding, training without a val split, and the
Muon optimizer of airbench94_muon."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gearsight.config import TrainConfig
from gearsight.data.transforms import pad_images
from gearsight.models import create_model
from gearsight.predict import Classifier
from gearsight.train import Lookahead, make_optimizer
from gearsight.tta import tta_logits
from gearsight.workflow import train_arrays


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """Correlated pixels (neighbours and channels), like photos: what whitening must undo."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randn(n, 3, 8, 8, generator=g) + torch.randn(n, 1, 8, 8, generator=g)
    return torch.nn.functional.interpolate(small, size=32, mode="bilinear", align_corners=False)


def test_whitening_stem_decorrelates_2x2_patches():
    model = create_model("airnet", 10, widths=[8, 8, 8])
    images = smooth_images(200)
    model.fit_to_data(images)
    stem = model.whiten
    assert stem.out_channels == 24 and not stem.weight.requires_grad
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, stem.weight[:12])  # no bias; the +filters half
    flat = out.permute(1, 0, 2, 3).reshape(12, -1)
    cov = flat @ flat.T / flat.shape[1]
    # identity up to the eps regulariser (it shrinks only the smallest-variance directions)
    assert torch.allclose(cov - torch.diag(torch.diag(cov)), torch.zeros(12, 12), atol=0.05)
    assert (torch.diag(cov)[:6] > 0.95).all() and (torch.diag(cov) <= 1.0001).all()
    assert torch.equal(stem.weight[12:], -stem.weight[:12])


def test_frozen_parameters_and_optimizer_groups():
    model = create_model("airnet", 10, widths=[8, 16, 16])
    assert model.frozen_parameters(2) == [] and model.frozen_parameters(3) == [model.whiten.bias]
    cfg = TrainConfig(lr=1.5, weight_decay=1e-3, bias_lr_scale=64.0)
    opt = make_optimizer(model, cfg)
    weights, norms = opt.param_groups
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.whiten.weight) not in in_opt  # frozen filters are not optimised at all
    norm_biases = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {id(p) for p in norms["params"]} == norm_biases  # BN scales are frozen, only biases train
    assert any(p is model.whiten.bias for p in weights["params"])  # as airbench: not a "norm" bias
    assert norms["lr"] == 96.0 and abs(norms["weight_decay"] * norms["lr"] - 1e-3 * 1.5) < 1e-12
    gear = make_optimizer(model, TrainConfig())  # gear recipe: no decay on 1-d parameters
    assert gear.param_groups[1]["weight_decay"] == 0.0 and gear.param_groups[1]["lr"] == gear.param_groups[0]["lr"]


def test_lookahead_pulls_weights_to_the_slow_average():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    la = Lookahead(model, total_steps=10)
    with torch.no_grad():
        model.weight.fill_(1.0)
    la.step(model, 3)  # not a multiple of 5: nothing happens
    assert model.weight[0, 0].item() == 1.0
    la.step(model, 10)  # decay 0.95**5 at the end of training
    expected = 0.95 ** 5 * 0.0 + (1 - 0.95 ** 5) * 1.0
    assert abs(model.weight[0, 0].item() - expected) < 1e-6 and torch.equal(la.slow["weight"], model.weight.detach())
    with torch.no_grad():
        model.weight.fill_(5.0)
    la.finish(model)  # leaves the slow weights in the model
    assert abs(model.weight[0, 0].item() - expected) < 1e-6


def test_shift_tta_is_the_airbench_average():
    torch.manual_seed(0)
    model = create_model("airnet", 4, widths=[8, 8, 8]).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        def flip_mean(v):
            return 0.5 * (model(v) + model(v.flip(3)))
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        want = 0.5 * flip_mean(x) + 0.25 * (flip_mean(padded[:, :, :32, :32]) + flip_mean(padded[:, :, 2:, 2:]))
        assert torch.allclose(tta_logits(model, x, True, 1), want, atol=1e-5)
        assert torch.allclose(tta_logits(model, x, False, 0), model(x))


def test_reflect_padding_mirrors_the_edges():
    images = torch.arange(2 * 3 * 3 * 1, dtype=torch.uint8).reshape(2, 3, 3, 1)
    padded = pad_images(images, 1, mode="reflect")
    assert padded.shape == (2, 5, 5, 1)
    assert torch.equal(padded[:, 1:4, 1:4], images) and torch.equal(padded[:, 0, 1:4], images[:, 1])
    assert torch.equal(pad_images(images, 1, fill=7)[:, 0, 0, 0], torch.tensor([7, 7], dtype=torch.uint8))


def _two_class_images(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 80, (n, 32, 32, 3)).astype(np.uint8)
    images[labels == 1, 8:24, 8:24] += 150  # a bright square: learnable in a few steps
    return images, labels


def test_airbench_recipe_trains_without_val_and_the_model_keeps_its_tta(tmp_path):
    cfg = TrainConfig.load("configs/cifar10-10min.yaml")
    # the config's lr is for batch 1024; airbench's lr is per example, so it scales with the batch
    cfg.update(widths=[8, 16, 16], epochs=4, minutes=0, batch_size=32, lr=cfg.lr * 32 / 1024, threads=1)
    train = _two_class_images(256, 0)
    empty = (train[0][:0], train[1][:0])
    summary = train_arrays(train, empty, ["dark", "square"], tmp_path / "run", cfg, progress=False,
                           resize="crop", fill=0)
    assert summary["best_epoch"] == 3  # no val split: the last epoch is the model
    clf = Classifier.load(tmp_path / "run" / "model.safetensors")
    assert clf.tta_translate == 1 and clf.spec.arch == "airnet"
    test = _two_class_images(64, 1)
    assert (clf.predict_packed(test[0]).argmax(1) == test[1]).mean() >= 0.9


def test_alternate_flip_mirrors_each_image_in_every_other_epoch():
    from gearsight.data.loader import Batches

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 4, 4, 3)).astype(np.uint8)
    batches = Batches.from_arrays(images, np.arange(40), batch_size=40, mean=[0, 0, 0], std=[1 / 255] * 3,
                                  shuffle=True, augment=True, flip=True, alternate_flip=True, translate=0)
    mirrored = []
    for epoch in range(3):
        x, y = next(batches.epoch(epoch))
        out = x.permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
        flags = np.zeros(40, dtype=bool)
        for row, label in zip(out, y.tolist()):
            assert np.array_equal(row, images[label]) or np.array_equal(row, images[label][:, ::-1])
            flags[label] = not np.array_equal(row, images[label])
        mirrored.append(flags)
    assert np.array_equal(mirrored[0], ~mirrored[1]) and np.array_equal(mirrored[0], mirrored[2])
    assert 10 < mirrored[0].sum() < 30  # a random half, not all or none


def test_cutout_sets_one_square_per_image_to_the_mean_colour_and_leaves_runs_without_it_unchanged():
    from gearsight.data.loader import Batches

    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, (32, 16, 16, 3)).astype(np.uint8)  # darker than the mean: squares stand out
    mean = [128 / 255, 153 / 255, 178 / 255]  # exactly representable in uint8
    common = dict(batch_size=32, mean=mean, std=[1 / 255] * 3, shuffle=True, augment=True, translate=2, seed=3)
    plain = Batches.from_arrays(images, np.arange(32), **common)
    cut = Batches.from_arrays(images, np.arange(32), cutout=6, **common)
    (x0, y0), (x1, y1) = next(plain.epoch(0)), next(cut.epoch(0))
    assert torch.equal(y0, y1)  # the same order: cutout draws after the shuffle and the shifts
    filled = (x1 == 0).all(dim=1)  # normalized mean colour = 0 in every channel
    assert (filled.sum(dim=(1, 2)) == 36).all()  # one 6x6 square each, inside the image
    assert torch.equal(x1[~filled[:, None].expand_as(x1)], x0[~filled[:, None].expand_as(x0)])  # the rest untouched
    x2, _ = next(Batches.from_arrays(images, np.arange(32), **common).epoch(0))
    assert torch.equal(x0, x2)


def test_orthogonalize_brings_every_singular_value_near_one():
    from gearsight.optim import orthogonalize

    g = torch.Generator().manual_seed(0)
    for shape in [(64, 216), (256, 2304), (300, 40)]:  # wide, wider, tall
        m = torch.randn(*shape, generator=g)
        s = torch.linalg.svdvals(orthogonalize(m))
        assert s.max() < 1.6 and s.min() > 0.3, (shape, s.min(), s.max())  # Muon's ~[0.5, 1.5]
        u, _, vh = torch.linalg.svd(m, full_matrices=False)
        assert torch.nn.functional.cosine_similarity(orthogonalize(m).flatten(), (u @ vh).flatten(), dim=0) > 0.9


MUON = TrainConfig(optimizer="muon", lr=1.66, weight_decay=0.0024, bias_lr_scale=64.0, muon_lr=0.24,
                   muon_momentum=0.6, momentum=0.85)  # configs/cifar10-30min-muon.yaml's optimizer


def test_muon_optimizer_groups_filters_alone_and_keeps_their_norm():
    torch.manual_seed(0)
    model = create_model("airnet", 10, widths=[8, 16, 16])
    opt = make_optimizer(model, MUON)
    muon, weights, norms = opt.param_groups
    filters = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad]
    assert muon["muon"] and [id(p) for p in muon["params"]] == [id(p) for p in filters]
    assert (muon["lr"], muon["momentum"], muon["weight_decay"]) == (0.24, 0.6, 0.0)
    assert [p.ndim for p in weights["params"]] == [1, 2]  # the whitening bias and the head: SGD
    assert norms["lr"] == 1.66 * 64
    before = {id(p): p.detach().clone() for g in opt.param_groups for p in g["params"]}
    model(smooth_images(16)).logsumexp(1).mean().backward()
    opt.step()
    for p in filters:  # norm sqrt(out channels) before the step, then one step of spectral norm ~lr
        assert not torch.equal(p, before[id(p)])
        step = (p.detach() - before[id(p)] * (len(p) ** 0.5 / before[id(p)].norm())).reshape(len(p), -1)
        assert 0.24 * 0.5 < torch.linalg.matrix_norm(step, ord=2) < 0.24 * 1.6
    head = model.head.weight  # SGD's own update, Nesterov with coupled decay: unchanged by Muon
    sgd = torch.optim.SGD([before[id(head)].clone().requires_grad_()], lr=1.66, momentum=0.85, nesterov=True,
                          weight_decay=0.0024)
    sgd.param_groups[0]["params"][0].grad = head.grad.clone()
    sgd.step()
    assert torch.equal(head.detach(), sgd.param_groups[0]["params"][0].detach())
    with pytest.raises(ValueError, match="optimizer='adam'"):
        make_optimizer(model, TrainConfig(optimizer="adam"))


def test_muon_recipe_trains(tmp_path):
    cfg = TrainConfig.load("configs/cifar10-30min-muon.yaml")
    cfg.update(widths=[8, 16, 16], epochs=3, minutes=0, batch_size=32, lr=cfg.lr * 32 / 2000, threads=1)
    train = _two_class_images(256, 0)
    empty = (train[0][:0], train[1][:0])
    train_arrays(train, empty, ["dark", "square"], tmp_path / "run", cfg, progress=False, resize="crop", fill=0)
    clf = Classifier.load(tmp_path / "run" / "model.safetensors")
    test = _two_class_images(64, 1)
    assert (clf.predict_packed(test[0]).argmax(1) == test[1]).mean() >= 0.9


def test_muon_state_survives_a_checkpoint_round_trip(tmp_path):
    from gearsight.checkpoint import load_checkpoint, save_checkpoint

    images = smooth_images(8)

    def step(model, opt):
        opt.zero_grad()
        model(images).logsumexp(1).mean().backward()
        opt.step()

    torch.manual_seed(0)
    model = create_model("airnet", 10, widths=[8, 16, 16])
    opt = make_optimizer(model, MUON)
    step(model, opt)
    save_checkpoint(tmp_path / "last.pt", model, opt)
    copy = create_model("airnet", 10, widths=[8, 16, 16])
    copy_opt = make_optimizer(copy, MUON)
    load_checkpoint(tmp_path / "last.pt", copy, copy_opt)
    assert copy_opt.param_groups[0]["muon"]
    step(model, opt)
    step(copy, copy_opt)  # the same momentum buffers: the same next step
    for a, b in zip(model.state_dict().values(), copy.state_dict().values()):
        assert torch.equal(a, b)
