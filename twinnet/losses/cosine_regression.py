"""Cosine-similarity regression to a graded score (SBERT's STS objective)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from twinnet.losses.base import LOSSES, PairLoss, check_score


@LOSSES.register("cosine_regression")
class CosineRegressionLoss(PairLoss):
    """Mean squared error between the pair's cosine similarity and its gold ``score``
    (Reimers & Gurevych 2019, trained on STS-B).

    Inputs:
        similarity: ``(n,)`` cosine similarities (the ``cosine`` comparator's values).

    Labels:
        score: ``(n,)`` float gold similarities in [0, 1] (STS scores / 5).

    Trained from the graded pairs of a pairs file such as STS-B (batch plan ``scored_pairs``).

    Example::

        >>> import torch
        >>> CosineRegressionLoss()(torch.tensor([0.9, 0.1]), torch.tensor([1.0, 0.4]))
        tensor(0.0500)
    """

    input = "similarity"
    target = "score"

    def forward(self, similarity: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(similarity, check_score(score).to(similarity.dtype))
