"""Text-pair losses and metrics against independent (NumPy / brute-force / scikit-learn) references."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

import twinnet.losses.angle
import twinnet.losses.cosent
import twinnet.losses.cosine_regression
import twinnet.losses.online_contrastive
import twinnet.losses.ranking
from twinnet.compare import CosineDistance, CosineSimilarity
from twinnet.errors import ConfigError
from twinnet.losses import (
    LOSSES,
    CoSENTLoss,
    CosineRegressionLoss,
    MultipleNegativesRankingLoss,
    OnlineContrastiveLoss,
)
from twinnet.metrics import calc_best_f1, calc_correlations, calc_retrieval


@pytest.mark.parametrize(
    "module",
    [
        twinnet.losses.angle,
        twinnet.losses.cosent,
        twinnet.losses.cosine_regression,
        twinnet.losses.online_contrastive,
        twinnet.losses.ranking,
    ],
)
def test_docstring_examples_hold(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def cosent_reference(cos: np.ndarray, score: np.ndarray, scale: float) -> float:
    terms = [scale * (cos[j] - cos[i]) for i, j in itertools.product(range(len(cos)), repeat=2) if score[i] > score[j]]
    return math.log(1.0 + sum(math.exp(t) for t in terms))


def test_cosent_matches_brute_force():
    rng = np.random.default_rng(0)
    cos = rng.uniform(-1, 1, 12)
    score = rng.integers(0, 6, 12) / 5.0  # ties must contribute nothing
    got = CoSENTLoss(scale=20.0)(torch.tensor(cos), torch.tensor(score)).item()
    assert got == pytest.approx(cosent_reference(cos, score, 20.0), rel=1e-9)
    # all scores equal: no ordered pair, log(1) = 0
    assert CoSENTLoss()(torch.tensor(cos), torch.full((12,), 0.4, dtype=torch.float64)).item() == 0.0


def test_cosent_gradient_orders_similarities():
    cos = torch.tensor([0.2, 0.8], requires_grad=True)  # wrong order: pair 0 is the more similar
    CoSENTLoss()(cos, torch.tensor([1.0, 0.0])).backward()
    assert cos.grad[0] < 0 < cos.grad[1]


def test_cosine_regression_is_mse():
    cos, score = torch.tensor([0.9, -0.2, 0.5]), torch.tensor([1.0, 0.0, 0.3])
    expected = np.mean((cos.numpy() - score.numpy()) ** 2)
    assert CosineRegressionLoss()(cos, score).item() == pytest.approx(expected)


def test_score_losses_refuse_labels():
    with pytest.raises(TypeError, match="float tensor"):
        CoSENTLoss()(torch.tensor([0.1, 0.2]), torch.tensor([True, False]))


def mnrl_reference(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = scale * a @ b.T
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-np.mean(np.diag(log_softmax)))


def test_multiple_negatives_ranking_matches_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    loss = MultipleNegativesRankingLoss(scale=20.0)
    got = loss(torch.tensor(a), torch.tensor(b), CosineSimilarity()).item()
    assert got == pytest.approx(mnrl_reference(a, b, 20.0), rel=1e-9)
    both = MultipleNegativesRankingLoss(scale=20.0, symmetric=True)(
        torch.tensor(a), torch.tensor(b), CosineSimilarity()
    )
    assert both.item() == pytest.approx((mnrl_reference(a, b, 20.0) + mnrl_reference(b, a, 20.0)) / 2, rel=1e-9)


def online_contrastive_reference(d: np.ndarray, same: np.ndarray, margin: float) -> float:
    pos, neg = d[same], d[~same]
    hard_pos = [x for x in pos if x > neg.min()]
    hard_neg = [x for x in neg if x < pos.max()]
    return sum(x * x for x in hard_pos) + sum(max(0.0, margin - x) ** 2 for x in hard_neg)


def test_online_contrastive_selects_hard_pairs():
    rng = np.random.default_rng(2)
    d = rng.uniform(0, 1, 20)
    same = rng.random(20) < 0.5
    got = OnlineContrastiveLoss(margin=0.5, reduction="sum")(torch.tensor(d), torch.tensor(same)).item()
    assert got == pytest.approx(online_contrastive_reference(d, same, 0.5))
    mean = OnlineContrastiveLoss(margin=0.5)(torch.tensor(d), torch.tensor(same)).item()
    assert mean == pytest.approx(got / 20)
    # perfectly separated batch: positives all closer than negatives beyond the margin -> no loss
    easy = torch.tensor([0.0, 0.1, 0.9, 1.0])
    assert OnlineContrastiveLoss(margin=0.5)(easy, torch.tensor([True, True, False, False])).item() == 0.0


def test_losses_check_their_comparator():
    with pytest.raises(ConfigError, match="similarity comparator"):
        LOSSES.build("cosent", {}).check_comparator(CosineDistance())
    with pytest.raises(ConfigError, match="distance comparator"):
        LOSSES.build("online_contrastive", {}).check_comparator(CosineSimilarity())
    LOSSES.build("online_contrastive", {}).check_comparator(CosineDistance())


def test_cosine_distance_comparator():
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    cd = CosineDistance()
    torch.testing.assert_close(cd(a, b), 1 - torch.nn.functional.cosine_similarity(a, b))
    torch.testing.assert_close(cd.pairwise(a, b).diagonal(), cd(a, b))
    assert cd.is_distance


def test_best_f1_matches_brute_force():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=200), 1)  # ties
    same = rng.random(200) < 0.4
    best, threshold = calc_best_f1(scores, same)
    brute = max(f1_score(same, scores >= t) for t in np.unique(scores))
    assert best == pytest.approx(brute)
    assert f1_score(same, scores >= threshold) == pytest.approx(best)


def test_retrieval_metrics_by_hand():
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.0, 0.1, 0.2]])
    relevant = [{0}, {0, 2}, {1}]
    m = calc_retrieval(sim, relevant, ks=(1, 2), mrr_at=2)
    # q0: top [0,2] -> hit at rank 1; q1: top [1,0] -> 1 of 2 relevant in top 2, first hit rank 2;
    # q2: top [2,1] -> hit at rank 2
    assert m["recall@1"] == pytest.approx((1 + 0 + 0) / 3)
    assert m["recall@2"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["mrr@2"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_correlations():
    x = np.arange(10.0)
    c = calc_correlations(x, x**3)
    assert c["spearman"] == pytest.approx(1.0) and c["pearson"] < 1.0


def test_text_pair_plans_group_by_length_and_carry_scores():
    from twinnet.config import TrainConfig
    from twinnet.data.pairs import Pairs
    from twinnet.data.text import text_items
    from twinnet.training import PairBatch, build_plan
    from twinnet.training.plans import group_by_length

    rng = np.random.default_rng(0)
    texts = text_items([" ".join(["w"] * int(n)) for n in rng.integers(1, 40, 30)])
    a, b = np.arange(0, 30, 2), np.arange(1, 30, 2)
    score = rng.random(15).astype(np.float32)
    pairs = Pairs(a, b, score >= 0.5, score)
    plan = build_plan("scored_pairs", texts, pairs, TrainConfig(batch_size=4, seed=3))
    batches = [job() for job in plan.epoch_jobs(2)]
    assert plan.steps_per_epoch == len(batches) == 4
    assert all(isinstance(x, PairBatch) and isinstance(x.inputs_a, list) for x in batches)
    # the order the trainer always used: a seeded shuffle, then length grouping with the same generator
    order_rng = np.random.default_rng([3, 6, 2])
    lengths = np.array([len(t) for t in texts.data])
    order = group_by_length(order_rng.permutation(15), np.maximum(lengths[a], lengths[b]), 4, order_rng)
    assert batches[0].inputs_a == texts.load(a[order[:4]])
    torch.testing.assert_close(torch.cat([x.score for x in batches]), torch.from_numpy(score[order]))
    positives = build_plan("positive_pairs", texts, pairs, TrainConfig(batch_size=4))
    assert all(bool(x.same.all()) for x in (job() for job in positives.epoch_jobs(0)))
    assert positives.steps_per_epoch == -(-int(pairs.same.sum()) // 4)
    with pytest.raises(ConfigError, match="learns from graded scores"):
        build_plan("scored_pairs", texts, Pairs(a, b, score >= 0.5), TrainConfig(), loss_name="CoSENTLoss")


def test_angle_similarity_is_the_normalised_complex_product() -> None:
    # independent form: Σ Re + Im of (a + ib)·conj(c + id) / (‖z_a‖ ‖z_b‖), absolute value
    from twinnet.losses.angle import angle_similarity

    rng = np.random.default_rng(0)
    z_a, z_b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    ca, cb = z_a[:, :4] + 1j * z_a[:, 4:], z_b[:, :4] + 1j * z_b[:, 4:]
    product = ca * np.conj(cb) / (np.linalg.norm(z_a, axis=1) * np.linalg.norm(z_b, axis=1))[:, None]
    expected = np.abs(product.real.sum(1) + product.imag.sum(1))
    got = angle_similarity(torch.tensor(z_a), torch.tensor(z_b)).numpy()
    assert np.allclose(got, expected, rtol=1e-9)
    # scale-free on either side, like the cosine
    assert np.allclose(angle_similarity(torch.tensor(3 * z_a), torch.tensor(z_b / 7)).numpy(), expected, rtol=1e-9)
    with pytest.raises(ValueError, match="odd"):
        angle_similarity(torch.ones(2, 3), torch.ones(2, 3))


def test_angle_loss_is_cosent_on_cosine_plus_weighted_cosent_on_angle() -> None:
    from twinnet.losses.angle import AnglELoss, angle_similarity

    rng = np.random.default_rng(1)
    z_a, z_b = torch.tensor(rng.normal(size=(10, 6))), torch.tensor(rng.normal(size=(10, 6)))
    score = torch.tensor(rng.integers(0, 6, 10) / 5.0)
    cos = torch.nn.functional.cosine_similarity(z_a, z_b)
    angle = angle_similarity(z_a, z_b).numpy()
    expected = cosent_reference(cos.numpy(), score.numpy(), 20.0) + 0.5 * cosent_reference(angle, score.numpy(), 20.0)
    assert AnglELoss(angle_weight=0.5).pairs(cos, z_a, z_b, score).item() == pytest.approx(expected, rel=1e-9)
    assert AnglELoss(angle_weight=0.0).pairs(cos, z_a, z_b, score).item() == pytest.approx(
        cosent_reference(cos.numpy(), score.numpy(), 20.0), rel=1e-9)  # fmt: skip
    assert LOSSES.get("angle") is AnglELoss and AnglELoss.batch_plan == "scored_pairs"
