"""Each loss against an independent reference: hand-written NumPy, and pytorch-metric-learning."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning import distances, losses, miners, reducers

from twinnet.compare import MahalanobisDistance
from twinnet.losses import BinaryCrossEntropyLoss, ContrastiveLoss, TripletLoss


def test_contrastive_matches_hadsell_formula():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 2, 50)
    same = rng.random(50) < 0.5
    margin = 1.3
    y = (~same).astype(float)  # Hadsell's y: 1 for dissimilar pairs
    expected = np.mean((1 - y) * d**2 + y * np.maximum(0, margin - d) ** 2)
    got = ContrastiveLoss(margin=margin)(torch.tensor(d), torch.tensor(same))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_contrastive_hand_values():
    loss = ContrastiveLoss(margin=1.0)
    # same at d=0.5 → 0.25; different at d=0.2 → 0.64; different beyond the margin → 0
    got = loss(torch.tensor([0.5, 0.2, 1.5]), torch.tensor([True, False, False]))
    assert got.item() == pytest.approx((0.25 + 0.64 + 0.0) / 3)


@pytest.mark.parametrize("bad", [torch.tensor([1, 0]), torch.tensor([1.0, 0.0])])
def test_contrastive_refuses_numeric_labels(bad):
    with pytest.raises(TypeError, match="torch.bool"):
        ContrastiveLoss()(torch.tensor([0.1, 0.2]), bad)


def test_bce_matches_reference():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, 40)
    same = rng.random(40) < 0.5
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(same * np.log(p) + (~same) * np.log(1 - p))
    got = BinaryCrossEntropyLoss()(torch.tensor(logits), torch.tensor(same))
    assert got.item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(TypeError):
        BinaryCrossEntropyLoss()(torch.tensor(logits), torch.tensor(same.astype(int)))


def _batch(seed=0, n=24, dim=6, classes=5):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, dim, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    return emb, labels


def _lp(power=1):
    return distances.LpDistance(normalize_embeddings=False, p=2, power=power)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("squared", [False, True])
def test_triplet_all_matches_pml(seed, squared):
    emb, labels = _batch(seed)
    margin = 0.5 if not squared else 2.0
    ref = losses.TripletMarginLoss(margin=margin, distance=_lp(2 if squared else 1))(emb, labels)
    ours = TripletLoss(margin, "all", "squared_euclidean" if squared else "euclidean", reduction="mean_nonzero")
    torch.testing.assert_close(ours(emb, labels), ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("squared", [False, True])
def test_triplet_batch_hard_matches_pml(seed, squared):
    emb, labels = _batch(seed)
    dist = _lp(2 if squared else 1)
    triplets = miners.BatchHardMiner(distance=dist)(emb, labels)
    ref = losses.TripletMarginLoss(margin=0.3, distance=dist, reducer=reducers.MeanReducer())(emb, labels, triplets)
    ours = TripletLoss(0.3, "batch_hard", "squared_euclidean" if squared else "euclidean")(emb, labels)
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_semi_hard_matches_pml(seed):
    emb, labels = _batch(seed)
    dist = _lp(1)
    triplets = miners.TripletMarginMiner(margin=0.8, type_of_triplets="semihard", distance=dist)(emb, labels)
    assert len(triplets[0]) > 0
    ref = losses.TripletMarginLoss(margin=0.8, distance=dist, reducer=reducers.MeanReducer())(emb, labels, triplets)
    torch.testing.assert_close(TripletLoss(0.8, "semi_hard")(emb, labels), ref)


def test_triplet_hand_example():
    emb = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # every anchor: hardest positive at 1, hardest negative at 1 → loss = margin
    assert TripletLoss(0.2, "batch_hard")(emb, labels).item() == pytest.approx(0.2, abs=1e-6)


def test_triplet_without_valid_triplets_is_zero_and_differentiable():
    emb = torch.randn(4, 3, requires_grad=True)
    loss = TripletLoss(0.2, "batch_hard")(emb, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_triplet_with_model_comparator_trains_the_metric():
    emb, labels = _batch(3, dim=4)
    comp = MahalanobisDistance(dim=4).double()
    loss = TripletLoss(0.5, "all", distance="comparator", reduction="mean_nonzero")
    # with L = I the Mahalanobis distance is the Euclidean one
    torch.testing.assert_close(loss(emb, labels, comp), TripletLoss(0.5, "all", reduction="mean_nonzero")(emb, labels))
    loss(emb, labels, comp).backward()
    assert comp.L.grad is not None and comp.L.grad.abs().sum() > 0
