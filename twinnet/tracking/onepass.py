"""One-pass evaluation's loop (OTB OPE): any single-object tracker, from a first box to the end.

The loop lives here, below both the SiamFC tracker and the anchors (OpenCV trackers, the still box),
so each of them is run, timed and reported the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from twinnet.tracking.sequences import Sequence


class SingleTracker(Protocol):
    """What one-pass evaluation needs of a tracker."""

    def init(self, frame: np.ndarray, box: np.ndarray) -> None: ...

    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]: ...


@dataclass
class TrackResult:
    """Boxes (0-based ``x, y, w, h``) and scores per frame, and the time spent tracking the frames
    after the first (reading frames from disk is not counted): wall-clock ``seconds``, and the
    process's ``cpu_seconds`` (all its threads), which other programs on the machine do not inflate."""

    boxes: np.ndarray
    scores: np.ndarray
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def fps(self) -> float:
        """Frames per wall-clock second (a lower bound when the machine is shared)."""
        return (len(self.boxes) - 1) / self.seconds if self.seconds > 0 else 0.0

    @property
    def frames_per_cpu_second(self) -> float:
        """Frames per second of CPU time: the rate on one otherwise idle core, about."""
        return (len(self.boxes) - 1) / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


def run_tracker(tracker: SingleTracker, sequence: Sequence, box: np.ndarray | None = None, *,
                max_frames: int | None = None) -> TrackResult:  # fmt: skip
    """One pass of any tracker over ``sequence`` from ``box`` (default: the first ground-truth box);
    the seconds count ``update`` calls only (not reading frames)."""
    start = sequence.first_box() if box is None else np.asarray(box, dtype=np.float64)
    n = len(sequence) if max_frames is None else min(len(sequence), max_frames)
    boxes, scores = np.zeros((n, 4)), np.zeros(n)
    tracker.init(sequence.frame(0), start)
    boxes[0], scores[0] = start, 1.0
    seconds = cpu = 0.0
    for i in range(1, n):
        frame = sequence.frame(i)
        t0, c0 = time.perf_counter(), time.process_time()
        boxes[i], scores[i] = tracker.update(frame)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return TrackResult(boxes, scores, seconds, cpu)
