"""VOT-style evaluation with resets (Kristan et al., VOT 2015-2018's supervised experiment).

The tracker starts from the first ground-truth box; on a *failure* (a frame where its box and the
ground truth do not overlap at all, IoU = 0) it is stopped, and re-initialised from the ground truth
``skip`` frames later (5 in VOT; the frames between are skipped). Frames whose ground truth is
missing (the target is absent) are tracked but can neither fail nor count toward accuracy; a
re-initialisation waits for the next frame with ground truth.

The figures (:func:`reset_figures`), pure functions of the boxes, the frame states and the ground truth:

- ``accuracy``: the mean IoU over the frames tracked without failing, leaving out each
  (re-)initialisation frame and the frames right after it, ``burn_in`` frames in all counted from
  the initialisation frame (VOT's burn-in of 10: the init frame and the 9 after it), since a tracker
  just given the true box overlaps it well for a while whatever it is worth;
- ``robustness``: failures per 100 frames of the sequence (``100 · failures / frames``);
- ``failures``, ``frames`` and ``accuracy_frames`` (the frames the accuracy averages).

Over several sequences (:func:`mean_reset_figures`), accuracy is the mean of the sequences' (each
counts once, as for the one-pass figures) and robustness is pooled: ``100 · Σ failures / Σ frames``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinnet.errors import DataError
from twinnet.tracking.metrics import calc_iou, valid_frames
from twinnet.tracking.onepass import SingleTracker
from twinnet.tracking.sequences import Sequence

#: Frame states of a reset run: not run (waiting to re-initialise, or before a box was known),
#: (re-)initialised from the ground truth, tracked, failed (IoU 0 with the ground truth).
SKIPPED, INIT, TRACKED, FAILED = 0, 1, 2, 3
#: VOT's gap between a failure and the re-initialisation, in frames.
VOT_SKIP = 5
#: VOT's burn-in: frames left out of the accuracy from each initialisation frame on (it included).
VOT_BURN_IN = 10


@dataclass
class ResetResult:
    """Per frame: the ``state`` (:data:`SKIPPED`, :data:`INIT`, :data:`TRACKED`, :data:`FAILED`) and the
    ``box`` (the tracker's where it ran, the ground truth where it was initialised, NaN where
    skipped); the wall-clock and CPU seconds spent in ``update``."""

    boxes: np.ndarray
    states: np.ndarray
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def failures(self) -> int:
        return int((self.states == FAILED).sum())

    @property
    def fps(self) -> float:
        tracked = int(np.isin(self.states, (TRACKED, FAILED)).sum())
        return tracked / self.seconds if self.seconds > 0 else 0.0


def _check(skip: int, burn_in: int) -> None:
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 1:
        raise ValueError(f"skip must be a whole number of frames, at least 1, not {skip!r}")
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
        raise ValueError(f"burn_in must be a whole number of frames, at least 0, not {burn_in!r}")


def run_reset(tracker: SingleTracker, sequence: Sequence, *, skip: int = VOT_SKIP,
              max_frames: int | None = None) -> ResetResult:  # fmt: skip
    """Run ``tracker`` over ``sequence`` with re-initialisation ``skip`` frames after each failure."""
    _check(skip, 0)
    if sequence.boxes is None:
        raise DataError(f"{sequence.source or sequence.name}: the reset evaluation needs ground truth")
    n = len(sequence) if max_frames is None else min(len(sequence), max_frames)
    gt = np.asarray(sequence.boxes[:n], dtype=np.float64)
    present = valid_frames(gt)
    boxes = np.full((n, 4), np.nan)
    states = np.full(n, SKIPPED, np.int8)
    running, resume = False, 0
    seconds = cpu = 0.0
    for i in range(n):
        if i < resume:
            continue
        if not running:
            if present[i]:
                tracker.init(sequence.frame(i), gt[i])
                boxes[i], states[i], running = gt[i], INIT, True
            continue
        frame = sequence.frame(i)
        t0, c0 = time.perf_counter(), time.process_time()
        box, _ = tracker.update(frame)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        boxes[i] = box
        if present[i] and not calc_iou(box, gt[i])[0] > 0:
            states[i], running, resume = FAILED, False, i + skip
        else:
            states[i] = TRACKED
    return ResetResult(boxes, states, seconds, cpu)


def reset_figures(boxes: np.ndarray, states: np.ndarray, gt: np.ndarray, burn_in: int = VOT_BURN_IN) -> dict[str, Any]:
    """Accuracy, robustness (failures per 100 frames), failures, frames and the frames the accuracy
    averages, for one sequence's reset run (see the module's docstring)."""
    _check(1, burn_in)
    boxes = np.asarray(boxes, dtype=np.float64)
    states = np.asarray(states)
    gt = np.asarray(gt, dtype=np.float64)
    if not len(boxes) == len(states) == len(gt):
        raise ValueError(f"{len(boxes)} boxes, {len(states)} states and {len(gt)} ground-truth boxes")
    n = len(states)
    # per frame, the last (re-)initialisation at or before it (-inf before the first)
    frames = np.arange(n)
    last_init = np.maximum.accumulate(np.where(states == INIT, frames, -(10**9))) if n else frames
    counted = (states == TRACKED) & valid_frames(gt) & (frames - last_init >= burn_in)
    ious = np.nan_to_num(calc_iou(boxes[counted], gt[counted]), nan=0.0) if counted.any() else np.zeros(0)
    failures = int((states == FAILED).sum())
    return {
        "accuracy": float(ious.mean()) if len(ious) else 0.0,
        "robustness": 100.0 * failures / n if n else 0.0,
        "failures": failures,
        "frames": n,
        "accuracy_frames": int(counted.sum()),
    }


def mean_reset_figures(per_sequence: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy: the mean over the sequences that have frames to average; robustness: pooled,
    ``100 · Σ failures / Σ frames``; failures: the total."""
    rated = [r["accuracy"] for r in per_sequence if r["accuracy_frames"] > 0]
    frames = sum(r["frames"] for r in per_sequence)
    failures = sum(r["failures"] for r in per_sequence)
    return {
        "accuracy": float(np.mean(rated)) if rated else 0.0,
        "robustness": 100.0 * failures / frames if frames else 0.0,
        "failures": float(failures),
    }
