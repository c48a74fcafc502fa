"""CoSENT: a ranking loss on the cosine similarities of graded pairs (Su 2022)."""

from __future__ import annotations

import torch

from twinnet.losses.base import LOSSES, PairLoss, check_score, number


@LOSSES.register("cosent")
class CoSENTLoss(PairLoss):
    """For every two pairs of the batch where pair ``i`` has a higher gold score than pair ``j``,
    penalise ``cos_j > cos_i``:

    ``L = log(1 + Σ_{score_i > score_j} exp(scale · (cos_j − cos_i)))``

    Only the order of the similarities matters, which is what Spearman correlation measures, so it
    usually beats regressing the cosine onto the score.

    Inputs:
        similarity: ``(n,)`` cosine similarities (the ``cosine`` comparator's values).

    Labels:
        score: ``(n,)`` float gold similarities (any scale; only their order is used).

    Trained from the graded pairs of a pairs file such as STS-B (batch plan ``scored_pairs``).

    Example::

        >>> import torch
        >>> loss = CoSENTLoss(scale=20.0)
        >>> loss(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.4])).item() < 1e-5   # right order
        True
        >>> round(loss(torch.tensor([0.3, 0.5]), torch.tensor([1.0, 0.4])).item(), 4)  # log(1 + e^4)
        4.0181
    """

    input = "similarity"
    target = "score"

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = number(scale, "scale")

    def forward(self, similarity: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return cosent(similarity, check_score(score), self.scale)


def cosent(similarity: torch.Tensor, score: torch.Tensor, scale: float) -> torch.Tensor:
    """``log(1 + Σ_{score_i > score_j} exp(scale · (similarity_j − similarity_i)))`` for ``(n,)``
    similarities and gold scores."""
    diff = scale * (similarity.unsqueeze(0) - similarity.unsqueeze(1))  # [i, j] = s·(cos_j − cos_i)
    ordered = score.unsqueeze(1) > score.unsqueeze(0)  # [i, j]: pair i should be the more similar
    diff = diff.masked_fill(~ordered, float("-inf"))
    # log(1 + Σ exp(x)) = logsumexp over the x's and a 0
    zero = torch.zeros(1, dtype=diff.dtype, device=diff.device)
    return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)
