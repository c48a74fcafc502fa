"""The anchor-free box head's loss (SiamFC++, Xu et al. 2020; FCOS, Tian et al. 2019).

Three terms on the head's ``(n, 6, R, R)`` output (:mod:`twinnet.tracking.anchor_free`), with the
labels of :func:`~twinnet.tracking.anchor_free.anchor_free_targets` (positives: positions inside
the target's box and within ``radius`` pixels of its centre along each axis):

- classification, every position: a balanced logistic loss (positives and negatives weigh half
  each, as SiamFC's), or with ``focal_gamma > 0`` the sigmoid focal loss (``focal_alpha`` the
  positives' weight) summed and divided by the number of positives;
- centre-ness, positives only: binary cross-entropy with the centre-ness of the position;
- the box, positives only: the IoU loss ``-log((I + 1) / (U + 1))`` of the predicted distances
  against the true ones (pixels; the ``+1`` keeps it finite for disjoint boxes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from twinnet.compare import Comparator
from twinnet.errors import ConfigError
from twinnet.losses.base import LOSSES, TwinLoss, number
from twinnet.tracking.anchor_free import CLS, CTR, LTRB, AnchorFreeHead, anchor_free_targets
from twinnet.tracking.batch import TrackingPairBatch
from twinnet.tracking.xcorr import response_stride

if TYPE_CHECKING:
    from twinnet.model import AnyTwin


def iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-log((I + 1) / (U + 1))`` per row of distance boxes ``(m, 4)`` ``l, t, r, b`` (pixels)."""
    area_p = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    area_t = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    w = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 2], target[:, 2])
    h = torch.minimum(pred[:, 1], target[:, 1]) + torch.minimum(pred[:, 3], target[:, 3])
    inter = w.clamp_min(0) * h.clamp_min(0)
    return -torch.log((inter + 1) / (area_p + area_t - inter + 1))


@LOSSES.register("anchor_free")
class AnchorFreeLoss(TwinLoss):
    """Classification + centre-ness + IoU loss of the anchor-free box head (comparator
    ``anchor_free``), trained from exemplar/search pairs (batch plan ``tracking_pairs``).

    Args:
        radius: positives lie within this many search-image pixels of the target's centre (along
            each axis) and inside its box.
        focal_gamma: 0 for the balanced logistic classification loss; above 0, the focal loss's γ.
        focal_alpha: the focal loss's weight of positives.
        cls_weight, ctr_weight, box_weight: the terms' weights.

    Inputs:
        outputs: ``(n, 6, R, R)``: the head's classification and centre-ness logits and its
        distances ``l, t, r, b`` in response cells, for ``n`` exemplar/search pairs.
    Labels:
        offsets: ``(n, 2)`` where the target's centre lies in each search image (pixels from its
        centre); sizes: ``(n, 2)`` its width and height there (pixels); the positions' labels,
        centre-ness and distances follow (:func:`~twinnet.tracking.anchor_free.anchor_free_targets`);
        present: ``(n,)`` False for a negative pair (every position negative).

    Example::

        >>> import math, torch
        >>> loss = AnchorFreeLoss(radius=16)
        >>> outputs = torch.zeros(1, 6, 17, 17)
        >>> outputs[:, 2:] = 4.0  # every position predicts a 64×64 box centred on itself (stride 8)
        >>> parts = loss.parts(outputs, torch.zeros(1, 2), torch.tensor([[64.0, 64.0]]), stride=8)
        >>> round(parts["cls"].item(), 4), round(parts["ctr"].item(), 4)  # log 2, both: logits are 0
        (0.6931, 0.6931)
        >>> parts["positives"].item()  # 5×5 positions within 16 px of the centre, all inside the box
        25.0
    """

    batch_plan: ClassVar[str] = "tracking_pairs"

    def __init__(self, radius: float = 16.0, focal_gamma: float = 0.0, focal_alpha: float = 0.25,
                 cls_weight: float = 1.0, ctr_weight: float = 1.0, box_weight: float = 3.0) -> None:  # fmt: skip
        super().__init__()
        self.radius = number(radius, "radius")
        self.focal_gamma = number(focal_gamma, "focal_gamma", strict=False)
        self.focal_alpha = number(focal_alpha, "focal_alpha")
        if self.focal_alpha >= 1:
            raise ValueError(f"focal_alpha must be below 1, not {focal_alpha!r}")
        self.cls_weight = number(cls_weight, "cls_weight", strict=False)
        self.ctr_weight = number(ctr_weight, "ctr_weight", strict=False)
        self.box_weight = number(box_weight, "box_weight", strict=False)

    def check_comparator(self, comparator: Comparator) -> None:
        if not isinstance(comparator, AnchorFreeHead):
            raise ConfigError(f"loss {type(self).__name__} trains the anchor-free box head (comparator "
                              f"anchor_free), not {type(comparator).__name__}")  # fmt: skip

    def _classification(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.focal_gamma == 0:
            positives = labels.sum(dim=(1, 2), keepdim=True)
            negatives = labels[0].numel() - positives
            weights = torch.where(labels > 0, 0.5 / positives.clamp_min(1), 0.5 / negatives.clamp_min(1))
            return F.binary_cross_entropy_with_logits(logits, labels, weights, reduction="sum") / len(logits)
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        p_true = p * labels + (1 - p) * (1 - labels)
        alpha = self.focal_alpha * labels + (1 - self.focal_alpha) * (1 - labels)
        return (alpha * (1 - p_true) ** self.focal_gamma * ce).sum() / labels.sum().clamp_min(1)

    def parts(self, outputs: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, stride: int,
              present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        """The three terms (unweighted) and the number of positive positions."""
        targets = anchor_free_targets(outputs.shape[-1], stride, offsets, sizes, self.radius, present)
        positive = targets.labels > 0
        cls = self._classification(outputs[:, CLS], targets.labels)
        if positive.any():
            ctr = F.binary_cross_entropy_with_logits(outputs[:, CTR][positive], targets.centerness[positive])
            pred = (outputs[:, LTRB] * stride).permute(0, 2, 3, 1)[positive]
            box = iou_loss(pred, targets.ltrb.permute(0, 2, 3, 1)[positive]).mean()
        else:  # no positive position (a target off the response): only the classification learns
            ctr = box = outputs.sum() * 0
        return {"cls": cls, "ctr": ctr, "box": box, "positives": positive.sum().float()}

    def forward(self, outputs: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, stride: int,
                present: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The weighted sum of the three terms."""
        p = self.parts(outputs, offsets, sizes, stride, present)
        return self.cls_weight * p["cls"] + self.ctr_weight * p["ctr"] + self.box_weight * p["box"]

    def compute(self, model: AnyTwin, batch: TrackingPairBatch) -> torch.Tensor:  # type: ignore[override]
        z = model.embed(batch.exemplars, "a")
        x = model.embed(batch.searches, "b")
        outputs = model.comparator(z, x)
        stride = response_stride(batch.searches.shape[-1], batch.exemplars.shape[-1], outputs.shape[-1],
                                 where="train.plan")  # fmt: skip
        return self(outputs, batch.offsets, batch.sizes, stride, batch.present)

    def extra_repr(self) -> str:
        return f"radius={self.radius:g}, focal_gamma={self.focal_gamma:g}"
