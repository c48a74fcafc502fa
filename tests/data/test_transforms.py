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


def test_gaussian_blur_matches_scipy_per_image_sigma():
    from scipy.ndimage import gaussian_filter

    from twinnet.data.transforms import gaussian_blur

    x = torch.rand(4, 3, 17, 13)
    out = gaussian_blur(x, 2.0, torch.Generator().manual_seed(3))
    sigmas = (2.0 * torch.rand(4, generator=torch.Generator().manual_seed(3))).tolist()  # the draw it made
    for image, blurred, sigma in zip(x, out, sigmas, strict=True):
        # scipy's kernel reaches 4σ; ours 3 × the largest σ: the weights beyond differ by < 1e-3
        reference = gaussian_filter(image.numpy(), sigma=(0, sigma, sigma), mode="nearest", truncate=3.0 * 2.0 / sigma)
        torch.testing.assert_close(blurred, torch.from_numpy(reference), atol=1e-4, rtol=0)
    assert not torch.allclose(out, x)


def test_grayscale_replaces_the_colours_by_luminance_at_its_probability():
    x = torch.rand(400, 3, 4, 4)
    no_affine = {"rotation": 0, "shear": 0, "scale": (1, 1), "translate": 0}
    always = RandomAffine(AugmentConfig(enabled=True, grayscale=1.0, **no_affine))(x, torch.Generator())
    luminance = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for channel in range(3):
        torch.testing.assert_close(always[:, channel], luminance, atol=1e-5, rtol=0)
    some = RandomAffine(AugmentConfig(enabled=True, grayscale=0.2, **no_affine))(x, torch.Generator().manual_seed(0))
    grey = (some[:, 0] == some[:, 1]).all(dim=(1, 2)) & (some[:, 1] == some[:, 2]).all(dim=(1, 2))
    assert 0.12 < grey.float().mean().item() < 0.28
    # off (the default): a recipe without it keeps its images and its random stream
    plain = RandomAffine(AugmentConfig(enabled=True, **no_affine))(x, torch.Generator())
    torch.testing.assert_close(plain, x, atol=1e-5, rtol=0)
