"""Fingerprint preprocessing, part of the saved model (``model.input.preprocess``).

Every image the model reads (training, evaluation, ``twinnet verify``, galleries, the service)
passes through the same seeded-free, deterministic steps, configured once in the model's input spec
and saved with it::

    input: {kind: image, channels: 1, size: [176, 176],
            preprocess: [{name: fingerprint, params: {dpi: 250, source_dpi: 500, gabor: false}}]}

1. **Resolution**: the image is resampled from its own resolution (the file's dpi, else the one
   the data source read from a manifest, else ``source_dpi``) to the model's ``dpi``, so that
   ridges have the same period in pixels whatever the sensor (500 or 569 dpi).
2. **Contrast**: CLAHE (OpenCV; ``clip``, tiles of ``tile`` pixels at 500 dpi).
3. **Segmentation**: the ridge region is where the local standard deviation of the grey level is
   above ``threshold`` × its 95th percentile (blocks of 16 px at 500 dpi), closed, opened and cut
   to its largest connected part; the rest becomes white paper.
4. Optionally **Gabor enhancement** guided by the orientation field (gradient structure tensor,
   smoothed), at the ridge frequency expected at this resolution.
5. The image is cut (or padded with white) to the model's input size around the centre of the
   ridge region.

Needs OpenCV (the ``vision`` or ``fingerprints`` extra).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from twinnet.errors import ConfigError
from twinnet.registry import IMAGE_PREPROCESSORS

#: Typical ridge period of an adult fingerprint at 500 dpi (about 0.46 mm), in pixels.
RIDGE_PERIOD_500 = 9.0


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ConfigError("the fingerprint preprocessor needs OpenCV: pip install 'twinnet[fingerprints]'") from None
    return cv2


def image_dpi(image: Image.Image, default: float) -> float:
    """The horizontal resolution the image declares (PNG pHYs, TIFF/BMP headers), else ``default``."""
    dpi: Any = image.info.get("dpi")
    try:
        value = float(dpi[0]) if isinstance(dpi, (tuple, list)) else float(dpi)
    except (TypeError, ValueError):
        return default
    # some writers store 1 (no unit) or 72 (a screen default) when they know nothing
    return value if 100.0 <= value <= 5000.0 else default


def resample(grey: np.ndarray, from_dpi: float, to_dpi: float) -> np.ndarray:
    """``grey`` (uint8, H×W) at ``from_dpi`` resampled to ``to_dpi`` (area averaging when shrinking)."""
    if from_dpi <= 0 or to_dpi <= 0:
        raise ValueError(f"resolutions must be positive, not {from_dpi} and {to_dpi}")
    if abs(from_dpi - to_dpi) < 1e-6:
        return grey
    cv2 = _cv2()
    scale = to_dpi / from_dpi
    h, w = grey.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR))


def clahe(grey: np.ndarray, clip: float = 2.0, tile: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV) with ``tile``×``tile`` tiles."""
    cv2 = _cv2()
    h, w = grey.shape
    grid = (max(1, round(w / tile)), max(1, round(h / tile)))
    return np.asarray(cv2.createCLAHE(clipLimit=float(clip), tileGridSize=grid).apply(np.ascontiguousarray(grey)))


