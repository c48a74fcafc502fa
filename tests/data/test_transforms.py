"""twinnet.data.transforms: batched, seeded affine augmentation."""

import pytest
import torch

from twinnet.config import AugmentConfig
from twinnet.data import (
    RandomAffine,
)
from twinnet.data.transforms import build_augmenter
from twinnet.errors import ConfigError


def test_augmentation_is_seeded_batched_and_off_when_disabled():
    x = torch.rand(6, 1, 20, 20)
    aug = RandomAffine(AugmentConfig(enabled=True, rotation=10, shear=0.3, scale=(0.8, 1.2), translate=0.1))
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x)
    off = RandomAffine(AugmentConfig(enabled=False))
    assert off(x, torch.Generator()) is x


def test_identity_affine_leaves_images_unchanged():
    x = torch.rand(3, 1, 9, 9)
    aug = RandomAffine(AugmentConfig(enabled=True, rotation=0, shear=0, scale=(1, 1), translate=0))
    torch.testing.assert_close(aug(x, torch.Generator()), x, atol=1e-5, rtol=0)


def test_flip_is_exact():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    aug = RandomAffine(AugmentConfig(enabled=True, rotation=0, shear=0, scale=(1, 1), translate=0, hflip=True))
    outs = {tuple(aug(x, torch.Generator().manual_seed(s)).flatten().round().tolist()) for s in range(10)}
    assert outs == {tuple(x.flatten().tolist()), tuple(x.flip(3).flatten().tolist())}


def test_the_augmentation_is_chosen_by_the_kind_of_input():
    on = AugmentConfig(enabled=True, rotation=5)
    image = build_augmenter(on, "image")
    assert isinstance(image, RandomAffine) and image.config.rotation == 5
    assert build_augmenter(AugmentConfig(enabled=False), "image") is None and build_augmenter(None, "text") is None
    for kind in ("text", "vector", "audio"):
        with pytest.raises(ConfigError, match=rf"data\.augment: no augmentation for {kind} inputs .* image, sequence"):
            build_augmenter(on, kind)
