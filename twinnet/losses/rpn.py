"""SiamRPN's loss (Li et al. 2018): anchor classification and box regression.

Two terms on the head's ``(n, 5k, R, R)`` output (:mod:`twinnet.tracking.rpn`), with the labels of
:func:`~twinnet.tracking.rpn.rpn_targets` (per pair, at most ``positives`` anchors of IoU ≥
``pos_iou`` with the target and at most ``total`` anchors in all, the rest negatives of IoU ≤
``neg_iou``, drawn at random from a generator seeded by the batch):

- classification, on the sampled anchors: binary cross-entropy, the positives' mean and the
  negatives' mean weighing half each (as pysot's SiamRPN);
- the box, on the sampled positives: smooth L1 (``beta``) of the deltas ``(dx, dy, dw, dh)``,
  summed over the four and averaged over the positives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from twinnet.compare import Comparator
from twinnet.errors import ConfigError
from twinnet.losses.base import LOSSES, TwinLoss, number
from twinnet.tracking.batch import TrackingPairBatch
from twinnet.tracking.rpn import RPNHead, rpn_targets, split_outputs
from twinnet.tracking.xcorr import response_stride

if TYPE_CHECKING:
    from twinnet.model import AnyTwin


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number of anchors, not {value!r}")
    return value


@LOSSES.register("rpn")
class RPNLoss(TwinLoss):
    """Classification + smooth-L1 regression loss of SiamRPN's box head (comparator ``rpn``),
    trained from exemplar/search pairs (batch plan ``tracking_pairs``).

    Args:
        pos_iou: anchors of at least this IoU with the target are positive (0.6).
        neg_iou: anchors of at most this IoU are negative (0.3); between the two, ignored.
        positives: at most this many positives per pair (16), drawn at random when there are more.
        total: at most this many anchors per pair in all (64): negatives fill what positives leave.
        beta: the smooth L1's change point (1/9, as Faster R-CNN's RPN).
        cls_weight, box_weight: the terms' weights (1 and 1.2, pysot's).

    Inputs:
        outputs: ``(n, 5k, R, R)``: the head's ``k`` anchor logits and ``4k`` deltas per position,
        for ``n`` exemplar/search pairs; anchors: ``(4, k, R, R)``, their centres and sizes in
        search-image pixels (``RPNHead.anchors``).
    Labels:
        offsets: ``(n, 2)`` where the target's centre lies in each search image (pixels from its
        centre); sizes: ``(n, 2)`` its width and height there (pixels); the anchors' labels and
        regression targets follow (:func:`~twinnet.tracking.rpn.rpn_targets`), sampled with
        ``generator`` (the batch's ``seed`` in training); present: ``(n,)`` False for a negative
        pair (all its sampled anchors negative).

    Example::

        >>> import torch
        >>> from twinnet.tracking.rpn import RATIOS, anchor_grid, anchor_shapes
        >>> anchors = anchor_grid(17, 8, anchor_shapes(RATIOS, 64))  # 5 anchors of 64² px² per position
        >>> loss = RPNLoss()
        >>> parts = loss.parts(torch.zeros(1, 25, 17, 17), torch.zeros(1, 2), torch.tensor([[64.0, 64.0]]), anchors)
        >>> round(parts["cls"].item(), 4)  # every logit 0: log 2 for positives and negatives alike
        0.6931
        >>> parts["positives"].item(), parts["negatives"].item()  # 13 square anchors reach IoU 0.6
        (13.0, 51.0)
    """

    batch_plan: ClassVar[str] = "tracking_pairs"

    def __init__(self, pos_iou: float = 0.6, neg_iou: float = 0.3, positives: int = 16, total: int = 64,
                 beta: float = 1 / 9, cls_weight: float = 1.0, box_weight: float = 1.2) -> None:  # fmt: skip
        super().__init__()
        self.pos_iou = number(pos_iou, "pos_iou")
        self.neg_iou = number(neg_iou, "neg_iou", strict=False)
        if self.pos_iou > 1:
            raise ValueError(f"pos_iou must be at most 1, not {pos_iou!r}")
        if not self.neg_iou < self.pos_iou:
            raise ValueError(f"neg_iou must be below pos_iou ({self.pos_iou:g}), not {neg_iou!r}")
        self.positives = _count(positives, "positives")
        self.total = _count(total, "total")
        if self.total < self.positives:
            raise ValueError(f"total must be at least positives ({self.positives}), not {total!r}")
        self.beta = number(beta, "beta")
        self.cls_weight = number(cls_weight, "cls_weight", strict=False)
        self.box_weight = number(box_weight, "box_weight", strict=False)

    def check_comparator(self, comparator: Comparator) -> None:
        if not isinstance(comparator, RPNHead):
            raise ConfigError(f"loss {type(self).__name__} trains SiamRPN's anchor-based box head (comparator "
                              f"rpn), not {type(comparator).__name__}")  # fmt: skip

    def parts(self, outputs: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, anchors: torch.Tensor,
              generator: torch.Generator | None = None,
              present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        """The two terms (unweighted) and the numbers of sampled positive and negative anchors."""
        logits, deltas = split_outputs(outputs, anchors.shape[1])
        t = rpn_targets(anchors, offsets, sizes, pos_iou=self.pos_iou, neg_iou=self.neg_iou,
                        positives=self.positives, total=self.total, generator=generator, present=present)  # fmt: skip
        positive, negative = t.labels == 1, t.labels == 0
        zero = outputs.sum() * 0
        ce = F.binary_cross_entropy_with_logits(logits, t.labels.clamp_min(0), reduction="none")
        pos_ce = ce[positive].mean() if positive.any() else zero
        neg_ce = ce[negative].mean() if negative.any() else zero
        cls = 0.5 * pos_ce + 0.5 * neg_ce
        if positive.any():
            pred = deltas.permute(0, 2, 3, 4, 1)[positive]  # (m, 4)
            true = t.deltas.permute(0, 2, 3, 4, 1)[positive]
            box = F.smooth_l1_loss(pred, true, beta=self.beta, reduction="none").sum(dim=1).mean()
        else:  # no anchor fits the target well enough: only the classification learns
            box = zero
        return {"cls": cls, "box": box, "positives": positive.sum().float(), "negatives": negative.sum().float()}

    def forward(self, outputs: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, anchors: torch.Tensor,
                generator: torch.Generator | None = None,
                present: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The weighted sum of the two terms."""
        p = self.parts(outputs, offsets, sizes, anchors, generator, present)
        return self.cls_weight * p["cls"] + self.box_weight * p["box"]

    def compute(self, model: AnyTwin, batch: TrackingPairBatch) -> torch.Tensor:  # type: ignore[override]
        head = model.comparator
        assert isinstance(head, RPNHead)
        z = model.embed(batch.exemplars, "a")
        x = model.embed(batch.searches, "b")
        outputs = head(z, x)
        stride = response_stride(batch.searches.shape[-1], batch.exemplars.shape[-1], outputs.shape[-1],
                                 where="train.plan")  # fmt: skip
        anchors = head.anchors(outputs.shape[-1], stride, outputs.device)
        return self(outputs, batch.offsets, batch.sizes, anchors, torch.Generator().manual_seed(batch.seed),
                    batch.present)  # fmt: skip

    def extra_repr(self) -> str:
        return f"pos_iou={self.pos_iou:g}, neg_iou={self.neg_iou:g}, positives={self.positives}, total={self.total}"
