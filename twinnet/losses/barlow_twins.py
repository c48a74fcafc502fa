"""Barlow Twins: the cross-correlation of two views driven to the identity."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from twinnet.losses.base import LOSSES, number
from twinnet.losses.views import ViewsLoss


@LOSSES.register("barlow_twins")
class BarlowTwinsLoss(ViewsLoss):
    """Zbontar et al. 2021: standardise each dimension over the batch, take the ``d × d``
    cross-correlation ``C = z̃_aᵀ z̃_b / n`` of the two views, and push its diagonal to 1 (the views
    agree) and its off-diagonal to 0 (dimensions carry different information):
    ``Σᵢ (1 − Cᵢᵢ)² + off_diagonal · Σᵢ≠ⱼ Cᵢⱼ²``. No negatives, no momentum target.

    Inputs:
        z_a, z_b: ``(n, d)`` embeddings (after the loss's projector) of two views of ``n`` items.

    Labels:
        none. "Same" is the other view of the same item; other items are not compared.

    Trained from the ``views`` plan. No installable reference here (``lightly`` needs torchvision);
    checked against a hand-computed case in the tests.

    Args:
        off_diagonal: λ, the weight of the redundancy term (the paper's 5e-3 at d = 8192; about
            ``1/d`` suits small embeddings).
        eps: added to each dimension's standard deviation.
        projector: sizes of an MLP head trained with the loss, e.g. ``[512, 512]``; none by default.

    Example::

        >>> import torch
        >>> z = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
        >>> round(BarlowTwinsLoss(off_diagonal=0.5)(z, z).item(), 4)   # C = I: nothing to pay
        0.0
    """

    def __init__(self, off_diagonal: float = 5e-3, eps: float = 1e-5, projector: Sequence[int] | None = None) -> None:
        super().__init__(projector)
        self.off_diagonal = number(off_diagonal, "off_diagonal", strict=False)
        self.eps = number(eps, "eps")

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        if len(z_a) < 2:
            raise ValueError("Barlow Twins needs at least 2 items per batch (it standardises over the batch)")
        n = len(z_a)

        def standardise(z: torch.Tensor) -> torch.Tensor:
            return (z - z.mean(0)) / (z.std(0, unbiased=False) + self.eps)

        c = standardise(z_a).T @ standardise(z_b) / n
        on = (1.0 - c.diagonal()).pow(2).sum()
        off = c.pow(2).sum() - c.diagonal().pow(2).sum()
        return on + self.off_diagonal * off
