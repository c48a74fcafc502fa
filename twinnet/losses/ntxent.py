"""NT-Xent (SimCLR's normalised temperature-scaled cross-entropy), with an optional memory queue."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from twinnet.losses.base import LOSSES, number
from twinnet.losses.views import ViewsLoss


@LOSSES.register("ntxent")
class NTXentLoss(ViewsLoss):
    """Each view must find the other view of its own item among all ``2n − 1`` other views of the
    batch: cross-entropy over cosine similarities divided by ``temperature`` (Chen et al. 2020,
    SimCLR; InfoNCE, van den Oord et al. 2018). With ``queue_size > 0`` the views of earlier batches
    (detached, MoCo-style; He et al. 2020) are further negatives, so small CPU batches still see
    thousands of them.

    Inputs:
        z_a, z_b: ``(n, d)`` embeddings (after the loss's projector) of two views of ``n`` items.

    Labels:
        none. "Same" is the other view of the same item; every other view (and every queued one)
        is "different".

    Trained from the ``views`` plan (two augmented views of every item; ``data.augment`` for images,
    dropout or ``train.plan.word_deletion`` for texts). Checked against pytorch-metric-learning's
    ``NTXentLoss`` in the tests.

    Args:
        temperature: divides the cosine similarities (0.1 suits small batches; SimCLR 0.5 at 4096).
        projector: sizes of an MLP head trained with the loss and dropped at save (SimCLR's
            projection head), e.g. ``[256, 128]``; none by default.
        queue_size: how many past embeddings to keep as extra negatives (0: none).

    Example::

        >>> import torch
        >>> z = torch.nn.functional.normalize(torch.eye(4), dim=1)
        >>> loss = NTXentLoss(temperature=0.1)
        >>> bool(loss(z, z) < loss(z, z.roll(1, 0)))   # matching views beat shuffled ones
        True
    """

    def __init__(self, temperature: float = 0.1, projector: Sequence[int] | None = None, queue_size: int = 0) -> None:
        super().__init__(projector)
        self.temperature = number(temperature, "temperature")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 0:
            raise ValueError(f"queue_size must be a whole number of embeddings (0: no queue), not {queue_size!r}")
        self.queue_size = queue_size
        self.queue: torch.Tensor
        self.register_buffer("queue", torch.zeros(0, 0), persistent=False)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        n = len(z_a)
        z = F.normalize(torch.cat([z_a, z_b]), dim=1)
        sim = z @ z.T / self.temperature
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # not itself
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # the other view
        queue = self.queue
        if self.queue_size and len(queue) and queue.shape[1] == z.shape[1]:
            sim = torch.cat([sim, z @ queue.to(z.dtype).T / self.temperature], dim=1)
        loss = F.cross_entropy(sim, target)
        if self.queue_size and self.training:
            # the newest views first; the oldest fall out (not saved: a resumed run refills it)
            past = queue if queue.shape[1:] == z.shape[1:] else z.new_zeros(0, z.shape[1])
            self.queue = torch.cat([z.detach(), past.to(z.dtype)])[: self.queue_size]
        return loss
