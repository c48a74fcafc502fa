"""Fingerprint preprocessing: resolution, segmentation on a synthetic ridge pattern, CLAHE, Gabor."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from twinnet.config import InputSpec
from twinnet.data.images import decode_image
from twinnet.errors import ConfigError
from twinnet.fingerprints.preprocess import (
    FingerprintPreprocessor,
    clahe,
    crop_around,
    gabor_enhance,
    image_dpi,
    orientation_field,
    resample,
    segment,
)
from twinnet.fingerprints.synthetic import ridge_image


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_segmentation_finds_the_ridge_region():
    image, truth = ridge_image(3, 1, size=(240, 200))
    mask = segment(image, block=8, threshold=0.3)
    assert iou(mask, truth) > 0.9
    blank = np.full((100, 100), 200, np.uint8)
    assert not segment(blank).any()  # a flat image has no ridge region


def test_resample_scales_by_the_ratio_of_resolutions():
    image = np.zeros((300, 200), np.uint8)
    assert resample(image, 500, 250).shape == (150, 100)
    assert resample(image, 569, 500).shape == (round(300 * 500 / 569), round(200 * 500 / 569))
    assert resample(image, 500, 500) is image
    with pytest.raises(ValueError):
        resample(image, 0, 500)


def test_image_dpi_reads_the_file_and_ignores_placeholders():
    im = Image.new("L", (10, 10))
    assert image_dpi(im, 500) == 500
    im.info["dpi"] = (569.0, 569.0)
    assert image_dpi(im, 500) == 569
    im.info["dpi"] = (72, 72)  # a screen default, not a scanner's resolution
    assert image_dpi(im, 500) == 500


def test_orientation_field_follows_the_ridges():
    _, xx = np.mgrid[0:96, 0:96]
    vertical = (128 + 100 * np.sin(2 * np.pi * xx / 9)).astype(np.uint8)  # ridges run up and down
    theta = orientation_field(vertical)[20:-20, 20:-20]
    assert np.allclose(np.abs(np.cos(theta)), 0, atol=0.1)  # π/2: vertical
    horizontal = vertical.T.copy()
    assert np.allclose(np.abs(np.sin(orientation_field(horizontal)[20:-20, 20:-20])), 0, atol=0.1)


def test_gabor_and_clahe_keep_shape_and_are_deterministic():
    image, _ = ridge_image(1, 2)
    assert clahe(image).shape == image.shape
    a, b = gabor_enhance(image, 9.0), gabor_enhance(image, 9.0)
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    # the enhanced ridges correlate with the clean pattern more than the noisy input does
    noisy = np.clip(image.astype(float) + np.random.default_rng(0).normal(0, 40, image.shape), 0, 255).astype(np.uint8)
    enhanced = gabor_enhance(noisy, 9.0).astype(float)
    _, truth = ridge_image(1, 2)
    clean = image.astype(float)
    corr = lambda x: np.corrcoef(x[truth], clean[truth])[0, 1]  # noqa: E731
    assert corr(enhanced) > corr(noisy.astype(float))


def test_crop_around_centres_the_region_and_pads_white():
    grey = np.zeros((50, 50), np.uint8)
    mask = np.zeros((50, 50), bool)
    mask[30:40, 30:40] = True
    out = crop_around(grey, mask, (20, 20))
    assert out.shape == (20, 20) and (out == 0).all()  # the region's centre (34.5, 34.5) fits inside
    out = crop_around(grey, mask, (80, 80))
    assert (out[:5] == 255).all() and (out[40:50, 40:50] == 0).all()


def test_the_preprocessor_is_part_of_the_input_spec():
    spec = InputSpec.model_validate({"kind": "image", "channels": 1, "size": [64, 80], "preprocess": [
        {"name": "fingerprint", "params": {"dpi": 250, "gabor": True}}]})  # fmt: skip
    image = Image.fromarray(ridge_image(0, 1)[0])
    out = decode_image(image, spec)
    assert out.shape == (1, 64, 80)
    assert (decode_image(image, spec) == out).all()  # reproducible
    with pytest.raises(ConfigError, match=r"model.input.preprocess \('fingerprint'\): unknown parameter"):
        decode_image(image, InputSpec.model_validate({"preprocess": [{"name": "fingerprint", "params": {"dip": 1}}]}))
    with pytest.raises(ConfigError, match="unknown image preprocessor 'fingerprints'"):
        decode_image(image, InputSpec.model_validate({"preprocess": [{"name": "fingerprints"}]}))
    with pytest.raises(ConfigError, match="dpi must be a positive number"):
        decode_image(image, InputSpec.model_validate({"preprocess": [{"name": "fingerprint", "params": {"dpi": 0}}]}))
    assert FingerprintPreprocessor().apply(image.convert("RGB"), (32, 32)).mode == "L"
