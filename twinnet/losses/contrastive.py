"""Contrastive loss (Hadsell, Chopra & LeCun 2006)."""

from __future__ import annotations

import torch

from twinnet.losses.base import LOSSES, PairLoss, check_same, number


@LOSSES.register("contrastive")
class ContrastiveLoss(PairLoss):
    """``L = d²`` for same pairs, ``L = max(0, margin − d)²`` for different pairs; mean over pairs.

    This is Hadsell et al.'s ``(1−y)·d² + y·max(0, m−d)²`` where their ``y = 1`` marks a
    *dissimilar* pair. twinnet takes ``same: BoolTensor`` instead (True = same class), and
    refuses integer or float labels, so the convention cannot be flipped by accident.

    Inputs:
        distance: ``(n,)`` distances from a distance comparator (e.g. ``euclidean``).

    Labels:
        same: ``(n,)`` ``torch.bool``, True where the pair shows the same class.

    Trained from balanced sampled pairs, or the pairs of a pairs file (batch plan ``pairs``).

    The loss only pushes different pairs out to ``margin``, so embeddings can still grow without
    bound for same pairs' benefit: train with weight decay or ``normalize: true``.

    Example::

        >>> import torch
        >>> loss = ContrastiveLoss(margin=1.0)
        >>> loss(torch.tensor([0.5, 0.2]), same=torch.tensor([True, False]))
        tensor(0.4450)
    """

    input = "distance"

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = number(margin, "margin")

    def forward(self, distance: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        check_same(same)
        positive = distance.pow(2)
        negative = (self.margin - distance).clamp_min(0).pow(2)
        return torch.where(same, positive, negative).mean()
