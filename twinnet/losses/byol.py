"""BYOL: predict a momentum target's projection of the other view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from twinnet.losses.base import LOSSES
from twinnet.losses.views import MomentumTower, ViewsLoss, head_sizes, mlp_head, momentum_value
from twinnet.training.batch import ViewsBatch
from twinnet.training.distributed import gather

if TYPE_CHECKING:
    from twinnet.data.items import ItemSet
    from twinnet.model import AnyTwin


def normalised_distance(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``‖p/‖p‖ − t/‖t‖‖² = 2 − 2·cos(p, t)``, averaged over rows (``t`` receives no gradient)."""
    return (2.0 - 2.0 * F.cosine_similarity(p, t.detach(), dim=1)).mean()


@LOSSES.register("byol")
class BYOLLoss(ViewsLoss):
    """Grill et al. 2020: the online tower (the model's side ``a``, a projector, a predictor) predicts
    the projection that a **momentum target** gives of the other view; the target is a copy of the
    online encoder and projector whose weights are an exponential moving average of theirs
    (:class:`~twinnet.losses.views.MomentumTower`, updated after every step) and never receives
    gradients. ``loss = d(q(z_a), t(x_b)) + d(q(z_b), t(x_a))`` with ``d = 2 − 2·cos``.

    During training this is a half-twin: the second tower is the moving average. The saved model
    keeps only the online encoder, which is all inference needs; the target, projector and predictor
    live in the loss (and in checkpoints, so a resumed run continues them).

    Inputs:
        two views of ``n`` items (``compute``); ``forward(q_a, q_b, t_a, t_b)`` takes the online
        predictions and the target projections.

    Labels:
        none. "Same" is the other view of the same item; other items are not compared.

    Trained from the ``views`` plan. Checked in the tests: the target receives no gradient and
    follows the moving-average formula; a saved model embeds exactly as the online tower does.

    Args:
        momentum: ``m`` of ``θ_target ← m·θ_target + (1 − m)·θ_online`` (0.99 for short runs; the
            paper anneals 0.996 → 1 over long ones).
        projector: sizes of the projection MLP; default ``[256, 128]``.
        predictor: sizes of the prediction MLP, the last equal to the projection size; default
            ``[256, <projection size>]``.

    Example::

        >>> import torch
        >>> q = torch.randn(4, 8)
        >>> abs(BYOLLoss()(q, q, q, q).item()) < 1e-6   # predictions on their targets: nothing to pay
        True
    """

    def __init__(
        self, momentum: float = 0.99, projector: Sequence[int] | None = (256, 128),
        predictor: Sequence[int] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(projector)
        self.momentum = momentum_value(momentum)
        self.predictor_sizes = head_sizes(predictor, "predictor")
        self.predictor: nn.Module = nn.Identity()
        self.target: MomentumTower | None = None

    def prepare(self, items: ItemSet, embedding_dim: int) -> None:
        super().prepare(items, embedding_dim)
        out = self.output_dim or embedding_dim
        sizes = self.predictor_sizes or [256, out]
        if sizes[-1] != out:
            raise ValueError(f"predictor: its last size ({sizes[-1]}) must equal the projection size ({out})")
        self.predictor = mlp_head(out, sizes)

    def _online(self, model: AnyTwin) -> nn.Module:
        # built on the fly, never stored: stored, the model's encoder would become part of the loss
        return nn.Sequential(model.side_module("a"), self.projector)

    def attach(self, model: AnyTwin) -> None:
        super().attach(model)
        self.target = MomentumTower(self._online(model), self.momentum)

    def after_step(self, model: AnyTwin) -> None:
        if self.target is not None:
            self.target.update(self._online(model))

    def forward(self, q_a: torch.Tensor, q_b: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
        return normalised_distance(q_a, t_b) + normalised_distance(q_b, t_a)

    def compute(self, model: AnyTwin, batch: ViewsBatch) -> torch.Tensor:  # type: ignore[override]
        if self.target is None:
            raise RuntimeError("BYOLLoss.attach(model) must run before training (the trainer calls it)")
        p_a, p_b = self.embed_views(model, batch)
        n = len(p_a)
        q = self.predictor(torch.cat([p_a, p_b]))
        a, b = batch.view_a, batch.view_b
        views: Any = torch.cat([a, b]) if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) else [*a, *b]
        t = self.target(views)
        return self(*gather(q[:n], q[n:], t[:n], t[n:]))
