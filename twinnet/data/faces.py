"""Face crops with OpenCV's bundled Haar cascade (``model.input.face_crop``).

Every image the model reads (training, evaluation, galleries, the service) goes through
:func:`crop_to_face` when its input spec says ``face_crop: true``: the largest frontal face found is
cut out, enlarged by ``face_margin`` of its size on every side and made square (clipped to the
image). An image that is already a face crop (LFW's 150×150 centre crops) is cut only to the face
box, so every face fills the frame the same way. An image where no face is found is kept whole and
reported: :func:`collect_misses` gathers their names while a data set is read, and readers log one
warning naming them (``data.skip_bad_images`` does not drop them: a missed detection is not a bad
file).

Needs the ``vision`` extra (``pip install 'twinnet[vision]'``, opencv-contrib-python-headless < 5:
OpenCV 5 no longer ships the cascades).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from twinnet.errors import ConfigError

CASCADE = "haarcascade_frontalface_default.xml"
#: Faces are searched on a copy at most this many pixels on its longer side (fast on large photos).
DETECT_SIZE = 320

_local = threading.local()  # a CascadeClassifier is not safe to share between threads
_misses: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("face_misses", default=None)


def _cascade() -> Any:
    detector = getattr(_local, "detector", None)
    if detector is None:
        try:
            import cv2
        except ImportError:
            raise ConfigError("model.input.face_crop needs OpenCV: pip install 'twinnet[vision]' "
                              "(opencv-contrib-python-headless<5)") from None  # fmt: skip
        path = Path(cv2.data.haarcascades) / CASCADE  # type: ignore[attr-defined]
        detector = cv2.CascadeClassifier(str(path))
        if not path.is_file() or detector.empty():
            raise ConfigError(f"model.input.face_crop: OpenCV's face cascade {path} is missing (OpenCV 5 no longer "
                              "ships it: pip install 'opencv-contrib-python-headless<5')")  # fmt: skip
        _local.detector = detector
    return detector


def detect_face(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The largest frontal face in ``image`` as ``(x, y, w, h)`` in its pixels, or ``None``."""
    grey = image.convert("L")
    scale = min(1.0, DETECT_SIZE / max(grey.size))
    if scale < 1.0:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BILINEAR)  # fmt: skip
    array = np.asarray(grey, dtype=np.uint8)
    min_side = max(20, min(array.shape) // 8)
    found = _cascade().detectMultiScale(array, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(found) == 0:
        return None
    x, y, w, h = max((tuple(int(v) for v in box) for box in found), key=lambda b: b[2] * b[3])
    return round(x / scale), round(y / scale), round(w / scale), round(h / scale)


def crop_to_face(image: Image.Image, margin: float = 0.1, name: str | Path = "image") -> Image.Image:
    """``image`` cut to its largest face (enlarged by ``margin`` of the face's size on each side,
    square, clipped to the image); the whole image, recorded as a miss, when no face is found."""
    box = detect_face(image)
    if box is None:
        misses = _misses.get()
        if misses is not None:
            misses.append(str(name))
        return image
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(image.width, round(cx + side / 2)), min(image.height, round(cy + side / 2))
    if (left, top, right, bottom) == (0, 0, image.width, image.height):
        return image
    return image.crop((left, top, right, bottom))


@contextlib.contextmanager
def collect_misses() -> Iterator[list[str]]:
    """Within the block, the names of images where :func:`crop_to_face` found no face."""
    misses: list[str] = []
    token = _misses.set(misses)
    try:
        yield misses
    finally:
        _misses.reset(token)


def miss_report(misses: list[str], total: int, shown: int = 5) -> str:
    """One line: how many of ``total`` images had no face found, and the first few names."""
    names = ", ".join(misses[:shown]) + (f" and {len(misses) - shown} more" if len(misses) > shown else "")
    return (f"no face found in {len(misses)} of {total} images (kept whole, not cropped): {names}")  # fmt: skip
