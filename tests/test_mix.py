"""Mixup / CutMix (gearsight/mix.py): the blend of images matches the blend of losses."""
from __future__ import annotations

import torch

from gearsight.mix import mix_batch, mixed_cross_entropy


def _batch():
    torch.manual_seed(0)
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 16, 16).clone()  # image i is all i
    return x, torch.arange(8)


def test_mixup_blends_each_image_with_its_partner_by_lam():
    x, y = _batch()
    mixed, partner, lam = mix_batch(x, y, mixup=0.4, cutmix=0.0)
    assert 0.0 <= lam <= 1.0
    expected = lam * y.float() + (1 - lam) * partner.float()  # image value == label here
    assert torch.allclose(mixed[:, 0, 0, 0], expected)
    assert sorted(partner.tolist()) == list(range(8))  # a permutation of the batch


def test_cutmix_lam_is_the_share_of_pixels_kept():
    x, y = _batch()
    for _ in range(20):
        mixed, partner, lam = mix_batch(x, y, mixup=0.0, cutmix=1.0)
        for i in range(8):
            if partner[i] == y[i]:
                continue
            kept = (mixed[i, 0] == y[i]).float().mean().item()
            assert abs(kept - lam) < 1e-6
        assert torch.equal(x, _batch()[0])  # the input batch is not changed in place


def test_mixed_loss_is_the_blend_of_the_two_losses():
    logits = torch.randn(4, 5)
    y, partner = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 3, 2, 1])
    loss = mixed_cross_entropy(logits, y, partner, 0.25, label_smoothing=0.1)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(loss, 0.25 * ce(logits, y, label_smoothing=0.1) + 0.75 * ce(logits, partner, label_smoothing=0.1))
