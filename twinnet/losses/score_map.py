"""SiamFC's logistic loss on the score map (Bertinetto et al. 2016).

Every cell of the response is a binary decision "the target is centred here": cells within
``radius`` search-image pixels of where the target's centre lies are positives, the rest
negatives, and positives and negatives weigh half each (there are few positives). The response's
stride (search pixels per cell) follows from the sizes: ``(search - exemplar) / (response - 1)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from twinnet.compare import Comparator
from twinnet.errors import ConfigError
from twinnet.losses.base import LOSSES, TwinLoss, number
from twinnet.tracking.batch import TrackingPairBatch
from twinnet.tracking.xcorr import ScoreMapComparator, response_stride

if TYPE_CHECKING:
    from twinnet.model import AnyTwin


def score_map_labels(size: int, stride: int, radius: float, offsets: torch.Tensor,
                     present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Labels and weights ``(n, size, size)`` for targets at ``offsets (n, 2)`` (pixels ``dx, dy``
    from the search image's centre): 1 within ``radius`` pixels of the target, else 0; each map's
    positives weigh 0.5 in all, its negatives 0.5. Where ``present (n,)`` is False (a negative
    pair: no target in the search image) every cell is 0, the negatives still weighing 0.5."""
    cells = (torch.arange(size, dtype=torch.float32, device=offsets.device) - (size - 1) / 2) * stride
    dx = cells.view(1, 1, size) - offsets[:, 0].view(-1, 1, 1)
    dy = cells.view(1, size, 1) - offsets[:, 1].view(-1, 1, 1)
    labels = ((dx**2 + dy**2) <= radius**2).float()
    if present is not None:
        labels = labels * present.to(labels).view(-1, 1, 1)
    positives = labels.sum(dim=(1, 2), keepdim=True)
    negatives = size * size - positives
    weights = torch.where(labels > 0, 0.5 / positives.clamp_min(1), 0.5 / negatives.clamp_min(1))
    return labels, weights


@LOSSES.register("score_map_logistic")
class LogisticScoreMapLoss(TwinLoss):
    """Balanced logistic loss on a score map; ``radius`` (pixels of the search image, 16 in SiamFC)
    bounds the positives. Trained from exemplar/search pairs (batch plan ``tracking_pairs``) with a
    score-map comparator (``xcorr``).

    Inputs:
        logits: ``(n, 1, R, R)`` score maps of ``n`` exemplar/search pairs (the comparator's output).
    Labels:
        offsets: ``(n, 2)`` where the target's centre lies in each search image, in pixels ``dx, dy``
        from its centre (0, 0 when the crop is centred on it); the positive cells follow from
        ``radius`` and the response's ``stride`` (:func:`score_map_labels`); present: ``(n,)``
        False for a negative pair (every cell negative).

    Example::

        >>> import torch
        >>> loss = LogisticScoreMapLoss(radius=16)
        >>> round(loss(torch.zeros(1, 1, 17, 17), torch.zeros(1, 2), stride=8).item(), 4)  # log 2
        0.6931
    """

    batch_plan: ClassVar[str] = "tracking_pairs"

    def __init__(self, radius: float = 16.0) -> None:
        super().__init__()
        self.radius = number(radius, "radius")

    def check_comparator(self, comparator: Comparator) -> None:
        if not isinstance(comparator, ScoreMapComparator):
            raise ConfigError(f"loss {type(self).__name__} needs a comparator that gives score maps (xcorr), "
                              f"not {type(comparator).__name__}")  # fmt: skip

    def forward(self, logits: torch.Tensor, offsets: torch.Tensor, stride: int,
                present: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The mean over pairs of each map's weighted logistic loss; ``logits (n, 1, R, R)``."""
        maps = logits[:, 0]
        labels, weights = score_map_labels(maps.shape[-1], stride, self.radius, offsets, present)
        return F.binary_cross_entropy_with_logits(maps, labels, weights, reduction="sum") / len(maps)

    def compute(self, model: AnyTwin, batch: TrackingPairBatch) -> torch.Tensor:  # type: ignore[override]
        z = model.embed(batch.exemplars, "a")
        x = model.embed(batch.searches, "b")
        logits = model.comparator.logits(z, x)
        stride = response_stride(batch.searches.shape[-1], batch.exemplars.shape[-1], logits.shape[-1],
                                 where="train.plan")  # fmt: skip
        return self(logits, batch.offsets, stride, batch.present)

    def extra_repr(self) -> str:
        return f"radius={self.radius:g}"
