"""One-pass evaluation (OTB OPE) figures, as pure functions of predicted and ground-truth boxes.

Boxes are ``(N, 4)`` arrays ``x, y, w, h``; frames whose ground truth is NaN (target absent) are
left out of every figure. The success curve is the share of frames whose overlap (IoU) exceeds
each threshold τ ∈ {0, 0.05, …, 1}; its AUC is the curve's mean (OTB's definition). Precision is
the share of frames whose centre error is at most 20 pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: OTB's overlap thresholds: 0, 0.05, …, 1.
SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
#: OTB's centre-error threshold for the reported precision, in pixels.
PRECISION_PIXELS = 20.0


def calc_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Intersection over union of row pairs of boxes (continuous areas ``w·h``)."""
    p = np.atleast_2d(np.asarray(pred, dtype=np.float64))
    g = np.atleast_2d(np.asarray(gt, dtype=np.float64))
    x0 = np.maximum(p[:, 0], g[:, 0])
    y0 = np.maximum(p[:, 1], g[:, 1])
    x1 = np.minimum(p[:, 0] + p[:, 2], g[:, 0] + g[:, 2])
    y1 = np.minimum(p[:, 1] + p[:, 3], g[:, 1] + g[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = p[:, 2] * p[:, 3] + g[:, 2] * g[:, 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def calc_center_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distance between the boxes' centres, in pixels."""
    p = np.atleast_2d(np.asarray(pred, dtype=np.float64))
    g = np.atleast_2d(np.asarray(gt, dtype=np.float64))
    pc = p[:, :2] + p[:, 2:] / 2
    gc = g[:, :2] + g[:, 2:] / 2
    return np.sqrt(((pc - gc) ** 2).sum(1))


def valid_frames(gt: np.ndarray) -> np.ndarray:
    """Frames with ground truth (no NaN)."""
    return np.asarray(~np.isnan(np.asarray(gt, dtype=np.float64)).any(axis=1))


def calc_success_curve(ious: np.ndarray, thresholds: np.ndarray = SUCCESS_THRESHOLDS) -> np.ndarray:
    """The share of frames with IoU strictly above each threshold."""
    ious = np.asarray(ious, dtype=np.float64)
    if len(ious) == 0:
        return np.zeros(len(thresholds))
    return (ious[None, :] > np.asarray(thresholds)[:, None]).mean(axis=1)


def calc_success_auc(ious: np.ndarray, thresholds: np.ndarray = SUCCESS_THRESHOLDS) -> float:
    """The area under the success curve: its mean over the thresholds."""
    return float(calc_success_curve(ious, thresholds).mean())


def calc_precision(errors: np.ndarray, pixels: float = PRECISION_PIXELS) -> float:
    """The share of frames whose centre error is at most ``pixels``."""
    errors = np.asarray(errors, dtype=np.float64)
    return float((errors <= pixels).mean()) if len(errors) else 0.0


def sequence_figures(pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """Success AUC, precision at 20 px, the success curve and the frames counted, for one sequence."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"{len(pred)} predicted boxes for {len(gt)} ground-truth boxes")
    keep = valid_frames(gt)
    ious = calc_iou(pred[keep], gt[keep]) if keep.any() else np.zeros(0)
    errors = calc_center_error(pred[keep], gt[keep]) if keep.any() else np.zeros(0)
    # a prediction of NaN (a tracker that lost the target) overlaps nothing and is infinitely far
    ious = np.nan_to_num(ious, nan=0.0)
    errors = np.nan_to_num(errors, nan=np.inf)
    return {
        "success_auc": calc_success_auc(ious),
        "precision_20": calc_precision(errors),
        "mean_iou": float(ious.mean()) if len(ious) else 0.0,
        "frames": int(keep.sum()),
        "success_curve": [round(float(v), 6) for v in calc_success_curve(ious)],
    }


def mean_figures(per_sequence: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Overall figures: the mean over sequences (each sequence counts once, as OTB's plots do)."""
    if not per_sequence:
        return {"success_auc": 0.0, "precision_20": 0.0}
    rows = list(per_sequence.values())
    out = {k: float(np.mean([r[k] for r in rows])) for k in ("success_auc", "precision_20")}
    frames = sum(r["frames"] for r in rows)
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    if seconds > 0:
        out["fps"] = float(sum(r.get("tracked_frames", r["frames"]) for r in rows) / seconds)
    out["frames"] = float(frames)
    return out
