"""Synthetic fingerprint-like images (for tests and examples): ridges (a sinusoid of a warped radius) inside an
ellipse on a light, slightly noisy background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def ridge_image(finger: int, impression: int, size: tuple[int, int] = (200, 180), period: float = 9.0,
                ellipse: tuple[float, float] = (0.38, 0.32)) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(image uint8 H×W, true ridge-region mask)`` of one impression of one synthetic finger."""
    h, w = size
    rng = np.random.default_rng([finger, impression])
    fr = np.random.default_rng(finger)
    cy, cx = h / 2 + rng.normal(0, 3), w / 2 + rng.normal(0, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    ky, kx = fr.uniform(0.7, 1.3, 2)
    radius = np.hypot((yy - h * fr.uniform(0.3, 0.7)) * ky, (xx - w * fr.uniform(0.3, 0.7)) * kx)
    ridges = np.sin(2 * np.pi * radius / period + fr.uniform(0, 6) * np.sin(xx / 40))
    inside = ((yy - cy) / (ellipse[0] * h)) ** 2 + ((xx - cx) / (ellipse[1] * w)) ** 2 <= 1.0
    image = np.where(inside, 128 + 100 * ridges, 225) + rng.normal(0, 3, (h, w))
    return np.clip(image, 0, 255).astype(np.uint8), inside


def write_fvc_folder(root: Path, fingers: int = 3, impressions: int = 3, ext: str = ".tif",
                     dpi: float | None = None) -> Path:  # fmt: skip
    """FVC-named files ``<100+f>_<i>.<ext>`` in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for f in range(fingers):
        for i in range(1, impressions + 1):
            image = Image.fromarray(ridge_image(f, i)[0])
            if dpi:
                image.save(root / f"{101 + f}_{i}{ext}", dpi=(dpi, dpi))
            else:
                image.save(root / f"{101 + f}_{i}{ext}")
    return root
