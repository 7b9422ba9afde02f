"""GearNet's stems: what each one costs and sees."""
from __future__ import annotations

import pytest
import torch

from gearsight.models.gearnet import create_gearnet, make_stem


def test_the_unshuffle_stem_sees_every_pixel_of_twice_the_resolution_at_the_conv_stems_output_size():
    conv, unshuffle = make_stem("conv", 24), make_stem("unshuffle", 24)
    assert conv(torch.zeros(1, 3, 64, 64)).shape == unshuffle(torch.zeros(1, 3, 128, 128)).shape == (1, 24, 32, 32)
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    unshuffle(x).sum().backward()
    assert (x.grad != 0).all()  # no pixel skipped (a stride-2 conv would skip none either, but alias)


def test_gearnet_with_each_stem_classifies_a_batch_and_names_bad_stems():
    for kind, px in (("conv", 64), ("patch", 64), ("unshuffle", 128)):
        assert create_gearnet(12, stem_kind=kind)(torch.zeros(2, 3, px, px)).shape == (2, 12)
    with pytest.raises(ValueError, match="unknown stem 'pixel'"):
        create_gearnet(12, stem_kind="pixel")
