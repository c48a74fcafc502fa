"""Binary cross-entropy on a probabilistic comparator's score (Koch et al. 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from twinnet.losses.base import LOSSES, PairLoss, check_same


@LOSSES.register("bce")
class BinaryCrossEntropyLoss(PairLoss):
    """``−[s·log p + (1−s)·log(1−p)]`` with ``p = sigmoid(logit)`` = the comparator's probability
    of "same" and ``s = 1`` for same pairs; mean over pairs. Computed from logits for stability.

    Inputs:
        logits: ``(n,)`` from ``comparator.logits`` (``weighted_l1`` or ``mlp``).

    Labels:
        same: ``(n,)`` ``torch.bool``, True where the pair shows the same class.

    Trained from balanced sampled pairs, or the pairs of a pairs file (batch plan ``pairs``).

    Example::

        >>> import torch
        >>> BinaryCrossEntropyLoss()(torch.tensor([0.0]), same=torch.tensor([True]))
        tensor(0.6931)
    """

    input = "logits"

    def forward(self, logits: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        check_same(same)
        return F.binary_cross_entropy_with_logits(logits, same.to(logits.dtype))
