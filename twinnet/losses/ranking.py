"""Multiple-negatives ranking loss: in-batch negatives for query→document matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from twinnet.compare import Comparator
from twinnet.losses.base import LOSSES, RankingLoss, number


@LOSSES.register("multiple_negatives_ranking")
class MultipleNegativesRankingLoss(RankingLoss):
    """Each query ``a_i`` must pick its own document ``b_i`` out of all documents of the batch:
    cross-entropy over ``scale · sim(a_i, b_j)`` with target ``j = i`` (Henderson et al. 2017;
    SBERT's ``MultipleNegativesRankingLoss``). Needs only positive pairs; bigger batches give more
    (and harder) negatives.

    Inputs:
        z_a: ``(n, d)`` query embeddings; z_b: ``(n, d)`` embeddings of their positive documents.
        comparator: the model's comparator; its pairwise similarity scores the ``n × n`` grid.

    Labels:
        none: row ``i`` of ``z_a`` belongs with row ``i`` of ``z_b``; all other rows are negatives.

    Trained from the positive (same) pairs of a pairs file (batch plan ``positive_pairs``).

    Args:
        scale: the inverse temperature (20 suits cosine similarity).
        symmetric: also pick each document's query (adds the transposed loss, halves the sum).

    Example::

        >>> import torch, twinnet
        >>> z = torch.nn.functional.normalize(torch.eye(3), dim=1)
        >>> MultipleNegativesRankingLoss()(z, z, twinnet.CosineSimilarity()).item() < 1e-6
        True
    """

    def __init__(self, scale: float = 20.0, symmetric: bool = False) -> None:
        super().__init__()
        self.scale = number(scale, "scale")
        if not isinstance(symmetric, bool):
            raise ValueError(f"symmetric must be true or false, not {symmetric!r}")
        self.symmetric = symmetric

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor, comparator: Comparator) -> torch.Tensor:
        logits = self.scale * comparator.pairwise_similarity(z_a, z_b)
        target = torch.arange(len(z_a), device=z_a.device)
        loss = F.cross_entropy(logits, target)
        if self.symmetric:
            loss = (loss + F.cross_entropy(logits.T, target)) / 2
        return loss
