"""The standard read-outs of self-supervised embeddings: k-nearest-neighbour accuracy and a linear
probe, on labelled items (classes the model may never have seen).

Each class's items are split in two (seeded, ``train_share`` of every class on the reference
side): the reference half is the k-NN memory and the probe's training set, the other half is
classified. The pure functions :func:`calc_knn_accuracy` and :func:`calc_linear_probe_accuracy` work
on arrays; the protocols embed first.
"""

from __future__ import annotations

import numpy as np
import torch

from twinnet.compare import Comparator
from twinnet.data.sources import Dataset
from twinnet.embedding import embed_batches
from twinnet.errors import DataError
from twinnet.model import AnyTwin
from twinnet.protocols.base import EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.runtime import Stream, numpy_rng


def split_per_class(labels: np.ndarray, train_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the reference and the query items: ``train_share`` of each class (at least one
    item each side) for reference; classes with a single item are left out."""
    rng = numpy_rng(seed, Stream.EVAL_PAIRS, 7)
    ref, query = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        if len(idx) < 2:
            continue
        k = min(len(idx) - 1, max(1, round(train_share * len(idx))))
        ref.append(idx[:k])
        query.append(idx[k:])
    if not ref:
        raise DataError("k-NN / linear probe: every class has a single item; at least two per class are needed")
    return np.concatenate(ref), np.concatenate(query)


def calc_knn_accuracy(
    comparator: Comparator, reference: torch.Tensor, reference_labels: np.ndarray, queries: torch.Tensor,
    query_labels: np.ndarray, k: int = 1,
) -> float:  # fmt: skip
    """Share of queries whose majority label among the ``k`` best references (by the comparator's
    own order: smallest distance or largest similarity; ties to the nearest) is their own."""
    similarity = comparator.to_similarity(comparator.pairwise(queries, reference)).float()
    k = min(k, len(reference))
    top = similarity.topk(k, dim=1).indices.numpy()
    votes = reference_labels[top]  # (queries, k), best first
    correct = 0
    for row, truth in zip(votes, query_labels, strict=True):
        values, counts = np.unique(row, return_counts=True)
        winners = set(values[counts == counts.max()])
        pick = next(v for v in row if v in winners)  # among tied labels, the one met first (nearest)
        correct += int(pick == truth)
    return correct / max(1, len(query_labels))


def calc_linear_probe_accuracy(
    reference: np.ndarray, reference_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray, *,
    c: float = 1.0, seed: int = 0,
) -> float:  # fmt: skip
    """Accuracy of a multinomial logistic regression (scikit-learn, standardised features) fitted on
    the reference embeddings and applied to the queries."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    probe.fit(reference, reference_labels)
    return float((probe.predict(queries) == query_labels).mean())


class _ReadOut(EvaluationProtocol):
    needs = "labels"
    scores_pairs = True

    def __init__(self, train_share: float = 0.5, seed: int = 0) -> None:
        if not 0.0 < float(train_share) < 1.0:
            raise ValueError(f"train_share must be in (0, 1), not {train_share}")
        self.train_share, self.seed = float(train_share), int(seed)

    def _embed(self, model: AnyTwin, data: Dataset) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
        self.check_data(data)
        items = data.items
        ref, query = split_per_class(items.labels, self.train_share, self.seed)
        z = embed_batches(model, items, side="a")
        return z, items.labels, ref, query


@register_protocol("knn")
class KNNProtocol(_ReadOut):
    """k-NN accuracy: half of every class (``train_share``) is the memory, the rest is classified by
    its ``k`` nearest memory items under the model's comparator (``knn_accuracy``; also 1-NN)."""

    primary_metric = "knn_accuracy"
    summary = "k-nearest-neighbour accuracy (half of each class as memory): the self-supervised read-out"

    def __init__(self, k: int = 5, train_share: float = 0.5, seed: int = 0) -> None:
        super().__init__(train_share, seed)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive whole number, not {k!r}")
        self.k = k

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        z, labels, ref, query = self._embed(model, data)
        args = (model.comparator, z[ref], labels[ref], z[query], labels[query])
        with torch.no_grad():
            metrics = {"knn_accuracy": calc_knn_accuracy(*args, k=self.k), "nn_accuracy": calc_knn_accuracy(*args, k=1),
                       "k": self.k, "queries": len(query), "classes": len(np.unique(labels[query]))}  # fmt: skip
        return self.result(metrics)


@register_protocol("linear_probe")
class LinearProbeProtocol(_ReadOut):
    """Linear-probe accuracy: a logistic regression (scikit-learn) on the frozen embeddings of half
    of every class, tested on the other half (``linear_probe_accuracy``)."""

    primary_metric = "linear_probe_accuracy"
    summary = "accuracy of a logistic regression on frozen embeddings (half of each class to fit)"

    def __init__(self, c: float = 1.0, train_share: float = 0.5, seed: int = 0) -> None:
        super().__init__(train_share, seed)
        if not float(c) > 0:
            raise ValueError(f"c must be positive, not {c}")
        self.c = float(c)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        z, labels, ref, query = self._embed(model, data)
        x = z.numpy()
        accuracy = calc_linear_probe_accuracy(x[ref], labels[ref], x[query], labels[query], c=self.c, seed=self.seed)
        return self.result({"linear_probe_accuracy": accuracy, "queries": len(query),
                            "classes": len(np.unique(labels[query]))})  # fmt: skip
