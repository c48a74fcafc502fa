"""AnglE: CoSENT on the cosine plus CoSENT on an angle difference in complex space (Li & Li 2024,
"AnglE-optimized Text Embeddings")."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from twinnet.losses.base import LOSSES, PairLoss, check_score, number
from twinnet.losses.cosent import cosent
from twinnet.training.distributed import gather

if TYPE_CHECKING:
    from twinnet.model import AnyTwin
    from twinnet.training.batch import PairBatch


def angle_similarity(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """AnglE's per-pair angle term: each embedding split into a real and an imaginary half, the
    complex quotient ``a / b`` normalised by the two moduli, its components summed and the absolute
    value taken. Unlike the cosine it keeps a gradient where the cosine saturates (near ±1).

    ``(n, d)`` and ``(n, d)`` → ``(n,)``; ``d`` must be even."""
    if z_a.shape[-1] % 2:
        raise ValueError(f"the angle term splits embeddings in two halves: dimension {z_a.shape[-1]} is odd")
    a, b = torch.chunk(z_a, 2, dim=1)
    c, d = torch.chunk(z_b, 2, dim=1)
    modulus_b2 = (c**2 + d**2).sum(1, keepdim=True)
    real = (a * c + b * d) / modulus_b2
    imag = (b * c - a * d) / modulus_b2
    # scale the quotient to unit modulus ratio: |a|/|b| divided out
    ratio = (a**2 + b**2).sum(1, keepdim=True).sqrt() / modulus_b2.sqrt()
    return (torch.cat([real, imag], dim=1) / ratio).sum(1).abs()


@LOSSES.register("angle")
class AnglELoss(PairLoss):
    """CoSENT on the cosine similarities plus ``angle_weight`` × CoSENT on AnglE's angle term
    (:func:`angle_similarity`), both with ``scale``:

    ``L = cosent(cos) + angle_weight · cosent(angle)``

    The angle term is a second view of the same pair ranking whose gradient does not vanish where
    the cosine is near ±1, the saturated zone CoSENT alone trains slowly in.

    Inputs:
        similarity: ``(n,)`` cosine similarities (the ``cosine`` comparator's values) and the
        ``(n, d)`` embeddings of both sides (``d`` even), taken by :meth:`compute`.

    Labels:
        score: ``(n,)`` float gold similarities (only their order is used).

    Trained from graded pairs such as STS-B (batch plan ``scored_pairs``), like ``cosent``.

    Example::

        >>> import torch
        >>> loss = AnglELoss(scale=20.0, angle_weight=1.0)
        >>> z_a = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]])
        >>> z_b = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
        >>> cos = torch.nn.functional.cosine_similarity(z_a, z_b)
        >>> loss.pairs(cos, z_a, z_b, torch.tensor([1.0, 0.0])).item() < 1e-5   # right order: no loss
        True
    """

    input = "similarity"
    target = "score"

    def __init__(self, scale: float = 20.0, angle_weight: float = 1.0) -> None:
        super().__init__()
        self.scale = number(scale, "scale")
        self.angle_weight = number(angle_weight, "angle_weight", strict=False)

    def forward(self, similarity: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """The cosine term alone (what a caller without embeddings can compute)."""
        return cosent(similarity, check_score(score), self.scale)

    def pairs(
        self, similarity: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor, score: torch.Tensor
    ) -> torch.Tensor:
        """Both terms, from the cosines and the two sides' embeddings."""
        loss = self.forward(similarity, score)
        if self.angle_weight:
            loss = loss + self.angle_weight * cosent(angle_similarity(z_a, z_b), score, self.scale)
        return loss

    def compute(self, model: AnyTwin, batch: PairBatch) -> torch.Tensor:  # type: ignore[override]
        z_a, z_b, score = gather(*model.embed_pair(batch.inputs_a, batch.inputs_b), batch.score)
        return self.pairs(model.comparator(z_a, z_b), z_a, z_b, score)
