"""The label-free losses against independent references: pytorch-metric-learning's NTXentLoss and
VICRegLoss, and hand-computed cases (written out here, loop by loop) for Barlow Twins, SimSiam and
BYOL, whose reference library (lightly) does not install against this torch build."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml

from twinnet.data.items import ItemSet
from twinnet.encoders import MLPEncoder
from twinnet.errors import ConfigError
from twinnet.losses import LOSSES, BarlowTwinsLoss, BYOLLoss, MomentumTower, NTXentLoss, SimSiamLoss, VICRegLoss
from twinnet.model import TwinNetwork
from twinnet.training.batch import ViewsBatch


def _views(n: int = 12, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=g)
    return z_a, z_a + 0.3 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_ntxent_equals_pytorch_metric_learning(temperature: float) -> None:
    z_a, z_b = _views()
    ours = NTXentLoss(temperature=temperature)(z_a, z_b)
    labels = torch.arange(len(z_a)).repeat(2)
    theirs = pml.NTXentLoss(temperature=temperature)(torch.cat([z_a, z_b]), labels)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_ntxent_queue_adds_past_views_as_negatives() -> None:
    z_a, z_b = _views(n=4, d=3)
    old_a, old_b = _views(n=4, d=3, seed=1)
    loss = NTXentLoss(temperature=0.2, queue_size=8)
    loss(old_a, old_b)  # fills the queue with 8 normalised views
    got = loss(z_a, z_b)
    # hand-computed: every view against its partner, the other 6 views and the 8 queued ones
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    queue = F.normalize(torch.cat([old_a, old_b]), dim=1)
    total = 0.0
    for i in range(8):
        partner = (i + 4) % 8
        others = [j for j in range(8) if j != i]
        logits = [float(z[i] @ z[j]) / 0.2 for j in others] + [float(z[i] @ q) / 0.2 for q in queue]
        positive = float(z[i] @ z[partner]) / 0.2
        total += -positive + math.log(sum(math.exp(v) for v in logits))
    assert got.item() == pytest.approx(total / 8, rel=1e-5)
    assert len(loss.queue) == 8  # the newest 8 kept


def test_vicreg_equals_pytorch_metric_learning() -> None:
    z_a, z_b = _views(n=32, d=8)
    ours = VICRegLoss(invariance=25, variance=25, covariance=1)(z_a, z_b)
    theirs = pml.VICRegLoss(invariance_lambda=25, variance_mu=25, covariance_v=1)(z_a, ref_emb=z_b)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_barlow_twins_by_hand() -> None:
    z_a, z_b = _views(n=10, d=4)
    lam = 0.05
    got = BarlowTwinsLoss(off_diagonal=lam, eps=1e-12)(z_a, z_b)
    a = z_a.double().numpy()
    b = z_b.double().numpy()
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    expected = 0.0
    for i in range(4):
        for j in range(4):
            c = sum(a[k, i] * b[k, j] for k in range(10)) / 10
            expected += (1 - c) ** 2 if i == j else lam * c**2
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_simsiam_formula_and_stop_gradient() -> None:
    loss = SimSiamLoss(projector=[6], predictor=[3, 6])
    loss.prepare(ItemSet(torch.zeros(2, 1), np.zeros(2), ["x"]), 6)
    z_a, z_b = (t.requires_grad_() for t in _views())
    p_a, p_b = (t.requires_grad_() for t in _views(seed=3))
    got = loss.symmetric(p_a, p_b, z_a, z_b)
    expected = -0.5 * (F.cosine_similarity(p_a, z_b).mean() + F.cosine_similarity(p_b, z_a).mean())
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    got.backward()
    assert z_a.grad is None and z_b.grad is None  # the targets are held fixed
    assert p_a.grad is not None and p_a.grad.abs().sum() > 0


def _twin(d_in: int = 5) -> TwinNetwork:
    torch.manual_seed(0)
    return TwinNetwork(MLPEncoder(in_features=d_in, hidden=(8,), embedding_dim=4), "cosine", normalize=True)


def test_byol_target_never_receives_gradients_and_follows_the_average() -> None:
    model = _twin()
    loss = BYOLLoss(momentum=0.9, projector=[6, 3], predictor=[5, 3])
    loss.prepare(ItemSet(torch.zeros(2, 5), np.zeros(2), ["x"]), 4)
    loss.attach(model)
    assert loss.target is not None
    target_params = list(loss.target.parameters())
    assert target_params and all(not p.requires_grad for p in target_params)
    optimiser = torch.optim.SGD(
        [*model.parameters(), *loss.projector.parameters(), *loss.predictor.parameters()], lr=0.5
    )
    before = [p.detach().clone() for p in target_params]
    x = torch.randn(16, 5)
    value = loss.compute(model, ViewsBatch(x + 0.1 * torch.randn_like(x), x, torch.full((16,), -1)))
    value.backward()
    assert all(p.grad is None for p in target_params)
    optimiser.step()
    online = [*model.encoder.parameters(), *loss.projector.parameters()]
    loss.after_step(model)
    for old, new, now in zip(before, target_params, online, strict=True):
        assert torch.allclose(new, 0.9 * old + 0.1 * now.detach(), atol=1e-6)
    # the target's weights are not among the loss's trainable parameters, nor the model's
    trainable = {id(p) for p in loss.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in target_params}
    assert not {id(p) for p in model.parameters()} & {id(p) for p in loss.parameters()}


def test_momentum_tower_rejects_momentum_one() -> None:
    with pytest.raises(ValueError, match="below 1"):
        BYOLLoss(momentum=1.0)


def test_views_losses_refuse_a_half_twin() -> None:
    from twinnet.model import HalfTwinNetwork

    half = HalfTwinNetwork(MLPEncoder(in_features=5, embedding_dim=4), MLPEncoder(in_features=5, embedding_dim=4))
    with pytest.raises(ConfigError, match="train a twin"):
        NTXentLoss().attach(half)


@pytest.mark.parametrize("name", ["ntxent", "simsiam", "byol", "barlow_twins", "vicreg"])
def test_registered_with_the_views_plan_and_documented(name: str) -> None:
    factory = LOSSES.get(name)
    assert factory.batch_plan == "views"
    doc = factory.__doc__ or ""
    assert "Inputs:" in doc and "Labels:" in doc and ">>>" in doc


@pytest.mark.parametrize("name", ["ntxent", "barlow_twins", "vicreg"])
def test_collapsed_views_cost_more_than_spread_ones(name: str) -> None:
    z_a, z_b = _views(n=32, d=8)
    loss = LOSSES.build(name, {})
    collapsed = torch.ones(32, 8) + 1e-3 * torch.randn(32, 8)
    assert loss(collapsed, collapsed + 1e-3 * torch.randn(32, 8)) > loss(z_a, z_b)


def test_momentum_tower_copies_buffers() -> None:
    online = torch.nn.BatchNorm1d(3)
    tower = MomentumTower(online, 0.5)
    online.running_mean.fill_(2.0)
    tower.update(online)
    assert torch.equal(tower.target.running_mean, online.running_mean)
