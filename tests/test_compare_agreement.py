"""Every comparator, the registered ones and a custom one, agrees with itself everywhere it is used:
``twinnet.verify``, calibration, the protocols, and gallery search (FAISS and Qdrant) against brute force.

The custom comparator is a similarity with no ``index_plan`` of its own, so it exercises the
default plan (L2 candidates, exact re-scoring) that any newly registered comparator gets.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

import twinnet
from twinnet.calibrate import calibrate
from twinnet.compare import COMPARATORS, SCORE, Comparator, comparator_names
from twinnet.config import ModelConfig
from twinnet.gallery import Gallery
from twinnet.model import TwinNetwork, build_model

CUSTOM = "test_orientation_neg_l1"
"""A score ``-||a - b||₁``, registered for this module only."""

IN_FEATURES = 12
EMBEDDING_DIM = 8


class NegativeL1Score(Comparator):
    """``-||a - b||₁``: larger = more alike, and no index plan of its own."""

    orientation = SCORE

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -(a - b).abs().sum(-1)


@pytest.fixture(scope="module", autouse=True)
def custom_comparator() -> Iterator[str]:
    assert CUSTOM not in COMPARATORS
    COMPARATORS.register(CUSTOM)(NegativeL1Score)
    yield CUSTOM
    COMPARATORS.unregister(CUSTOM)


ALL_COMPARATORS = [*comparator_names("vectors"), CUSTOM]  # feature-map comparators: tests/tracking


def _trained_like(comparator: Comparator, generator: torch.Generator) -> None:
    """Learned comparators set to a state a training run could reach: near-duplicates alike and
    strangers not, and different from their initial (Euclidean-like) state."""
    with torch.no_grad():
        if isinstance(comparator, twinnet.MahalanobisDistance):
            comparator.L.add_(0.5 * torch.randn(comparator.L.shape, generator=generator))
        elif isinstance(comparator, twinnet.WeightedL1):
            comparator.weight.copy_(-0.2 - torch.rand(comparator.weight.shape, generator=generator))
            comparator.bias.fill_(2.0)
        elif isinstance(comparator, twinnet.MLPMetric):
            first, last = comparator.net[0], comparator.net[2]
            dim = first.in_features // 2
            # hidden unit j passes |a_j - b_j| (ReLU of a non-negative value), the output sums them
            # negatively: p(same) falls with the L1 distance, perturbed through the a⊙b features
            first.weight.zero_()
            first.weight[:dim, :dim] = torch.eye(dim)
            first.weight[:dim, dim:] = 0.01 * torch.randn(dim, dim, generator=generator)
            first.bias.zero_()
            last.weight.zero_()
            last.weight[0, :dim] = -(0.5 + torch.rand(dim, generator=generator))
            last.bias.fill_(3.0)


def tiny_vector_model(comparator: str, seed: int = 0) -> TwinNetwork:
    """A tiny twin on 12-d vectors (MLP encoder, 8-d embeddings) comparing with ``comparator``, in
    eval mode, with a config (so it has an input specification) and no calibration."""
    torch.manual_seed(seed)
    config = ModelConfig.model_validate({
        "input": {"kind": "vector", "features": IN_FEATURES},
        "encoder": {"name": "mlp", "params": {"hidden": [16], "embedding_dim": EMBEDDING_DIM}},
        "comparator": {"name": comparator},
    })  # fmt: skip
    model = build_model(config).eval()
    _trained_like(model.comparator, torch.Generator().manual_seed(seed + 1))
    return model


def pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``n`` genuine pairs (an input and a near-duplicate) then ``n`` impostor pairs (strangers)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(2 * n, IN_FEATURES, generator=g)
    b = torch.cat([a[:n] + 0.01 * torch.randn(n, IN_FEATURES, generator=g), torch.randn(n, IN_FEATURES, generator=g)])
    return a, b, np.r_[np.ones(n, bool), np.zeros(n, bool)]


def brute_force(model: TwinNetwork, queries: torch.Tensor, templates: torch.Tensor) -> np.ndarray:
    """``comparator.pairwise`` of side-a query embeddings against side-b template embeddings."""
    with torch.no_grad():
        return model.comparator.pairwise(model.embed(queries, "a"), model.embed(templates, "b")).numpy()


@pytest.fixture(params=ALL_COMPARATORS)
def model(request: pytest.FixtureRequest) -> TwinNetwork:
    return tiny_vector_model(request.param)


def test_the_custom_comparator_uses_the_default_plan() -> None:
    plan = COMPARATORS.build(CUSTOM).index_plan(EMBEDDING_DIM)
    assert plan.metric == "l2" and plan.rescore


def test_verify_decides_as_the_comparator_and_the_calibration(model: TwinNetwork) -> None:
    a, b, same = pairs(8)
    with torch.no_grad():
        forward = model(a, b).numpy()
    results = [twinnet.verify(model, a[i], b[i]) for i in range(len(a))]
    native = np.array([r.value for r in results])
    assert np.allclose(native, forward, atol=1e-5)
    assert all(r.orientation == model.comparator.orientation for r in results)
    assert all(r.same is None and r.threshold is None for r in results)  # no calibration, no threshold
    threshold = float(np.median(native))
    decisions = [twinnet.verify(model, a[i], b[i], threshold).same for i in range(len(a))]
    assert decisions == model.comparator.matches(native, threshold).tolist()
    model.calibration = calibrate(native, same, model.comparator.orientation)
    decided = [twinnet.verify(model, a[i], b[i]) for i in range(len(a))]
    assert [r.same for r in decided] == model.calibration.decide(native).tolist()
    assert all(r.threshold == model.calibration.native_threshold() for r in decided)
    out = decided[0].to_dict()
    assert out[model.comparator.orientation.value_name] == decided[0].value and out["rule"] == model.comparator.rule


def test_calibration_on_separable_data_decides_correctly(model: TwinNetwork) -> None:
    a, b, same = pairs(32, seed=1)
    with torch.no_grad():
        native = model(a, b).numpy()
    calibration = calibrate(native, same, model.comparator.orientation, far_targets=(0.01,))
    best = calibration.thresholds["best_accuracy"]
    assert best.accuracy == 1.0 and best.far == 0.0 and best.frr == 0.0
    assert calibration.decide(native).tolist() == same.tolist()
    assert model.comparator.matches(native, calibration.native_threshold()).tolist() == same.tolist()
    # the threshold is in the native scale: it lies between the genuine and the impostor values
    genuine, impostor = native[same], native[~same]
    t = calibration.native_threshold()
    if model.comparator.orientation.is_distance:
        assert genuine.max() <= t < impostor.min()
    else:
        assert impostor.max() < t <= genuine.min()
    assert calibration.thresholds["far=0.01"].far <= 0.01
    model.calibration = calibration
    assert [twinnet.verify(model, a[i], b[i]).same for i in (0, 1, 32, 33)] == [True, True, False, False]


def enrolled_gallery(tmp_path, model: TwinNetwork, backend: str, templates: torch.Tensor, per: int) -> Gallery:
    g = Gallery.create(tmp_path / backend, model, index="flat", backend=backend)  # type: ignore[arg-type]
    for i in range(len(templates) // per):
        g.enroll(f"id{i:02d}", templates[per * i : per * (i + 1)])
    return g


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_gallery_agrees_with_brute_force(tmp_path, model: TwinNetwork, backend: str) -> None:
    if backend == "qdrant":
        pytest.importorskip("qdrant_client")
    gen = torch.Generator().manual_seed(2)
    per, n_ids = 2, 10
    templates = torch.randn(per * n_ids, IN_FEATURES, generator=gen)
    queries = templates[::per][:6] + 0.3 * torch.randn(6, IN_FEATURES, generator=gen)
    orientation = model.comparator.orientation
    matrix = brute_force(model, queries, templates)  # (queries, templates)
    by_identity = orientation.best(matrix.reshape(len(queries), n_ids, per), axis=2)  # (queries, identities)
    threshold = float(np.median(by_identity))
    g = enrolled_gallery(tmp_path, model, backend, templates, per)
    try:
        assert g.comparator is model.comparator and g.metric == model.comparator.index_plan(EMBEDDING_DIM).metric
        results = g.identify_batch(queries, k=3, threshold=threshold)
        for q, result in enumerate(results):
            best_template = int(orientation.rank(matrix[q])[0])
            assert result.matches[0].identity == f"id{best_template // per:02d}"
            expected = orientation.rank(by_identity[q])[:3]
            assert [m.identity for m in result.matches] == [f"id{i:02d}" for i in expected]
            assert [m.value for m in result.matches] == pytest.approx(by_identity[q, expected].tolist(), abs=1e-4)
            assert [m.same for m in result.matches] == orientation.matches(by_identity[q, expected], threshold).tolist()
            assert orientation.value_name in result.to_dict()["matches"][0]
        claimed = [f"id{i:02d}" for i in (0, 3, 3, 7, 9, 1)]
        columns = [int(c[2:]) for c in claimed]
        checks = g.verify_batch(queries, claimed, threshold=threshold)
        expected_values = by_identity[np.arange(len(queries)), columns]
        assert [v.value for v in checks] == pytest.approx(expected_values.tolist(), abs=1e-4)
        assert [v.same for v in checks] == orientation.matches(expected_values, threshold).tolist()
        assert all(v.orientation == orientation and v.templates == per for v in checks)
        means = g.verify_batch(queries, claimed, aggregate="mean")
        per_template = matrix.reshape(len(queries), n_ids, per)[np.arange(len(queries)), columns].mean(1)
        assert [v.value for v in means] == pytest.approx(per_template.tolist(), abs=1e-4)
    finally:
        g.close()


def test_protocols_agree_with_brute_force(model: TwinNetwork) -> None:
    """Verification on given pairs ranks genuine above impostor pairs as the comparator does, its
    thresholds are native (deciding with ``comparator.matches`` reproduces its best accuracy), and
    N-way one-shot predictions are the brute-force most-alike support item."""
    from twinnet.data.items import ItemSet
    from twinnet.data.pairs import Pairs
    from twinnet.data.sources import Dataset
    from twinnet.protocols import build_protocol, classify_episodes, evaluate_nway, sample_episodes

    a, b, same = pairs(16, seed=2)
    n = len(a)
    items = ItemSet(torch.cat([a, b]), np.zeros(2 * n, np.int64), ["?"])
    given = Pairs(np.arange(n), np.arange(n, 2 * n), same)
    result = build_protocol("verification").evaluate(model, Dataset(items, given))
    with torch.no_grad():
        native = model(a, b).numpy()
    similarity = model.comparator.to_similarity(native)
    expected_auc = (similarity[same][:, None] > similarity[~same][None, :]).mean()
    assert result.primary == pytest.approx(expected_auc)
    decided = model.comparator.matches(native, result["best_accuracy_threshold"])
    assert (decided == same).mean() == pytest.approx(result["best_accuracy"])

    # one-shot: 6 classes of near-duplicates; the one-shot protocol against an explicit argmax
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(6, IN_FEATURES, generator=g)
    x = centres.repeat_interleave(4, 0) + 0.05 * torch.randn(24, IN_FEATURES, generator=g)
    labelled = ItemSet(x, np.repeat(np.arange(6), 4), [str(c) for c in range(6)])
    episodes = evaluate_nway(model, labelled, ways=3, shots=1, episodes=50, seed=0)
    sampled = sample_episodes(labelled.labels, 3, 1, 50, seed=0)
    with torch.no_grad():
        z = model.embed(x)
        matrices = [model.comparator.pairwise(z[sampled.query[e]], z[sampled.support[e, :, 0]]).numpy()
                    for e in range(50)]  # fmt: skip
    correct = []
    for e, values in enumerate(matrices):
        best = np.array([model.comparator.orientation.rank(row)[0] for row in values])
        correct.append((best == sampled.query_class[e]).mean())
    assert episodes["accuracy"] == pytest.approx(np.mean(correct))
    assert classify_episodes(model.comparator, z, sampled).mean() == pytest.approx(np.mean(correct))
