"""ArcFace and CosFace against pytorch-metric-learning's implementations, given the same class centres."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twinnet.data.items import from_arrays
from twinnet.losses import LOSSES, ArcFaceLoss, CosFaceLoss

pml = pytest.importorskip("pytorch_metric_learning.losses")


def _batch(n: int = 32, dim: int = 16, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize(("margin", "scale"), [(0.5, 30.0), (0.3, 64.0), (0.1, 8.0)])
def test_arcface_equals_pytorch_metric_learning(margin: float, scale: float) -> None:
    emb, labels = _batch()
    ours = ArcFaceLoss(num_classes=10, embedding_dim=16, margin=margin, scale=scale)
    ref = pml.ArcFaceLoss(num_classes=10, embedding_size=16, margin=math.degrees(margin), scale=scale)
    with torch.no_grad():
        ref.W.copy_(ours.weight.T)  # PML keeps centres as columns, twinnet as rows
    assert ours(emb, labels).item() == pytest.approx(ref(emb, labels).item(), rel=1e-5)
    plain = ArcFaceLoss(num_classes=10, embedding_dim=16, margin=margin, scale=scale, monotonic=False)
    with torch.no_grad():
        plain.weight.copy_(ours.weight)
    assert plain(emb, labels).item() == pytest.approx(ref(emb, labels).item(), rel=1e-5)


@pytest.mark.parametrize(("margin", "scale"), [(0.35, 30.0), (0.2, 64.0)])
def test_cosface_equals_pytorch_metric_learning(margin: float, scale: float) -> None:
    emb, labels = _batch(seed=1)
    ours = CosFaceLoss(num_classes=10, embedding_dim=16, margin=margin, scale=scale)
    ref = pml.CosFaceLoss(num_classes=10, embedding_size=16, margin=margin, scale=scale)
    with torch.no_grad():
        ref.W.copy_(ours.weight.T)
    assert ours(emb, labels).item() == pytest.approx(ref(emb, labels).item(), rel=1e-5)


def test_gradients_equal_the_reference() -> None:
    emb, labels = _batch(seed=2)
    ours = CosFaceLoss(num_classes=10, embedding_dim=16)
    ref = pml.CosFaceLoss(num_classes=10, embedding_size=16, margin=0.35, scale=30.0)
    with torch.no_grad():
        ref.W.copy_(ours.weight.T)
    a, b = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    ours(a, labels).backward()
    ref(b, labels).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    assert torch.allclose(ours.weight.grad, ref.W.grad.T, atol=1e-6)


def test_monotonic_arcface_differs_only_past_pi_minus_m() -> None:
    loss = ArcFaceLoss(num_classes=2, embedding_dim=2, margin=0.5, monotonic=True)
    plain = ArcFaceLoss(num_classes=2, embedding_dim=2, margin=0.5, monotonic=False)
    cos = torch.tensor([[0.2], [-0.95]])  # angles 1.37 and 2.83 rad; π − m = 2.64
    a, b = loss.target_logit(cos), plain.target_logit(cos)
    assert a[0].item() == pytest.approx(b[0].item())
    assert a[1].item() < cos[1].item() and a[1].item() != pytest.approx(b[1].item())  # no reward for worse angles


def test_prepare_sizes_centres_from_the_training_classes_and_label_convention() -> None:
    items = from_arrays(np.zeros((6, 1, 4, 4), np.uint8), ["x", "y", "z", "x", "y", "q"])
    loss = LOSSES.build("arcface", {})
    assert loss.num_classes is None and loss.batch_plan == "items"
    loss.prepare(items, 8)
    assert loss.num_classes == 4 and loss.weight.shape == (4, 8)
    with pytest.raises(ValueError, match="class ids"):
        loss(torch.randn(2, 8), torch.tensor([0, 4]))  # labels are class ids in [0, num_classes)
    with pytest.raises(ValueError, match="together"):
        CosFaceLoss(num_classes=3)
