"""Online contrastive loss: the contrastive loss on the hard pairs of a batch only."""

from __future__ import annotations

import torch

from twinnet.losses.base import LOSSES, PairLoss, check_same, number, one_of


@LOSSES.register("online_contrastive")
class OnlineContrastiveLoss(PairLoss):
    """Contrastive loss on the pairs of a batch that are hard: same pairs farther apart than the
    closest different pair, and different pairs closer than the farthest same pair. Easy pairs,
    which the plain loss averages in with zero loss, no longer dilute the gradient.

    ``L = Σ_hard-same d² + Σ_hard-different max(0, margin − d)²``, divided by the number of pairs in
    the batch (``reduction="mean"``) or not (``"sum"``, as sentence-transformers does).

    Inputs:
        distance: ``(n,)`` distances, e.g. from the ``cosine_distance`` comparator (margin 0.5 suits it).

    Labels:
        same: ``(n,)`` ``torch.bool``, True for paraphrases / duplicates / same-class pairs.

    Trained from balanced sampled pairs, or the pairs of a pairs file (batch plan ``pairs``).

    Example::

        >>> import torch
        >>> loss = OnlineContrastiveLoss(margin=0.5)   # hard: same at 0.6 (> 0.3), different at 0.3 (< 0.6)
        >>> loss(torch.tensor([0.1, 0.6, 0.3, 0.8]), same=torch.tensor([True, True, False, False]))
        tensor(0.1000)
    """

    input = "distance"

    def __init__(self, margin: float = 0.5, reduction: str = "mean") -> None:
        super().__init__()
        self.margin = number(margin, "margin")
        self.reduction = one_of(reduction, "reduction", ("mean", "sum"))

    def forward(self, distance: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        check_same(same)
        pos, neg = distance[same], distance[~same]
        d = distance.detach()
        # With only one kind of pair in the batch nothing is "hard" by comparison: use all of them.
        hard_pos = pos[d[same] > d[~same].min()] if len(neg) else pos
        hard_neg = neg[d[~same] < d[same].max()] if len(pos) else neg
        total = hard_pos.pow(2).sum() + (self.margin - hard_neg).clamp_min(0).pow(2).sum()
        return total / len(distance) if self.reduction == "mean" else total
