"""Writer-independent signature verification (``twinnet evaluate --protocol signature``).

For each test writer, ``references`` genuine signatures (drawn with a seed) are that writer's
references; every other genuine signature and every skilled forgery of that writer is compared
with them: the nearest reference (``min``; the most similar, whatever the comparator's
orientation) or the ``mean`` value. Reported: EER pooled over writers and the mean of per-writer
EERs, ROC AUC, and FAR/FRR at the threshold calibrated the same way on validation writers (stored
in the model by training, for the same ``references`` and ``aggregate``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from twinnet.data.items import ItemSet
from twinnet.data.sources import Dataset
from twinnet.embedding import embed_batches
from twinnet.errors import DataError
from twinnet.metrics import calc_best_accuracy, calc_eer, calc_far_frr, calc_roc_auc
from twinnet.model import AnyTwin
from twinnet.protocols.base import EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.runtime import Stream, numpy_rng

Aggregate = Literal["min", "mean"]


def signature_scores(
    model: AnyTwin, items: ItemSet, references: int = 5, aggregate: Aggregate = "min", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Native values, genuine flags and writer ids of every questioned (non-reference) signature."""
    if "writer" not in items.attributes or "genuine" not in items.attributes:
        raise DataError("signature evaluation needs items with writer and genuine attributes (a signature reader)")
    writers, genuine = items.attributes["writer"], items.attributes["genuine"]
    emb = embed_batches(model, items)
    comparator, orientation = model.comparator, model.comparator.orientation
    rng = numpy_rng(seed, Stream.SIGNATURE_REFERENCES)
    values: list[float] = []
    flags: list[bool] = []
    owner: list[int] = []
    with torch.no_grad():
        for w in np.unique(writers):
            mine = np.nonzero(writers == w)[0]
            real, fakes = mine[genuine[mine]], mine[~genuine[mine]]
            if len(real) <= references:
                continue  # not enough genuine signatures for references and questioned ones
            chosen = rng.permutation(real)
            refs, questioned = chosen[:references], np.r_[chosen[references:], fakes]
            matrix = comparator.pairwise(emb[questioned].to(model.device), emb[refs].to(model.device)).float().cpu()
            per_question = orientation.best(matrix, 1) if aggregate == "min" else matrix.mean(1)
            values += per_question.tolist()
            flags += genuine[questioned].tolist()
            owner += [int(w)] * len(questioned)
    if not values:
        raise DataError(f"no writer has more than {references} genuine signatures")
    return np.asarray(values), np.asarray(flags, bool), np.asarray(owner)


@register_protocol("signature")
class SignatureProtocol(EvaluationProtocol):
    """Writer-independent verification of the writers in the data (all of them test writers: point
    it at writers the model never saw). Primary metric the pooled EER (smaller is better)."""

    primary_metric = "eer"
    greater_is_better = False
    summary = "writer-independent signature verification: EER, per-writer EER (--references, --aggregate)"

    def __init__(self, references: int = 5, aggregate: Aggregate = "min", seed: int = 0,
                 pairs_file: str | None = None) -> None:  # fmt: skip
        if aggregate not in ("min", "mean"):
            raise ValueError(f"aggregate: {aggregate!r} is not one of min, mean")
        if references < 1:
            raise ValueError(f"references must be at least 1, not {references}")
        self.references, self.aggregate, self.seed, self.pairs_file = references, aggregate, seed, pairs_file

    def stored_threshold(self, model: AnyTwin) -> float | None:
        """The threshold training calibrated for this protocol, if it was for these settings."""
        stored = (model.calibration.extra.get(self.name) if model.calibration else None) or {}
        same_setting = stored.get("references") == self.references and stored.get("aggregate") == self.aggregate
        return stored.get("threshold") if same_setting else None

    def run(self, model: AnyTwin, items: ItemSet, threshold: float | None = None) -> ProtocolResult:
        native, genuine, owner = signature_scores(model, items, self.references, self.aggregate, self.seed)
        orientation = model.comparator.orientation
        scores = orientation.to_similarity(native)
        eer, eer_t = calc_eer(scores, genuine)
        per_writer = [calc_eer(scores[owner == w], genuine[owner == w])[0] for w in np.unique(owner)
                      if genuine[owner == w].any() and (~genuine[owner == w]).any()]  # fmt: skip
        metrics: dict[str, Any] = {
            "eer": eer, "eer_threshold": float(orientation.from_similarity(eer_t)),
            "mean_writer_eer": float(np.mean(per_writer)), "roc_auc": calc_roc_auc(scores, genuine),
            "test_writers": len(np.unique(owner)), "genuine": int(genuine.sum()), "forgeries": int((~genuine).sum()),
            "references": self.references, "aggregate": self.aggregate, "far": None, "frr": None, "threshold": None,
        }  # fmt: skip
        if threshold is not None:
            far, frr = calc_far_frr(scores, genuine, orientation.to_similarity(threshold))
            metrics.update(far=far, frr=frr, threshold=threshold)
        return self.result(metrics)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        result = self.run(model, data.items, self.stored_threshold(model))
        if self.pairs_file is not None:
            result.details["pairs"] = signature_pair_accuracy(model, data.items, self.pairs_file)
        return result

    def calibrate(self, model: AnyTwin, data: Dataset) -> dict[str, Any]:
        """The protocol's EER threshold on validation writers, for these references and aggregate."""
        threshold = self.run(model, data.items).metrics["eer_threshold"]
        return {"threshold": threshold, "references": self.references, "aggregate": self.aggregate,
                "criterion": "EER on validation writers"}  # fmt: skip


