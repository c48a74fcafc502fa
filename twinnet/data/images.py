"""Reading image files into tensors with Pillow (no torchvision)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from twinnet.config import InputSpec
from twinnet.errors import ConfigError, DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})

# Pillow's own decompression-bomb guard (it refuses only above twice this); the tighter limit
# below is checked on the header's size before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = 200_000_000

#: The largest image (width × height) read, as the service's default (``--max-megapixels 40``): a
#: 1 MB PNG can declare 20000×20000 pixels and decode to gigabytes of memory.
DEFAULT_MAX_PIXELS = 40_000_000
#: The environment variable that sets another limit (a whole number of pixels).
MAX_PIXELS_ENV = "TWINNET_MAX_PIXELS"
#: The limit in this process, when set (e.g. by the service from its settings); ``None``: the
#: environment variable, else :data:`DEFAULT_MAX_PIXELS`.
MAX_PIXELS: int | None = None


def max_pixels() -> int:
    """The pixel limit in force: :data:`MAX_PIXELS`, else ``$TWINNET_MAX_PIXELS``, else 40 megapixels."""
    if MAX_PIXELS is not None:
        return MAX_PIXELS
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(raw.replace("_", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"${MAX_PIXELS_ENV}: {raw!r} is not a positive whole number of pixels")
    return limit


def check_image_size(image: Image.Image, name: str | Path = "image", limit: int | None = None) -> None:
    """A :class:`DataError` naming ``name`` when ``image`` (opened, not yet decoded: its header gives
    the size) has more pixels than ``limit`` (default :func:`max_pixels`)."""
    limit = max_pixels() if limit is None else limit
    w, h = image.size
    if w * h > limit:
        raise DataError(
            f"{name}: {w}×{h} pixels ({w * h / 1e6:.1f} megapixels) is over the limit of {limit / 1e6:g} "
            f"megapixels (set ${MAX_PIXELS_ENV} to read larger images)"
        )


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def decode_image(image: Image.Image, spec: InputSpec, name: str | Path = "image") -> torch.Tensor:
    """A Pillow image → ``uint8`` tensor ``(C, H, W)`` at ``spec.size`` with ``spec.channels``.

    An image over the pixel limit (:func:`max_pixels`) is refused before it is decoded (when it has
    not been loaded yet), with a :class:`DataError` naming ``name``."""
    check_image_size(image, name)
    if spec.face_crop:
        from twinnet.data.faces import crop_to_face

        image = crop_to_face(image, spec.face_margin, name)
    for step in spec.preprocess:
        image = preprocessor(step.name, step.params).apply(image, spec.size)
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


def preprocessor(name: str, params: dict[str, Any]) -> Any:
    """The registered image preprocessing step ``name`` with ``params`` (``model.input.preprocess``)."""
    from twinnet.registry import IMAGE_PREPROCESSORS

    return IMAGE_PREPROCESSORS.build(name, params, field=f"model.input.preprocess ({name!r})")


def load_image(path: str | Path, spec: InputSpec) -> torch.Tensor:
    """Read one image file; any failure (missing, not an image, truncated) names the file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            check_image_size(image, path)  # from the header, before the pixels take memory
            image.load()  # decode now, so a truncated file fails here and not later
            return decode_image(image, spec, path)
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
