"""Face crops (OpenCV's Haar cascade): an LFW photo is cut to its face; an image without a face is
kept whole and reported by name."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twinnet.config import InputSpec
from twinnet.data.items import load_images

faces = pytest.importorskip("twinnet.data.faces")
pytest.importorskip("cv2")

LFW_IMAGE = Path("lfw/people/Colin_Powell/Colin_Powell_0001.jpg")


def _no_face(path: Path) -> Path:
    yy, xx = np.mgrid[:150, :150]
    Image.fromarray(((xx + yy) * 255 // 298).astype(np.uint8)).convert("RGB").save(path)  # a plain gradient
    return path


def test_an_lfw_photo_is_cut_to_its_face(shared_data: Path) -> None:
    image = Image.open(shared_data / LFW_IMAGE)
    box = faces.detect_face(image)
    assert box is not None
    x, y, w, h = box
    assert 60 <= w <= 140 and abs(x + w / 2 - 75) < 20 and abs(y + h / 2 - 75) < 25  # the centred face
    with faces.collect_misses() as misses:
        crop = faces.crop_to_face(image, margin=0.1)
    assert misses == [] and crop.size[0] < 150 and crop.size[0] == crop.size[1]
    spec = InputSpec(kind="image", channels=3, size=(32, 32), face_crop=True)
    plain = InputSpec(kind="image", channels=3, size=(32, 32))
    cropped, _ = load_images([shared_data / LFW_IMAGE], spec)
    whole, _ = load_images([shared_data / LFW_IMAGE], plain)
    assert cropped.shape == whole.shape == (1, 3, 32, 32)
    assert (cropped.float() - whole.float()).abs().mean() > 5  # a different (tighter) view of the photo


def test_an_image_without_a_face_is_kept_whole_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _no_face(tmp_path / "wall.png")
    image = Image.open(path)
    assert faces.detect_face(image) is None
    with faces.collect_misses() as misses:
        kept = faces.crop_to_face(image, name=path)
    assert kept.size == (150, 150) and misses == [str(path)]
    spec = InputSpec(kind="image", channels=3, size=(16, 16), face_crop=True)
    with caplog.at_level(logging.WARNING):
        _, kept_idx = load_images([path], spec)
    assert len(kept_idx) == 1  # kept, not dropped
    assert "no face found in 1 of 1 images" in caplog.text and "wall.png" in caplog.text
