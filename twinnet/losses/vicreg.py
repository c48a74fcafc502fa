"""VICReg: variance, invariance and covariance regularisation of two views."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from twinnet.losses.base import LOSSES, number
from twinnet.losses.views import ViewsLoss


def _off_diagonal_squares(c: torch.Tensor) -> torch.Tensor:
    return c.pow(2).sum() - c.diagonal().pow(2).sum()


@LOSSES.register("vicreg")
class VICRegLoss(ViewsLoss):
    """Bardes et al. 2022: the two views' embeddings should be close (invariance: mean squared
    difference), every dimension should vary across the batch (variance: a hinge keeping each
    dimension's standard deviation at 1 or more) and dimensions should be decorrelated (covariance:
    the squared off-diagonal covariances, divided by ``d``). No negatives, no momentum target; the
    variance term is what prevents collapse.

    ``loss = invariance · mse(z_a, z_b) + variance · (v(z_a) + v(z_b)) / 2 + covariance · (c(z_a) + c(z_b))``

    Inputs:
        z_a, z_b: ``(n, d)`` embeddings (after the loss's projector) of two views of ``n`` items.

    Labels:
        none. "Same" is the other view of the same item; other items are not compared.

    Trained from the ``views`` plan. Checked against pytorch-metric-learning's ``VICRegLoss``.

    Args:
        invariance, variance, covariance: the three weights (the paper's λ = 25, µ = 25, ν = 1).
        eps: added to the variance under the square root.
        projector: sizes of an MLP head trained with the loss (the paper's expander), e.g.
            ``[512, 512]``; none by default.

    Example::

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(64, 8, generator=g)
        >>> loss = VICRegLoss()
        >>> bool(loss(z, z) < loss(z * 0.01, z * 0.01))   # collapsed embeddings pay the variance term
        True
    """

    def __init__(
        self, invariance: float = 25.0, variance: float = 25.0, covariance: float = 1.0, eps: float = 1e-4,
        projector: Sequence[int] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(projector)
        self.invariance = number(invariance, "invariance", strict=False)
        self.variance = number(variance, "variance", strict=False)
        self.covariance = number(covariance, "covariance", strict=False)
        self.eps = number(eps, "eps")

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        if len(z_a) < 2:
            raise ValueError("VICReg needs at least 2 items per batch (it measures variance across the batch)")
        n, d = z_a.shape
        invariance = F.mse_loss(z_a, z_b)
        variance = z_a.new_zeros(())
        covariance = z_a.new_zeros(())
        for z in (z_a, z_b):
            variance = variance + F.relu(1.0 - torch.sqrt(z.var(dim=0) + self.eps)).mean() / 2
            centred = z - z.mean(dim=0)
            covariance = covariance + _off_diagonal_squares(centred.T @ centred / (n - 1)) / d
        return self.invariance * invariance + self.variance * variance + self.covariance * covariance
