"""SimSiam: a predictor and a stop-gradient, nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from twinnet.losses.base import LOSSES
from twinnet.losses.views import ViewsLoss, head_sizes, mlp_head

if TYPE_CHECKING:
    from twinnet.data.items import ItemSet


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``−cos(p, stop_gradient(z))``, averaged over rows."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


@LOSSES.register("simsiam")
class SimSiamLoss(ViewsLoss):
    """Chen & He 2021: a predictor MLP ``h`` maps one view's projection to the other's, which is
    held fixed (stop-gradient): ``(D(h(z_a), sg(z_b)) + D(h(z_b), sg(z_a))) / 2`` with ``D`` the
    negative cosine. The stop-gradient is what keeps it from collapsing; a twin with no negatives
    and no momentum target.

    Inputs:
        z_a, z_b: ``(n, d)`` projections of two views of ``n`` items (``forward``); ``compute``
        makes them and the predictions.

    Labels:
        none. "Same" is the other view of the same item; other items are not compared.

    Trained from the ``views`` plan; the projector and predictor belong to the loss and are not
    saved with the model. Checked in the tests against the formula and for the stop-gradient (no
    gradient reaches the target side).

    Args:
        projector: sizes of the projection MLP (ends in BatchNorm, as in the paper), e.g.
            ``[256, 256]``; default ``[256, 256]``.
        predictor: sizes of the prediction MLP, the last equal to the projector's output, e.g.
            ``[64, 256]`` (a bottleneck); default ``[64, <projector output>]``.

    Example::

        >>> import torch
        >>> z = torch.randn(8, 4)
        >>> loss = SimSiamLoss(projector=[4])
        >>> round(loss.symmetric(z, z, z, z).item(), 4)   # predictions equal to the targets: −1
        -1.0
    """

    def __init__(self, projector: Sequence[int] | None = (256, 256), predictor: Sequence[int] | None = None) -> None:
        super().__init__(projector)
        self.predictor_sizes = head_sizes(predictor, "predictor")
        self.predictor: torch.nn.Module = torch.nn.Identity()

    def prepare(self, items: ItemSet, embedding_dim: int) -> None:
        self.projector = mlp_head(embedding_dim, self.projector_sizes, last_norm=bool(self.projector_sizes))
        out = self.output_dim or embedding_dim
        sizes = self.predictor_sizes or [max(1, out // 4), out]
        if sizes[-1] != out:
            raise ValueError(f"predictor: its last size ({sizes[-1]}) must equal the projection size ({out})")
        self.predictor = mlp_head(out, sizes)

    def symmetric(self, p_a: torch.Tensor, p_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """The loss from predictions ``p`` and projections ``z`` of both views."""
        return (negative_cosine(p_a, z_b) + negative_cosine(p_b, z_a)) / 2

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        n = len(z_a)
        p = self.predictor(torch.cat([z_a, z_b]))
        return self.symmetric(p[:n], p[n:], z_a, z_b)
