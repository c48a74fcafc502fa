"""``model.encoder.name: auto`` picks input size, channels and encoder from an image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twinnet.config import load_config
from twinnet.errors import ConfigError
from twinnet.training.autopick import pick_input

REPO = Path(__file__).resolve().parents[2]


def test_small_grey_images_get_conv4_at_32_px(image_folder_factory) -> None:
    root = image_folder_factory(classes=3, per_class=4, size=16)
    config, message = pick_input(load_config(REPO / "configs/image-folder.yaml", [f"data.path={root}"]))
    assert config.model.encoder.name == "conv4"
    assert config.model.input.size == (32, 32) and config.model.input.channels == 1
    assert message is not None and "12 images" in message and "32×32 grey" in message


def test_colour_photos_get_rgb_at_the_cap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for k in range(2):
        (tmp_path / f"p{k}").mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (150, 120, 3), dtype=np.uint8)).save(tmp_path / f"p{k}" / f"{i}.jpg")
    config, message = pick_input(load_config(REPO / "configs/image-folder.yaml", [f"data.path={tmp_path}"]))
    assert config.model.input.size == (64, 64) and config.model.input.channels == 3
    assert "RGB" in (message or "")


def test_named_encoders_are_left_alone_and_auto_needs_a_folder(tmp_path: Path) -> None:
    config = load_config(REPO / "configs/faces.yaml")
    assert pick_input(config) == (config, None)
    with pytest.raises(ConfigError, match="not one"):
        pick_input(load_config(REPO / "configs/image-folder.yaml", [f"data.path={tmp_path / 'none'}"]))
