"""Impression augmentation: elastic, pressure, occlusion, noise (seeded, per image, in [0, 1])."""

from __future__ import annotations

import torch

from twinnet.config import AugmentConfig
from twinnet.data.transforms import RandomAffine
from twinnet.fingerprints.augment import elastic, impression, occlude, pressure


def ridges(n: int = 4, size: int = 48) -> torch.Tensor:
    x = torch.arange(size).float()
    stripes = 0.5 + 0.5 * torch.sin(2 * torch.pi * x / 8)
    return stripes.view(1, 1, 1, size).expand(n, 1, size, size).clone()


def test_pressure_thins_or_thickens_dark_ridges():
    x = ridges()
    g = torch.Generator().manual_seed(0)
    out = pressure(x, 2, g)
    changed = [(out[i] - x[i]).abs().sum() > 0 for i in range(len(x))]
    assert any(changed)
    for i in range(len(x)):
        d = (out[i] - x[i]).sum()
        assert d >= 0 or (out[i] <= x[i] + 1e-6).all()  # a dilation only brightens, an erosion only darkens


def test_occlusion_blanks_a_band_to_the_background():
    x = torch.full((8, 1, 20, 20), 0.3)
    x[:, :, 0, 0] = x[:, :, 0, -1] = x[:, :, -1, 0] = x[:, :, -1, -1] = 1.0  # corners: white paper
    out = occlude(x, 0.5, torch.Generator().manual_seed(1))
    assert (out == 1.0).float().mean() > (x == 1.0).float().mean()
    assert (out[x != out] == 1.0).all()


def test_elastic_is_smooth_and_small():
    x = ridges(2)
    out = elastic(x, 0.02, torch.Generator().manual_seed(2))
    assert out.shape == x.shape and 0 < (out - x).abs().mean() < 0.3


def test_impression_is_seeded_and_clamped_and_off_by_default():
    config = AugmentConfig(enabled=True, rotation=45, elastic=0.03, pressure=1, noise=0.1, occlude=0.3)
    x = ridges()
    a = impression(x, config, torch.Generator().manual_seed(3))
    b = impression(x, config, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    # RandomAffine runs them after the affine part; a config without them gives what it gave before
    plain = AugmentConfig(enabled=True, rotation=10)
    with_none = AugmentConfig(enabled=True, rotation=10, elastic=0, pressure=0, noise=0, occlude=0)
    assert torch.equal(RandomAffine(plain)(x, torch.Generator().manual_seed(4)),
                       RandomAffine(with_none)(x, torch.Generator().manual_seed(4)))  # fmt: skip
    out = RandomAffine(config)(x, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and not torch.equal(out, RandomAffine(plain)(x, torch.Generator().manual_seed(5)))
