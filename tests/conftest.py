"""Shared fixtures: tiny image folders made on the fly, and the real data folder (CI=true: required)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("TWINNET_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets. Missing data skips locally but fails under CI=true."""
    root = shared_data_dir()
    if not (root / "MANIFEST.md").is_file():
        message = f"real data not found at {root} (set TWINNET_DATA)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return root


def make_shape_image(kind: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A noisy 8-bit image of one of a few simple shapes, jittered: easy classes for tests."""
    img = np.zeros((size, size), np.float32)
    c = size // 2 + rng.integers(-1, 2, 2)
    r = size // 4
    yy, xx = np.mgrid[:size, :size]
    if kind % 4 == 0:
        img[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r] = 1.0
    elif kind % 4 == 1:
        img[c[0] - r : c[0] + r, c[1] - r : c[1] + r] = 1.0
    elif kind % 4 == 2:
        img[c[0] - 1 : c[0] + 1, :] = 1.0
    else:
        img[:, c[1] - 1 : c[1] + 1] = 1.0
    if kind >= 4:
        img = img[::-1].copy() * 0.5 + np.eye(size, dtype=np.float32) * 0.5
    img += rng.normal(0, 0.1, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def image_folder_factory(tmp_path: Path):
    """Make ``root/class_k/img_i.png`` with ``classes`` shape classes × ``per_class`` images."""

    def make(classes: int = 4, per_class: int = 6, size: int = 16, name: str = "images", seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        root = tmp_path / name
        for k in range(classes):
            folder = root / f"class_{k}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(make_shape_image(k, rng, size)).save(folder / f"img_{i}.png")
        return root

    return make


@pytest.fixture
def one_torch_thread():
    """Tiny matrices: one torch thread (a thread team on a busy machine costs more than it saves)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
