"""Anchors measured beside twinnet: OpenCV's trackers (CSRT, KCF) and the first box held still.

They share the tracker API (``init(frame, box)``, ``update(frame) → (box, score)``) and
:func:`run_tracker`, so one run measures all of them on the same frames with the same metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twinnet.errors import ConfigError
from twinnet.tracking.geometry import _cv2
from twinnet.tracking.onepass import SingleTracker


class StillBox:
    """The trivial baseline: the first box, held still in every frame."""

    name = "still"

    def init(self, frame: np.ndarray, box: np.ndarray) -> None:
        self.box = np.asarray(box, dtype=np.float64).copy()

    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        return self.box.copy(), 1.0


#: OpenCV's tracker constructors by name (the contrib build's CSRT and KCF).
OPENCV_TRACKERS = {"csrt": "TrackerCSRT_create", "kcf": "TrackerKCF_create"}


class OpenCVTracker:
    """An OpenCV tracker (``csrt`` or ``kcf``) on RGB frames; a lost target keeps the last box
    (score 0), so every frame has a box as OTB's one-pass evaluation expects."""

    def __init__(self, kind: str = "csrt") -> None:
        if kind not in OPENCV_TRACKERS:
            raise ConfigError(f"unknown OpenCV tracker {kind!r}; known: {', '.join(OPENCV_TRACKERS)}")
        cv2 = _cv2()
        factory: Any = getattr(cv2, OPENCV_TRACKERS[kind], None) or getattr(getattr(cv2, "legacy", None),
                                                                             OPENCV_TRACKERS[kind], None)  # fmt: skip
        if factory is None:
            raise ConfigError(f"this OpenCV ({cv2.__version__}) has no {kind.upper()} tracker: install "
                              "opencv-contrib-python-headless")  # fmt: skip
        self.name = kind
        self._factory = factory
        self._cv2 = cv2

    def _bgr(self, frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frame[:, :, ::-1])

    def init(self, frame: np.ndarray, box: np.ndarray) -> None:
        self.tracker = self._factory()
        self.box = np.asarray(box, dtype=np.float64).copy()
        # OpenCV takes whole pixels; round outwards so the target stays inside
        x0, y0 = np.floor(self.box[:2])
        x1, y1 = np.ceil(self.box[:2] + self.box[2:])
        self.tracker.init(self._bgr(frame), (int(x0), int(y0), max(1, int(x1 - x0)), max(1, int(y1 - y0))))

    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        ok, rect = self.tracker.update(self._bgr(frame))
        if ok:
            self.box = np.asarray(rect, dtype=np.float64)
        return self.box.copy(), 1.0 if ok else 0.0


def build_anchor(name: str) -> SingleTracker:
    """``still``, ``csrt`` or ``kcf``."""
    if name == "still":
        return StillBox()
    return OpenCVTracker(name)
