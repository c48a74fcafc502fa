"""Protocols on given pairs (text similarity, paraphrase and duplicate detection, retrieval).
They need data that holds pairs (a pairs file); each item is embedded once per side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from twinnet.calibrate import Calibration
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.data.sources import Dataset
from twinnet.embedding import embed_batches
from twinnet.errors import DataError
from twinnet.metrics import (
    calc_accuracy,
    calc_average_precision,
    calc_best_accuracy,
    calc_best_f1,
    calc_correlations,
    calc_f1,
    calc_far_frr,
    calc_retrieval,
    calc_roc_auc,
)
from twinnet.model import AnyTwin
from twinnet.protocols.base import EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.protocols.folds import fold_ids, kfold_verification
from twinnet.protocols.verification import pair_values


def _pairs(protocol: EvaluationProtocol, data: Dataset) -> Pairs:
    if data.pairs is None:
        raise DataError(f"{data.source or 'this data'}: the {protocol.name} protocol needs a pairs file")
    return data.pairs


def pair_similarities(model: AnyTwin, items: ItemSet, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Native comparator values and similarities (larger = more alike) of ``pairs``."""
    native = pair_values(model, items, pairs)
    return native, model.comparator.to_similarity(native)


@register_protocol("sts")
class STSProtocol(EvaluationProtocol):
    """Graded similarity (STS): Spearman and Pearson correlation of the comparator's similarity with
    the gold scores. Spearman is primary (only the order of similarities matters)."""

    primary_metric = "spearman"
    needs = "pairs"
    summary = "Spearman/Pearson of similarity with graded scores (STS-B)"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed  # deterministic; accepted so every protocol takes a seed

    def run(self, model: AnyTwin, items: ItemSet, pairs: Pairs) -> ProtocolResult:
        if pairs.score is None:
            raise DataError(
                "the sts protocol needs graded pairs (a score per pair, e.g. STS-B); these have labels only"
            )
        _, sim = pair_similarities(model, items, pairs)
        return self.result({"n_pairs": len(pairs), **calc_correlations(sim, pairs.score)})

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        return self.run(model, data.items, _pairs(self, data))


@register_protocol("pairs")
class PairClassificationProtocol(EvaluationProtocol):
    """Paraphrase / duplicate detection on labelled pairs: decisions at the model's operating point
    for verification (its first point fitted on pairs, the default first; else the default), named
    in the result's ``operating_point`` (accuracy, F1, FAR, FRR; F1 is primary), threshold-free
    figures (average precision, primary without a calibration; ROC AUC), and, marked as oracle, the
    best accuracy and F1 any threshold would give on these very pairs."""

    primary_metric = "f1"
    needs = "pairs"
    summary = ("accuracy and F1 at the calibrated threshold, AP, ROC AUC (paraphrase, duplicates); with --folds K: "
               "LFW's K-fold accuracy (each fold's threshold from the other folds), ROC AUC, TAR@FAR=1e-3")  # fmt: skip

    def __init__(self, seed: int = 0, folds: int | None = None, far_targets: Sequence[float] = (1e-3,)) -> None:
        if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
            raise ValueError(f"folds must be a whole number of at least 2, not {folds!r}")
        self.seed, self.folds, self.far_targets = seed, folds, tuple(far_targets)

    def run(self, model: AnyTwin, items: ItemSet, pairs: Pairs, calibration: Calibration | None) -> ProtocolResult:
        _, sim = pair_similarities(model, items, pairs)
        same = pairs.same
        if self.folds is not None:  # LFW's protocol: no threshold from the calibration nor from the fold scored
            fold = fold_ids(pairs, self.folds, self.seed)
            folded = kfold_verification(sim, same, fold, model.comparator.orientation, self.far_targets)
            return self.result({**folded, "average_precision": calc_average_precision(sim, same)}, "accuracy")
        metrics: dict[str, float | int | None] = {
            "n_pairs": len(pairs),
            "average_precision": calc_average_precision(sim, same),
            "roc_auc": calc_roc_auc(sim, same),
            "oracle_best_f1": calc_best_f1(sim, same)[0],
            "oracle_best_accuracy": calc_best_accuracy(sim, same)[0],
            "positive_share": float(np.mean(same)),
            "threshold": None,
        }
        if calibration is None or not calibration.points:
            return self.result(metrics, "average_precision")
        found = calibration.find("verification")
        name, point = found if found is not None else (calibration.default, calibration.point())
        t = calibration.orientation.to_similarity(point.threshold)
        far, frr = calc_far_frr(sim, same, t)
        metrics.update({"accuracy": calc_accuracy(sim, same, t), "f1": calc_f1(sim, same, t), "far": far, "frr": frr,
                        "threshold": point.threshold})  # fmt: skip
        return self.result(metrics, operating_point=name)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        return self.run(model, data.items, _pairs(self, data), model.calibration)


@register_protocol("retrieval")
class RetrievalProtocol(EvaluationProtocol):
    """Query → document retrieval on pairs: every distinct ``a`` item with at least one positive
    pair is a query, every distinct ``b`` item a document of the corpus, and a query's relevant
    documents are its positive partners. Queries go through side a, documents through side b."""

    primary_metric = "mrr@10"
    needs = "pairs"
    summary = "recall@1/5/10 and MRR@10, each distinct first text a query against all second texts"

    def __init__(self, ks: Sequence[int] = (1, 5, 10), seed: int = 0) -> None:
        self.ks, self.seed = tuple(ks), seed

    @torch.no_grad()
    def run(self, model: AnyTwin, items: ItemSet, pairs: Pairs, batch_size: int = 1024) -> ProtocolResult:
        positive: dict[int, set[int]] = {}
        for a, b in zip(pairs.a[pairs.same].tolist(), pairs.b[pairs.same].tolist()):
            positive.setdefault(a, set()).add(b)
        if not positive:
            raise DataError(
                "the retrieval protocol needs positive pairs (label 1, or a score above the positive threshold)"
            )
        queries = np.array(sorted(positive))
        documents = np.unique(pairs.b)
        column = {int(d): i for i, d in enumerate(documents)}
        relevant = [{column[d] for d in positive[int(q)]} for q in queries]
        q_emb = embed_batches(model, items, indices=queries, side="a")
        d_emb = embed_batches(model, items, indices=documents, side="b").to(model.device)
        sims = torch.cat([
            model.comparator.pairwise_similarity(q_emb[i : i + batch_size].to(model.device), d_emb).float().cpu()
            for i in range(0, len(q_emb), batch_size)
        ])  # fmt: skip
        metrics = {"n_queries": len(queries), "n_documents": len(documents), **calc_retrieval(sims, relevant, self.ks)}
        return self.result(metrics)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        return self.run(model, data.items, _pairs(self, data))


def evaluate_sts(model: AnyTwin, items: ItemSet, pairs: Pairs) -> ProtocolResult:
    """STS: Spearman and Pearson correlation of similarity with ``pairs.score``."""
    return STSProtocol().run(model, items, pairs)


def evaluate_pairs(
    model: AnyTwin, items: ItemSet, pairs: Pairs, calibration: Calibration | None = None
) -> ProtocolResult:
    """Pair classification at ``calibration``'s default threshold (chosen on held-out *training* pairs)."""
    return PairClassificationProtocol().run(model, items, pairs, calibration)


def evaluate_retrieval(model: AnyTwin, items: ItemSet, pairs: Pairs, ks: Sequence[int] = (1, 5, 10)) -> ProtocolResult:
    """Recall@k and MRR@10 of queries (side a) against documents (side b)."""
    return RetrievalProtocol(ks).run(model, items, pairs)
