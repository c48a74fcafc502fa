"""Verification (1:1) on pairs: ROC AUC, EER, best accuracy, TAR@FAR, and the decisions at the
model's calibrated threshold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from twinnet.calibrate import NATIVE, Calibration, measure, scale_orientation
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs, balanced_pairs
from twinnet.data.sources import Dataset
from twinnet.embedding import embed_batches
from twinnet.errors import DataError
from twinnet.metrics import calc_verification_metrics
from twinnet.model import AnyTwin
from twinnet.normalize import normalizer_of
from twinnet.protocols.base import DecisionScores, EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.runtime import Stream


@torch.no_grad()
def score_pairs(
    model: AnyTwin, emb_a: torch.Tensor, emb_b: torch.Tensor, pairs: Pairs, batch_size: int = 65536
) -> np.ndarray:
    """Native comparator values for index ``pairs`` into two embedding tables (batched)."""
    comparator, device = model.comparator, model.device
    out = [torch.zeros(0)]
    for i in range(0, len(pairs), batch_size):
        a = emb_a[torch.from_numpy(pairs.a[i : i + batch_size])].to(device)
        b = emb_b[torch.from_numpy(pairs.b[i : i + batch_size])].to(device)
        out.append(comparator(a, b).float().cpu())
    return torch.cat(out).numpy()


def pair_values(
    model: AnyTwin, items: ItemSet, pairs: Pairs, embeddings: dict[str, torch.Tensor] | None = None
) -> np.ndarray:
    """Native comparator values of ``pairs``: ``pairs.a`` items through side a, ``pairs.b`` items
    through side b, each item embedded once per side (once in all for a twin)."""
    return pair_scores(model, items, pairs, embeddings)[0]


def pair_scores(
    model: AnyTwin, items: ItemSet, pairs: Pairs, embeddings: dict[str, torch.Tensor] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Native values of ``pairs`` (:func:`pair_values`) and, for a model that carries a cohort
    normaliser, their normalised scores (else None)."""
    emb_a = embeddings["a"] if embeddings else embed_batches(model, items, side="a")
    if embeddings and "b" in embeddings:
        emb_b = embeddings["b"]
    else:
        emb_b = embed_batches(model, items, side="b") if model.is_half_twin else emb_a
    native = score_pairs(model, emb_a, emb_b, pairs)
    normalizer = normalizer_of(model)
    if normalizer is None:
        return native, None
    a, b = emb_a[torch.from_numpy(pairs.a)].cpu().numpy(), emb_b[torch.from_numpy(pairs.b)].cpu().numpy()
    return native, normalizer.normalize(native, a, b)


def verification_metrics(
    model: AnyTwin, native: np.ndarray, same: np.ndarray, far_targets: Sequence[float] = (1e-1, 1e-2, 1e-3)
) -> dict[str, float]:
    """ROC AUC, EER, best accuracy and TAR@FAR of native values, thresholds in the native scale."""
    orientation = model.comparator.orientation
    metrics = calc_verification_metrics(orientation.to_similarity(native), same, far_targets)
    return {k: (float(orientation.from_similarity(v)) if k.endswith("_threshold") else v) for k, v in metrics.items()}


