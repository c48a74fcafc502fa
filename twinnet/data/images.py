"""Reading image files into tensors with Pillow (no torchvision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from twinnet.config import InputSpec
from twinnet.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})

# Decompression-bomb guard for files users hand in; the service sets its own, stricter limit.
Image.MAX_IMAGE_PIXELS = 200_000_000


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def decode_image(image: Image.Image, spec: InputSpec) -> torch.Tensor:
    """A Pillow image → ``uint8`` tensor ``(C, H, W)`` at ``spec.size`` with ``spec.channels``."""
    mode = "L" if spec.channels == 1 else "RGB"
    if image.mode in ("1", "P", "LA", "RGBA", "I;16", "I", "F") or image.mode != mode:
        image = image.convert(mode)
    h, w = spec.size
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    array = np.array(image, dtype=np.uint8)  # a writable copy
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    if spec.invert:
        array = 255 - array
    return torch.from_numpy(np.ascontiguousarray(array))


def load_image(path: str | Path, spec: InputSpec) -> torch.Tensor:
    """Read one image file; any failure (missing, not an image, truncated) names the file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            return decode_image(image, spec)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from None


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """``uint8`` in [0, 255] → ``float32`` in [0, 1]; float input is returned as float32."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(255.0)
    return batch.float()
