"""Decision thresholds chosen on validation data and carried inside a saved model.

A :class:`Calibration` keeps every threshold in one scale, the comparator's *native* one (a
distance, or a probability of "same"), together with the comparator's :class:`Orientation`, so
applying it needs nothing else: ``calibration.decide(values)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from twinnet.compare import Orientation
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
    """A decision threshold in the comparator's native scale, and what it achieved."""

    value: float
    criterion: str
    """``best_accuracy`` or ``far`` (the highest TAR with FAR at most ``target_far``)."""
    target_far: float | None
    accuracy: float
    far: float
    frr: float


def calibrate_threshold(
    native: ArrayLike, same: ArrayLike, orientation: Orientation, far: float | None = None
) -> Threshold:
    """Choose a threshold on native values for ``same`` (bool).

    With ``far=None`` the threshold maximises accuracy; with ``far=1e-3`` it is the most lenient
    one whose false-accept rate on these pairs is at most 1e-3.
    """
    scores = orientation.to_similarity(_np(native).astype(np.float64))
    if far is None:
        _, value = calc_best_accuracy(scores, same)
        criterion = "best_accuracy"
    else:
        _, value = calc_tar_at_far(scores, same, far)
        criterion = "far"
    measured_far, frr = calc_far_frr(scores, same, value)
    return Threshold(
        float(orientation.from_similarity(value)), criterion, far, calc_accuracy(scores, same, value), measured_far, frr
    )


@dataclass
class Calibration:
    """Thresholds for a model's decisions, keyed by name (``best_accuracy``, ``far=0.001``, …)."""

    orientation: Orientation
    thresholds: dict[str, Threshold]
    default: str = "best_accuracy"
    n_pairs: int = 0
    source: str = "validation"
    extra: dict[str, Any] = field(default_factory=dict)
    """Protocol-specific thresholds (e.g. ``signature``: the protocol's EER threshold), keyed by the
    calibration hook that made them."""

    def native_threshold(self, name: str | None = None) -> float:
        return self.thresholds[name or self.default].value

    def decide(self, native: ArrayLike, name: str | None = None) -> np.ndarray:
        """Boolean "same" decisions for native comparator values."""
        return np.asarray(self.orientation.matches(_np(native).astype(np.float64), self.native_threshold(name)))

    @property
    def rule(self) -> str:
        return self.orientation.rule

    def to_json(self) -> dict[str, Any]:
        return {
            "orientation": self.orientation.to_json(),
            "rule": self.rule,
            "default": self.default,
            "n_pairs": self.n_pairs,
            "source": self.source,
            "thresholds": {k: asdict(t) for k, t in self.thresholds.items()},
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        if "orientation" in data:
            orientation = Orientation.from_json(data["orientation"])
            legacy = False
        else:  # format of twinnet ≤ 0.x: thresholds on similarities, with their native value beside
            orientation = Orientation.from_json("distance" if data["is_distance"] else "score")
            legacy = True
        thresholds = {}
        for k, t in data["thresholds"].items():
            t = dict(t)
            native = t.pop("native_value", None)
            if legacy and native is not None:
                t["value"] = native
            thresholds[k] = Threshold(**t)
        return cls(
            orientation=orientation,
            thresholds=thresholds,
            default=data.get("default", "best_accuracy"),
            n_pairs=int(data.get("n_pairs", 0)),
            source=data.get("source", "validation"),
            extra=data.get("extra", {}),
        )


def calibrate(
    native: ArrayLike,
    same: ArrayLike,
    orientation: Orientation,
    far_targets: Sequence[float] = (1e-2, 1e-3),
    source: str = "validation",
) -> Calibration:
    """Calibrate thresholds at the best-accuracy point and at each target FAR."""
    v = _np(native).astype(np.float64)
    thresholds = {"best_accuracy": calibrate_threshold(v, same, orientation)}
    for far in far_targets:
        thresholds[f"far={far:g}"] = calibrate_threshold(v, same, orientation, far=far)
    return Calibration(orientation, thresholds, "best_accuracy", len(v), source)