def calibrated_decisions(
    calibration: Calibration, native: np.ndarray, same: np.ndarray, operating_point: str | None = None,
    normalized: np.ndarray | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Accuracy, FAR and FRR (with 95% Clopper–Pearson intervals) of the calibration's decisions on
    these pairs, at ``operating_point``; by default at the calibration's point for pairs (the
    default, unless that was fitted with another protocol). The threshold comes from the
    calibration alone, never from these pairs. A point fitted on normalised scores decides on
    ``normalized`` (the model's cohort-normalised scores of these pairs)."""
    if operating_point is None:
        found = calibration.find(VerificationProtocol.name)
        operating_point = found[0] if found is not None else None
    name = calibration.resolve(operating_point)
    point = calibration.points[name]
    values = native if point.scale == NATIVE else normalized
    if values is None:
        return {"operating_point": name, "target": point.target, "scale": point.scale,
                "note": f"fitted on {point.scale}-normalised scores; this model has no such normaliser"}  # fmt: skip
    orientation = scale_orientation(calibration.orientation, point.scale)
    return {"operating_point": name, "target": point.target, "scale": point.scale,
            **measure(values, same, orientation, point.threshold)}  # fmt: skip


def evaluate_verification(
    model: AnyTwin,
    items: ItemSet,
    pairs: Pairs | None = None,
    *,
    n_pairs: int = 2000,
    seed: int = 0,
    calibration: Calibration | None = None,
    far_targets: Sequence[float] = (1e-1, 1e-2, 1e-3),
    embeddings: torch.Tensor | None = None,
) -> tuple[ProtocolResult, np.ndarray, np.ndarray]:
    """Verify ``pairs`` (default: ``n_pairs`` balanced pairs drawn with ``seed``).

    Returns the result and the native values and ``same`` flags of the pairs (for calibration).
    With a ``calibration`` the result's ``details["calibrated"]`` holds accuracy, FAR and FRR at its
    default threshold.
    """
    protocol = VerificationProtocol(n_pairs=n_pairs, seed=seed, far_targets=far_targets)
    return protocol.run(model, Dataset(items, pairs), calibration, embeddings)


@register_protocol("verification")
class VerificationProtocol(EvaluationProtocol):
    """Pairs of the data (a pairs file), or ``n_pairs`` balanced same/different pairs drawn with
    ``seed`` from labelled items; primary metric ROC AUC."""

    primary_metric = "roc_auc"
    greater_is_better = True
    needs = "labels_or_pairs"
    summary = "ROC AUC, EER, TAR@FAR on pairs, and accuracy at the calibrated threshold"

    def __init__(self, n_pairs: int = 4000, seed: int = 0, far_targets: Sequence[float] = (1e-1, 1e-2, 1e-3)) -> None:
        if n_pairs < 2:
            raise ValueError(f"n_pairs must be at least 2, not {n_pairs}")
        self.n_pairs, self.seed, self.far_targets = n_pairs, seed, tuple(far_targets)

    def pairs_of(self, data: Dataset) -> Pairs:
        if data.pairs is not None:
            return data.pairs
        data.items.require_min_per_class(2, "same-class pairs")
        return balanced_pairs(data.items.labels, self.n_pairs, self.seed, Stream.EVAL_PAIRS)

    def run(
        self, model: AnyTwin, data: Dataset, calibration: Calibration | None = None,
        embeddings: torch.Tensor | None = None,
    ) -> tuple[ProtocolResult, np.ndarray, np.ndarray]:  # fmt: skip
        pairs = self.pairs_of(data)
        if len(pairs) and (pairs.same.all() or not pairs.same.any()):
            raise DataError(f"{data.source or 'these pairs'}: verification needs both same and different pairs")
        native, normalized = pair_scores(model, data.items, pairs, None if embeddings is None else {"a": embeddings})
        details: dict[str, Any] = {}
        if calibration is not None and calibration.points:
            details["calibrated"] = calibrated_decisions(calibration, native, pairs.same, normalized=normalized)
        metrics = {"n_pairs": len(pairs), **verification_metrics(model, native, pairs.same, self.far_targets)}
        return self.result(metrics, **details), native, pairs.same

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        return self.run(model, data, model.calibration)[0]

    def decision_scores(self, model: AnyTwin, data: Dataset) -> DecisionScores:
        """The pairs of the data (a pairs file), or ``n_pairs`` balanced pairs drawn with ``seed``;
        for a model with a cohort normaliser, their normalised scores (settings ``normalization`` and
        ``cohort``, the scale the normaliser's). Pairs drawn from labelled items are grouped by
        the identity of their first item (for intervals that resample identities)."""
        pairs = self.pairs_of(data)
        native, normalized = pair_scores(model, data.items, pairs)
        used = np.unique(np.r_[pairs.a, pairs.b])
        settings: dict[str, Any] = {"pairs": "given"} if data.pairs is not None else \
            {"pairs": "balanced", "n_pairs": self.n_pairs, "seed": self.seed}  # fmt: skip
        groups = None if data.pairs is not None else np.asarray(data.items.labels)[pairs.a]
        normalizer = normalizer_of(model)
        if normalizer is None or normalized is None:
            return DecisionScores(native, np.asarray(pairs.same, bool), len(np.unique(data.items.labels[used])),
                                  settings, NATIVE, groups)  # fmt: skip
        settings.update(normalization=normalizer.kind, cohort=normalizer.fingerprint)
        return DecisionScores(normalized, np.asarray(pairs.same, bool), len(np.unique(data.items.labels[used])),
                              settings, normalizer.scale, groups, {NATIVE: native})  # fmt: skip