def segment(grey: np.ndarray, block: int = 8, threshold: float = 0.3) -> np.ndarray:
    """The ridge region of ``grey`` as a boolean mask: local standard deviation (in ``block``-pixel
    windows) above ``threshold`` × its 95th percentile, morphologically closed and opened, largest
    connected part kept (holes filled)."""
    cv2 = _cv2()
    g = grey.astype(np.float32)
    k = (max(3, block | 1), max(3, block | 1))
    mean = cv2.blur(g, k)
    var = np.maximum(cv2.blur(g * g, k) - mean * mean, 0.0)
    std = np.sqrt(var)
    top = float(np.percentile(std, 95))
    if top <= 1e-6:
        return np.zeros(grey.shape, bool)
    mask = (std > threshold * top).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * block + 1, 2 * block + 1))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return np.zeros(grey.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    # fill holes: the background is what a flood fill from outside reaches
    padded = np.pad(region, 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = (flood == 0)[1:-1, 1:-1]
    return (region.astype(bool)) | holes


def orientation_field(grey: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """Ridge orientation (radians, in [0, π)) per pixel, from the smoothed gradient structure tensor."""
    cv2 = _cv2()
    g = grey.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    gxx = cv2.GaussianBlur(gx * gx, (0, 0), sigma)
    gyy = cv2.GaussianBlur(gy * gy, (0, 0), sigma)
    gxy = cv2.GaussianBlur(gx * gy, (0, 0), sigma)
    gradient = 0.5 * np.arctan2(2 * gxy, gxx - gyy)  # the dominant gradient direction
    return np.mod(gradient + np.pi / 2, np.pi)  # ridges run across the gradient


def gabor_enhance(grey: np.ndarray, period: float, orientations: int = 16) -> np.ndarray:
    """Orientation-field-guided Gabor filtering: each pixel takes the response of the filter tuned
    to its ridge orientation and to ridges ``period`` pixels apart; rescaled to uint8 (ridges dark)."""
    cv2 = _cv2()
    g = grey.astype(np.float32)
    g = (g - g.mean()) / (g.std() + 1e-6)
    theta = orientation_field(grey)
    index = np.round(theta / np.pi * orientations).astype(int) % orientations
    out = np.zeros_like(g)
    size = int(2 * round(period) + 1)
    for i in range(orientations):
        where = index == i
        if not where.any():
            continue
        # getGaborKernel's theta is the normal to the stripes: across the ridges
        kernel = cv2.getGaborKernel((size, size), 0.5 * period, i * np.pi / orientations + np.pi / 2, period, 1.0, 0)
        kernel -= kernel.mean()
        out[where] = cv2.filter2D(g, cv2.CV_32F, kernel)[where]
    lo, hi = np.percentile(out, (1, 99))
    scaled = np.clip((out - lo) / max(hi - lo, 1e-6), 0, 1)
    return (scaled * 255).astype(np.uint8)


def crop_around(grey: np.ndarray, mask: np.ndarray, size: tuple[int, int], fill: int = 255) -> np.ndarray:
    """``grey`` cut (or padded with ``fill``) to ``size`` = (H, W) around the centre of ``mask``'s
    bounding box (the image's centre when the mask is empty)."""
    h, w = size
    ys, xs = np.nonzero(mask)
    if len(ys):
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    else:
        cy, cx = grey.shape[0] / 2, grey.shape[1] / 2
    top, left = round(cy - h / 2), round(cx - w / 2)
    out = np.full((h, w), fill, np.uint8)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(grey.shape[0], top + h), min(grey.shape[1], left + w)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = grey[y0:y1, x0:x1]
    return out


@IMAGE_PREPROCESSORS.register("fingerprint")
class FingerprintPreprocessor:
    """Resample to ``dpi``, CLAHE, segment the ridge region, optionally Gabor-enhance, cut to the
    model's input size around the ridge region.

    Args:
        dpi: the model's resolution; every image is resampled to it.
        source_dpi: the resolution of images that declare none (PNG files rarely do).
        clip: CLAHE clip limit; 0 turns CLAHE off.
        tile: CLAHE tile side in pixels at 500 dpi.
        segment: whiten everything outside the ridge region.
        threshold: segmentation threshold, a share of the 95th percentile of the local deviation.
        gabor: orientation-field-guided Gabor enhancement.

    Example::

        >>> import numpy as np
        >>> from PIL import Image
        >>> x = np.arange(300)[None, :] * np.ones((300, 1))
        >>> ridges = Image.fromarray((127 + 100 * np.sin(2 * np.pi * x / 9)).astype(np.uint8))
        >>> FingerprintPreprocessor(dpi=250).apply(ridges, (120, 100)).size
        (100, 120)
    """

    def __init__(self, dpi: float = 250.0, source_dpi: float = 500.0, clip: float = 2.0, tile: int = 32,
                 segment: bool = True, threshold: float = 0.3, gabor: bool = False) -> None:  # fmt: skip
        for name, value in (("dpi", dpi), ("source_dpi", source_dpi), ("tile", tile)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        if not 0 <= float(clip) <= 40:
            raise ValueError(f"clip must be in [0, 40], not {clip!r}")
        if not 0 < float(threshold) < 1:
            raise ValueError(f"threshold must be in (0, 1), not {threshold!r}")
        self.dpi, self.source_dpi, self.clip, self.tile = float(dpi), float(source_dpi), float(clip), int(tile)
        self.segment, self.threshold, self.gabor = bool(segment), float(threshold), bool(gabor)

    def scaled(self, pixels_at_500: float) -> int:
        return max(1, round(pixels_at_500 * self.dpi / 500.0))

    def process(self, grey: np.ndarray, dpi: float) -> tuple[np.ndarray, np.ndarray]:
        """``grey`` (uint8) at ``dpi`` → the enhanced image at the model's resolution and its mask."""
        grey = resample(grey, dpi, self.dpi)
        if self.clip > 0:
            grey = clahe(grey, self.clip, self.scaled(self.tile))
        mask = segment(grey, self.scaled(16), self.threshold) if self.segment else np.ones(grey.shape, bool)
        if self.gabor:
            grey = gabor_enhance(grey, RIDGE_PERIOD_500 * self.dpi / 500.0)
        if self.segment and mask.any():
            grey = np.where(mask, grey, 255).astype(np.uint8)
        return grey, mask

    def apply(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        """One image (any mode; its dpi from the file, else ``source_dpi``) → greyscale, ``size`` = (H, W)."""
        dpi = image_dpi(image, self.source_dpi)
        grey, mask = self.process(np.asarray(image.convert("L"), dtype=np.uint8), dpi)
        return Image.fromarray(crop_around(grey, mask, (int(size[0]), int(size[1]))))