def evaluate_signatures(
    model: AnyTwin, items: ItemSet, references: int = 5, aggregate: Aggregate = "min", seed: int = 0,
    threshold: float | None = None,
) -> ProtocolResult:  # fmt: skip
    """The writer-independent protocol on ``items`` (test writers only); FAR/FRR at ``threshold``."""
    return SignatureProtocol(references, aggregate, seed).run(model, items, threshold)


def calibrate_signature_threshold(
    model: AnyTwin, val_items: ItemSet, references: int = 5, aggregate: Aggregate = "min", seed: int = 0
) -> float:
    """The EER threshold of the protocol on validation writers (native scale)."""
    return SignatureProtocol(references, aggregate, seed).calibrate(model, Dataset(val_items))["threshold"]


def signature_pair_accuracy(
    model: AnyTwin, items: ItemSet, pairs_csv: str | Path, writers: set[int] | None = None,
    threshold: float | None = None, calibration_writers: set[int] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Accuracy on SigComp2011's ``train_data.csv`` pairs (``target`` 1 = a genuine signature and a
    forgery, 0 = two genuine signatures of one writer), restricted to pairs of ``writers``. The
    threshold is ``threshold`` (native scale) if given; otherwise it is chosen for best accuracy on
    the pairs of ``calibration_writers`` — with neither given, on the scored pairs themselves, an
    optimistic (oracle) figure, reported as ``threshold_source: oracle``."""
    path = Path(pairs_csv)
    by_name = {Path(n).parent.name + "/" + Path(n).name: i for i, n in enumerate(items.names)}
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if line_no == 1 and row and row[0] == "img1":
                continue
            if len(row) != 3 or row[2] not in ("0", "1"):
                raise DataError(f"{path}:{line_no}: expected img1,img2,target with target 0 or 1")
            first, second = by_name.get(row[0]), by_name.get(row[1])
            if first is not None and second is not None:
                rows.append((first, second, row[2] == "0"))  # target 0 = two genuine = same writer's signature
    if not rows:
        raise DataError(f"{path}: none of its pairs name images of these items")
    a, b, same = (np.asarray(column) for column in zip(*rows))
    pair_writer = items.attributes["writer"][a]
    emb = embed_batches(model, items)
    with torch.no_grad():
        native = model.comparator(emb[torch.from_numpy(a)], emb[torch.from_numpy(b)]).numpy()
    orientation = model.comparator.orientation
    scores = orientation.to_similarity(native)

    def select(ws: set[int] | None) -> np.ndarray:
        return np.ones(len(a), bool) if ws is None else np.isin(pair_writer, sorted(ws))

    if threshold is None:
        cal = select(calibration_writers)
        _, t = calc_best_accuracy(scores[cal], same[cal])
        source = "oracle" if calibration_writers is None else "calibration writers"
    else:
        t = orientation.to_similarity(threshold)
        source = "given"
    test = select(writers)
    return {
        "accuracy": float(((scores[test] >= t) == same[test]).mean()),
        "pairs": int(test.sum()),
        "threshold": float(orientation.from_similarity(t)),
        "threshold_source": source,  # type: ignore[dict-item]
    }
