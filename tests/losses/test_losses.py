"""Each loss against an independent reference: hand-written NumPy, and pytorch-metric-learning."""

import doctest
import importlib

import numpy as np
import pytest
import torch
from pytorch_metric_learning import distances, losses, miners, reducers

from twinnet.compare import CosineSimilarity, EuclideanDistance, MahalanobisDistance, WeightedL1
from twinnet.config import parse_config
from twinnet.errors import ConfigError
from twinnet.losses import (
    LOSSES,
    BinaryCrossEntropyLoss,
    ContrastiveLoss,
    CoSENTLoss,
    MultipleNegativesRankingLoss,
    OnlineContrastiveLoss,
    TripletLoss,
)
from twinnet.model import HalfTwinNetwork, TwinNetwork
from twinnet.train import build_loss
from twinnet.training import BATCH_PLANS, LabelledBatch, PairBatch


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


# -- every loss: its docstring example runs, bad arguments are plain ValueErrors ---------------------


@pytest.mark.parametrize("name", ["base", "bce", "contrastive", "cosent", "cosine_regression", "online_contrastive",
                                  "ranking", "triplet"])  # fmt: skip
def test_docstring_examples_hold(name):
    module = importlib.import_module(f"twinnet.losses.{name}")
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_every_registered_loss_documents_inputs_labels_and_an_example():
    for name, cls in LOSSES.items():
        if name.startswith("test_"):
            continue  # registered by other tests
        doc = cls.__doc__ or ""
        assert "Inputs:" in doc and "Labels:" in doc and ">>> " in doc, name
        assert cls.batch_plan in BATCH_PLANS, name


@pytest.mark.parametrize(("factory", "kwargs", "match"), [
    (ContrastiveLoss, {"margin": -1.0}, "margin must be greater than 0"),
    (ContrastiveLoss, {"margin": "wide"}, "margin must be a number"),
    (TripletLoss, {"margin": -0.1}, "margin must be at least 0"),
    (TripletLoss, {"mining": "hardest"}, "mining: 'hardest' is not one of all, batch_hard, semi_hard"),
    (TripletLoss, {"distance": "cosine"}, "distance: 'cosine' is not one of"),
    (TripletLoss, {"reduction": "sum"}, "reduction: 'sum' is not one of mean, mean_nonzero"),
    (OnlineContrastiveLoss, {"reduction": "max"}, "reduction"),
    (CoSENTLoss, {"scale": 0}, "scale must be greater than 0"),
    (MultipleNegativesRankingLoss, {"symmetric": "yes"}, "symmetric must be true or false"),
])  # fmt: skip
def test_bad_constructor_arguments_are_plain_value_errors(factory, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        factory(**kwargs)
    assert not isinstance(err.value, ConfigError)


def test_the_registry_names_the_config_field():
    with pytest.raises(ConfigError, match=r"^loss\.params \(loss 'triplet'\): mining: 'x' is not one of"):
        build_loss(parse_config({"loss": {"name": "triplet", "params": {"mining": "x"}}}))
    with pytest.raises(ConfigError, match=r"loss\.params \(loss 'triplet'\): unknown parameter\(s\) margn"):
        build_loss(parse_config({"loss": {"name": "triplet", "params": {"margn": 0.2}}}))


# -- compute: the loss from the model and a typed batch ---------------------------------------------


def _twin(half=False):
    torch.manual_seed(0)
    if half:
        return HalfTwinNetwork(torch.nn.Linear(4, 3), torch.nn.Linear(4, 3), EuclideanDistance())
    return TwinNetwork(torch.nn.Linear(4, 3), EuclideanDistance())


@pytest.mark.parametrize("half", [False, True])
def test_pair_loss_compute_embeds_each_side_with_its_encoder(half):
    model = _twin(half)
    x_a, x_b, same = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([True, False] * 3)
    loss = ContrastiveLoss(1.0)
    got = loss.compute(model, PairBatch(x_a, x_b, same))
    expected = loss(model.comparator(model.embed(x_a, "a"), model.embed(x_b, "b")), same)
    torch.testing.assert_close(got, expected)


def test_bce_compute_uses_logits():
    torch.manual_seed(0)
    model = TwinNetwork(torch.nn.Linear(4, 3), WeightedL1(3))
    x_a, x_b, same = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([True, False, True, False, True])
    got = BinaryCrossEntropyLoss().compute(model, PairBatch(x_a, x_b, same))
    expected = BinaryCrossEntropyLoss()(model.comparator.logits(model.embed(x_a), model.embed(x_b)), same)
    torch.testing.assert_close(got, expected)


def test_embedding_loss_compute_weighs_class_and_instance_terms():
    model = _twin()
    x, labels = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    instances = torch.arange(4).repeat(2)
    loss = TripletLoss(0.5, "all")
    z = model.embed(x)
    got = loss.compute(model, LabelledBatch(x, labels, 0.3, instances, 2.0))
    torch.testing.assert_close(got, 0.3 * loss(z, labels) + 2.0 * loss(z, instances))
    torch.testing.assert_close(loss.compute(model, LabelledBatch(x, labels)), loss(z, labels))


def test_ranking_loss_compute_scores_the_batch_grid():
    torch.manual_seed(0)
    model = TwinNetwork(torch.nn.Linear(4, 3), CosineSimilarity())
    x_a, x_b = torch.randn(5, 4), torch.randn(5, 4)
    loss = MultipleNegativesRankingLoss()
    got = loss.compute(model, PairBatch(x_a, x_b, torch.ones(5, dtype=torch.bool)))
    torch.testing.assert_close(got, loss(model.embed(x_a), model.embed(x_b), model.comparator))
