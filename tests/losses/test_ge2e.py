"""GE2E against a hand-computed case and an independent loop implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twinnet.losses import LOSSES, GE2ELoss


def reference(e: np.ndarray, labels: np.ndarray, w: float, b: float) -> float:
    """The paper's definition, one embedding at a time (softmax variant)."""
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    speakers = sorted(set(labels.tolist()))
    total = 0.0
    for i in range(len(e)):
        logits = []
        for k in speakers:
            members = [j for j in range(len(e)) if labels[j] == k and (k != labels[i] or j != i)]
            c = e[members].mean(0)
            logits.append(w * float(e[i] @ c / np.linalg.norm(c)) + b)
        own = speakers.index(labels[i])
        total += -logits[own] + math.log(sum(math.exp(v) for v in logits))
    return total / len(e)


def test_hand_computed_case() -> None:
    # speaker 0: (1,0) and (0.6,0.8); speaker 1: (0,1) twice. w=2, b=-1.
    e = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    loss = GE2ELoss(init_w=2.0, init_b=-1.0)
    # item 0: own centroid (leave-one-out) = (0.6,0.8): cos 0.6; other centroid (0,1): cos 0
    # item 1: own = (1,0): cos 0.6; other: cos 0.8
    # items 2, 3: own = (0,1): cos 1; other centroid = normalised (1.6,0.8)/|..| -> cos 0.8/sqrt(3.2)
    c = 0.8 / math.sqrt(3.2)

    def ce(own: float, other: float) -> float:
        return -own + math.log(math.exp(own) + math.exp(other))

    s = lambda x: 2.0 * x - 1.0  # noqa: E731
    expected = (ce(s(0.6), s(0.0)) + ce(s(0.6), s(0.8)) + 2 * ce(s(1.0), s(c))) / 4
    assert loss(e, labels).item() == pytest.approx(expected, rel=1e-6)


def test_matches_the_loop_reference_and_learns_w_and_b() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(12, 5)).astype(np.float32)
    labels = np.repeat([3, 7, 9], 4)
    loss = LOSSES.build("ge2e", {"init_w": 10.0, "init_b": -5.0})
    x = torch.from_numpy(e).requires_grad_()
    value = loss(x, torch.from_numpy(labels))
    assert value.item() == pytest.approx(reference(e, labels, 10.0, -5.0), rel=1e-5)
    value.backward()
    assert loss.w.grad is not None and loss.b.grad is not None and x.grad is not None


def test_contrast_variant_and_bad_batches() -> None:
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss = GE2ELoss(init_w=1.0, init_b=0.0, variant="contrast")
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert loss(e, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(1 - sig(1.0) + sig(0.0), rel=1e-6)
    with pytest.raises(ValueError, match="at least two utterances"):
        loss(e[:3], torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="variant"):
        GE2ELoss(variant="other")  # type: ignore[arg-type]
    assert GE2ELoss.batch_plan == "pk"
