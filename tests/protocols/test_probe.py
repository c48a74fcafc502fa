"""k-NN and linear-probe read-outs against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twinnet import from_arrays
from twinnet.compare import CosineSimilarity, EuclideanDistance
from twinnet.data.sources import Dataset
from twinnet.errors import DataError
from twinnet.protocols import build_protocol, calc_knn_accuracy, calc_linear_probe_accuracy
from twinnet.protocols.probe import split_per_class


def test_knn_follows_the_comparator_orientation_and_majority() -> None:
    reference = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]])
    labels = np.array([0, 0, 1])
    queries = torch.tensor([[0.05, 0.0], [4.9, 5.0]])
    truth = np.array([0, 1])
    assert calc_knn_accuracy(EuclideanDistance(), reference, labels, queries, truth, k=1) == 1.0
    # k = 3: the majority of all three references is class 0, so the second query is wrong
    assert calc_knn_accuracy(EuclideanDistance(), reference, labels, queries, truth, k=3) == 0.5
    # cosine: direction, not distance — [0.1, 0] and [5, 5] differ by 45°; [0, 0] has no direction
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert (
        calc_knn_accuracy(CosineSimilarity(), ref, np.array([0, 1]), torch.tensor([[10.0, 1.0]]), np.array([0])) == 1.0
    )


def test_knn_ties_go_to_the_nearest() -> None:
    reference = torch.tensor([[0.0], [1.0], [3.0], [4.0]])
    labels = np.array([1, 0, 0, 1])
    # k = 2 from 0.4: neighbours 0.0 (label 1) and 1.0 (label 0) tie; the nearest (label 1) wins
    assert calc_knn_accuracy(EuclideanDistance(), reference, labels, torch.tensor([[0.4]]), np.array([1]), k=2) == 1.0


def test_linear_probe_separates_separable_classes() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (40, 3)), rng.normal(3, 1, (40, 3))])
    y = np.repeat([0, 1], 40)
    ref, query = split_per_class(y, 0.5, 0)
    assert len(ref) == 40 and set(np.unique(y[ref])) == {0, 1}
    assert calc_linear_probe_accuracy(x[ref], y[ref], x[query], y[query]) == 1.0


def test_protocols_on_a_model_and_their_errors() -> None:
    from twinnet import build_model
    from twinnet.config import ModelConfig

    def vector_model():
        torch.manual_seed(0)
        return build_model(ModelConfig.model_validate({"input": {"kind": "vector", "features": 16}, "encoder": {
            "name": "mlp", "params": {"hidden": [32], "embedding_dim": 8}}}))  # fmt: skip

    items = from_arrays(np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32), np.arange(40) % 4)
    knn = build_protocol("knn", {"k": 3}).evaluate(vector_model(), Dataset(items))
    assert knn.primary_metric == "knn_accuracy" and knn.greater_is_better and 0 <= knn.primary <= 1
    probe = build_protocol("linear_probe").evaluate(vector_model(), Dataset(items))
    assert probe.metrics["queries"] == 20
    with pytest.raises(DataError, match="single item"):
        split_per_class(np.arange(5), 0.5, 0)
    with pytest.raises(Exception, match="train_share"):
        build_protocol("knn", {"train_share": 1.5})
