"""The protocol registry: every protocol names its primary metric and direction, options are
checked by name, configs and the CLI list what is registered, and the built-in protocols compute
what they say on data small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import twinnet
from twinnet.compare import CosineSimilarity, EuclideanDistance
from twinnet.config import parse_config
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.data.sources import Dataset
from twinnet.errors import ConfigError, DataError
from twinnet.protocols import (
    PROTOCOLS,
    EvaluationProtocol,
    ProtocolResult,
    build_protocol,
    evaluate_verification,
    protocol_names,
    register_protocol,
    signature_scores,
)


class Identity(nn.Module):
    output_dim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def vector_items(points: list[list[float]], labels: list[int], **attributes: np.ndarray) -> ItemSet:
    return ItemSet(torch.tensor(points, dtype=torch.float32), np.array(labels), [str(c) for c in sorted(set(labels))],
                   attributes=dict(attributes))  # fmt: skip


BUILT_IN = ("verification", "nway", "oneshot", "within-alphabet", "omniglot-runs", "signature", "sts", "pairs",
            "retrieval")  # fmt: skip


def test_every_protocol_says_its_primary_metric_and_direction():
    assert set(BUILT_IN) <= set(protocol_names())
    for name in BUILT_IN:
        protocol = build_protocol(name, {"seed": 3})
        assert protocol.name == name
        assert protocol.primary_metric, name
        assert isinstance(protocol.greater_is_better, bool)
        assert protocol.summary, name
    assert build_protocol("signature").greater_is_better is False  # an EER: smaller is better
    assert build_protocol("verification").greater_is_better is True


def test_unknown_protocol_and_unknown_option_name_the_field():
    with pytest.raises(ConfigError, match=r"--protocol: unknown protocol 'magic'; known: .*verification"):
        build_protocol("magic", field="--protocol")
    with pytest.raises(ConfigError, match=r"--protocol: unknown parameter\(s\) ways; accepted: seed"):
        build_protocol("sts", {"ways": 5}, field="--protocol")
    with pytest.raises(ConfigError, match="--protocol: prototype: 'median' is not one of nearest, mean"):
        build_protocol("nway", {"prototype": "median"}, field="--protocol")


def test_config_validation_lists_registered_protocols_and_migrates_old_metrics():
    with pytest.raises(ConfigError, match="train.validation.protocol: .*'bogus' is not a registered protocol; known: "):
        parse_config({"train": {"validation": {"protocol": "bogus"}}})
    old = parse_config({"train": {"validation": {"metric": "oneshot", "ways": 20, "shots": 1, "within_groups": True}}})
    assert old.train.validation.protocol == "nway"
    assert old.train.validation.params == {"ways": 20, "shots": 1, "within_groups": True}
    assert parse_config({"train": {"validation": {"metric": "spearman"}}}).train.validation.protocol == "sts"
    assert parse_config({"train": {"validation": {"metric": "roc_auc"}}}).train.validation.protocol == "verification"
    with pytest.raises(ConfigError, match="metric: 'auc' is not one of"):
        parse_config({"train": {"validation": {"metric": "auc"}}})


def test_config_validation_lists_registered_data_formats():
    with pytest.raises(ConfigError, match="data.format: .*'parquet' is not a registered data format; known: auto, "
                                          ".*images"):  # fmt: skip
        parse_config({"data": {"format": "parquet"}})


def test_a_protocol_registered_outside_the_package_is_built_by_name_and_listed(request):
    @register_protocol("test_nearest_neighbour")
    class LeaveOneOut(EvaluationProtocol):
        primary_metric = "recall@1"
        summary = "leave-one-out nearest-neighbour identification"

        def __init__(self, seed: int = 0) -> None:
            self.seed = seed

        def evaluate(self, model, data: Dataset) -> ProtocolResult:
            z = twinnet.embedding.embed_batches(model, data.items)
            sim = model.comparator.pairwise_similarity(z, z).fill_diagonal_(-float("inf"))
            hits = data.items.labels[sim.argmax(1).numpy()] == data.items.labels
            return self.result({"recall@1": float(hits.mean())})

    request.addfinalizer(lambda: PROTOCOLS.unregister("test_nearest_neighbour"))
    assert "test_nearest_neighbour" in protocol_names()
    model = twinnet.TwinNetwork(Identity(), EuclideanDistance())
    items = vector_items([[0, 0], [0, 0.1], [5, 5], [5, 5.1]], [0, 0, 1, 1])
    result = build_protocol("test_nearest_neighbour").evaluate(model, Dataset(items))
    assert result.primary == 1.0 and result.to_dict()["primary_metric"] == "recall@1"


def test_improves_on_follows_the_direction():
    up = ProtocolResult("x", {"m": 0.5}, "m", greater_is_better=True)
    down = ProtocolResult("x", {"m": 0.5}, "m", greater_is_better=False)
    assert up.improves_on(0.4) and not up.improves_on(0.6) and up.improves_on(None)
    assert down.improves_on(0.6) and not down.improves_on(0.4)
    assert not up.improves_on(0.45, min_delta=0.1)


def test_protocols_check_the_data_they_need():
    items = vector_items([[0, 0], [1, 1]], [0, 1])
    with pytest.raises(DataError, match="the sts protocol needs a pairs file"):
        build_protocol("sts").check_data(Dataset(items, source="folder"))
    with pytest.raises(DataError, match="the nway protocol needs labelled items"):
        build_protocol("nway").check_data(Dataset(items, Pairs(np.array([0]), np.array([1]), np.array([False]))))
    build_protocol("verification").check_data(Dataset(items, Pairs(np.array([0]), np.array([1]), np.array([False]))))


@pytest.mark.parametrize("comparator", [EuclideanDistance(), CosineSimilarity()], ids=["distance", "score"])
def test_verification_reports_thresholds_in_the_native_scale(comparator):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 2)) * 5
    labels = np.repeat(np.arange(6), 20)
    points = centres[labels] + rng.normal(scale=0.3, size=(120, 2))
    items = vector_items(points.tolist(), labels.tolist())
    model = twinnet.TwinNetwork(Identity(), comparator)
    result, native, same = evaluate_verification(model, items, n_pairs=400, seed=1)
    threshold = result["best_accuracy_threshold"]
    decided = comparator.matches(native, threshold)
    assert (decided == same).mean() == pytest.approx(result["best_accuracy"])


@pytest.mark.parametrize("comparator", [EuclideanDistance(), CosineSimilarity()], ids=["distance", "score"])
def test_signature_scores_take_the_most_alike_reference(comparator):
    # writer 0: four genuine (two references, two questioned) and one forgery
    points = [[1, 0], [0.9, 0.1], [1, 0.05], [0.95, -0.05], [-1, 0.2]]
    writers = np.zeros(5, np.int64)
    genuine = np.array([True, True, True, True, False])
    items = vector_items(points, [0] * 5, writer=writers, genuine=genuine)
    model = twinnet.TwinNetwork(Identity(), comparator)
    values, flags, owner = signature_scores(model, items, references=2, aggregate="min", seed=0)
    emb = torch.tensor(points)
    # brute force: the references are the first two of the seeded permutation of the genuine ones
    rng = np.random.default_rng(np.random.SeedSequence([0, twinnet.runtime.Stream.SIGNATURE_REFERENCES]))
    order = rng.permutation(np.arange(4))
    refs, questioned = order[:2], np.r_[order[2:], 4]
    matrix = comparator.pairwise(emb[questioned], emb[refs])
    expected = matrix.min(1).values if comparator.is_distance else matrix.max(1).values
    np.testing.assert_allclose(values, expected.numpy(), rtol=1e-5)
    assert flags.tolist() == [True, True, False] and set(owner.tolist()) == {0}


def test_an_old_option_key_becomes_the_protocol_option():
    # `train.validation.episodes=40` from an earlier version's habits: the nway option it always was
    cfg = parse_config({"train": {"validation": {"protocol": "nway", "params": {"ways": 20}, "episodes": 40}}})
    assert cfg.train.validation.params == {"ways": 20, "episodes": 40}
