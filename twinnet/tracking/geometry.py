"""Crop geometry: square crops around a target with SiamFC's context margin, and their inverse.

Coordinates are continuous pixels, 0-based (pixel ``i`` covers ``[i, i+1)``). A crop is the
square of side ``side`` image pixels centred on ``center``, resampled to ``out`` × ``out`` pixels;
where it leaves the image it is padded with ``pad`` (the frame's mean colour, as in SiamFC, so the
network sees no artificial edges). :func:`box_to_crop` and :func:`crop_to_box` map boxes between
the two frames of reference exactly (one is the inverse of the other), and :func:`crop` samples
pixels with the same mapping.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from twinnet.errors import ConfigError


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "tracking needs OpenCV: pip install 'twinnet[vision]' (opencv-contrib-python-headless)"
        ) from None
    return cv2


def center_of(box: np.ndarray) -> np.ndarray:
    """The centre ``(cx, cy)`` of an ``x, y, w, h`` box."""
    b = np.asarray(box, dtype=np.float64)
    return np.array([b[0] + b[2] / 2, b[1] + b[3] / 2])


def context_side(w: float, h: float, context: float = 0.5) -> float:
    """SiamFC's exemplar side: ``√((w+p)(h+p))`` with the margin ``p = context·(w+h)`` (0.5: the
    mean of width and height)."""
    p = context * (w + h)
    return math.sqrt((w + p) * (h + p))


def crop(image: np.ndarray, center: np.ndarray, side: float, out: int, pad: np.ndarray | None = None) -> np.ndarray:
    """The square of ``side`` image pixels centred on ``center``, resampled to ``out × out``
    (bilinear), padded with ``pad`` (default: the image's mean colour) where it leaves the image."""
    cv2 = _cv2()
    k = side / out  # image pixels per crop pixel
    # cv2 samples at integer pixel indices (pixel centres); continuous X = cx + (u + 0.5 - out/2)·k
    tx = center[0] + (0.5 - out / 2) * k - 0.5
    ty = center[1] + (0.5 - out / 2) * k - 0.5
    matrix = np.array([[k, 0.0, tx], [0.0, k, ty]])
    if pad is None:
        pad = mean_colour(image)
    return cv2.warpAffine(image, matrix, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in pad))  # fmt: skip


def mean_colour(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float64).reshape(-1, image.shape[-1] if image.ndim == 3 else 1).mean(0)


def box_to_crop(box: np.ndarray, center: np.ndarray, side: float, out: int) -> np.ndarray:
    """An image box in the coordinates of the crop of ``side`` pixels around ``center`` (``out`` px)."""
    b = np.asarray(box, dtype=np.float64)
    scale = out / side
    x = (b[0] - center[0]) * scale + out / 2
    y = (b[1] - center[1]) * scale + out / 2
    return np.array([x, y, b[2] * scale, b[3] * scale])


def crop_to_box(box: np.ndarray, center: np.ndarray, side: float, out: int) -> np.ndarray:
    """The inverse of :func:`box_to_crop`: a box in crop coordinates back in the image."""
    b = np.asarray(box, dtype=np.float64)
    scale = side / out
    x = (b[0] - out / 2) * scale + center[0]
    y = (b[1] - out / 2) * scale + center[1]
    return np.array([x, y, b[2] * scale, b[3] * scale])


def clip_box(box: np.ndarray, size: tuple[int, int], min_side: float = 1.0) -> np.ndarray:
    """Keep a box's centre inside a ``(W, H)`` image and its sides between ``min_side`` and the image's."""
    w_img, h_img = size
    cx, cy = center_of(box)
    w = float(np.clip(box[2], min_side, w_img))
    h = float(np.clip(box[3], min_side, h_img))
    cx, cy = float(np.clip(cx, 0, w_img)), float(np.clip(cy, 0, h_img))
    return np.array([cx - w / 2, cy - h / 2, w, h])
