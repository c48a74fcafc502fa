"""Decision thresholds chosen on validation data and carried inside a saved model.

A :class:`Calibration` stores thresholds in the comparator's *native* scale (a distance, or a
probability of "same") together with the direction of the decision, so applying it needs no
knowledge of how scores were oriented during calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from twinnet.metrics import (
    ArrayLike,
    _np,
    calc_accuracy,
    calc_best_accuracy,
    calc_far_frr,
    calc_tar_at_far,
)


@dataclass(frozen=True)
class Threshold:
    """A threshold on similarity scores (``score >= value`` means same) and what it achieved."""

    value: float
    criterion: str
    """``best_accuracy`` or ``far`` (the highest TAR with FAR at most ``target_far``)."""
    target_far: float | None
    accuracy: float
    far: float
    frr: float


def calibrate_threshold(scores: ArrayLike, same: ArrayLike, far: float | None = None) -> Threshold:
    """Choose a threshold on similarity ``scores`` (larger = more alike) for ``same`` (bool).

    With ``far=None`` the threshold maximises accuracy; with ``far=1e-3`` it is the most lenient
    one whose false-accept rate on these pairs is at most 1e-3.
    """
    if far is None:
        _, value = calc_best_accuracy(scores, same)
        criterion = "best_accuracy"
    else:
        _, value = calc_tar_at_far(scores, same, far)
        criterion = "far"
    measured_far, frr = calc_far_frr(scores, same, value)
    return Threshold(value, criterion, far, calc_accuracy(scores, same, value), measured_far, frr)


@dataclass
class Calibration:
    """Thresholds for a model's decisions, keyed by name (``best_accuracy``, ``far=0.001``, …)."""

    is_distance: bool
    """Native values are distances (decide same when ``distance <= threshold``)."""
    thresholds: dict[str, Threshold]
    default: str = "best_accuracy"
    n_pairs: int = 0
    source: str = "validation"
    extra: dict[str, Any] = field(default_factory=dict)

    def native_threshold(self, name: str | None = None) -> float:
        t = self.thresholds[name or self.default].value
        return -t if self.is_distance else t

    def decide(self, native: ArrayLike, name: str | None = None) -> np.ndarray:
        """Boolean "same" decisions for native comparator values."""
        v = _np(native).astype(np.float64)
        t = self.native_threshold(name)
        return v <= t if self.is_distance else v >= t

    @property
    def rule(self) -> str:
        return "same if distance <= threshold" if self.is_distance else "same if score >= threshold"

    def to_json(self) -> dict[str, Any]:
        return {
            "is_distance": self.is_distance,
            "rule": self.rule,
            "default": self.default,
            "n_pairs": self.n_pairs,
            "source": self.source,
            "thresholds": {
                k: {**asdict(t), "native_value": (-t.value if self.is_distance else t.value)}
                for k, t in self.thresholds.items()
            },
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        thresholds = {}
        for k, t in data["thresholds"].items():
            t = {key: value for key, value in t.items() if key != "native_value"}
            thresholds[k] = Threshold(**t)
        return cls(
            is_distance=bool(data["is_distance"]),
            thresholds=thresholds,
            default=data.get("default", "best_accuracy"),
            n_pairs=int(data.get("n_pairs", 0)),
            source=data.get("source", "validation"),
            extra=data.get("extra", {}),
        )


def calibrate(
    native: ArrayLike,
    same: ArrayLike,
    is_distance: bool,
    far_targets: Sequence[float] = (1e-2, 1e-3),
    source: str = "validation",
) -> Calibration:
    """Calibrate thresholds at the best-accuracy point and at each target FAR."""
    v = _np(native).astype(np.float64)
    scores = -v if is_distance else v
    thresholds = {"best_accuracy": calibrate_threshold(scores, same)}
    for far in far_targets:
        thresholds[f"far={far:g}"] = calibrate_threshold(scores, same, far=far)
    return Calibration(is_distance, thresholds, "best_accuracy", len(v), source)
