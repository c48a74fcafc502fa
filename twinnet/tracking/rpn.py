"""The anchor-based box head (SiamRPN, Li et al. 2018; depth-wise as in SiamRPN++, Li et al. 2019).

Every position of the ``R×R`` response carries ``k`` anchors: boxes centred on the position (a
point of the search image, ``(j - (R-1)/2)·stride`` pixels from its centre, as the anchor-free
head's), one per aspect ratio ``r = h / w`` of ``ratios`` (0.33, 0.5, 1, 2, 3), all of the area of
a square of ``scale × stride`` pixels (one scale; 64 px for SiamRPN's stride 8 and scale 8, about
the size of a target in a 255 search image). For each anchor the head predicts

- a classification logit: "this anchor fits the target" (a sigmoid, one logit per anchor);
- the regression ``(dx, dy, dw, dh)`` from the anchor to the target's box: ``dx = (x - xa) / wa``,
  ``dy = (y - ya) / ha``, ``dw = log(w / wa)``, ``dh = log(h / ha)`` (centres ``x, y``).

The head (comparator ``rpn``) outputs ``(k·n, 5k, R, R)``: channels ``0…k-1`` the anchors'
logits, then ``4k`` channels of deltas laid out ``(4, k)`` (coordinate, then anchor):
:func:`split_outputs` views them. Label assignment (:func:`rpn_targets`): an anchor whose IoU with
the target is at least ``pos_iou`` (0.6) is positive, at most ``neg_iou`` (0.3) negative, in
between ignored; at most ``positives`` (16) positives and ``total`` (64) anchors in all are kept
per pair, drawn at random from a generator the caller seeds (the loss seeds it from the batch, so a
run reproduces). Its loss is :class:`twinnet.losses.rpn.RPNLoss`, its tracker :class:`RPNTracker`
(registered ``rpn``), whose post-processing is the box heads' shared one
(:class:`~twinnet.tracking.box_head.BoxTracker`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from twinnet.compare import COMPARATORS
from twinnet.tracking.box_head import BoxHead, BoxTracker, cell_points, target_boxes
from twinnet.tracking.tracker import TRACKERS

#: SiamRPN's anchor aspect ratios (height / width).
RATIOS = (0.33, 0.5, 1.0, 2.0, 3.0)


def anchor_shapes(ratios: Sequence[float], side: float) -> torch.Tensor:
    """Widths and heights ``(k, 2)`` of anchors of aspect ratios ``ratios`` (``h / w``), each of the
    area of a ``side × side`` square: ``w = side / √r``, ``h = side·√r``."""
    r = torch.tensor([float(x) for x in ratios], dtype=torch.float32)
    return torch.stack([side / r.sqrt(), side * r.sqrt()], dim=1)


def anchor_grid(size: int, stride: float, shapes: torch.Tensor) -> torch.Tensor:
    """Every anchor of a ``size×size`` response: ``(4, k, size, size)``, the centre ``x, y``
    (pixels from the search image's centre, :func:`~twinnet.tracking.box_head.cell_points`) and the
    width and height ``shapes (k, 2)``."""
    k = len(shapes)
    p = cell_points(size, stride, shapes.device)
    cx = p.view(1, 1, size).expand(k, size, size)
    cy = p.view(1, size, 1).expand(k, size, size)
    w = shapes[:, 0].view(k, 1, 1).expand(k, size, size)
    h = shapes[:, 1].view(k, 1, 1).expand(k, size, size)
    return torch.stack([cx, cy, w, h])


def corners(boxes: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Centre-size boxes (``x, y, w, h`` along ``dim``) as corners ``x0, y0, x1, y1``."""
    x, y, w, h = boxes.unbind(dim)
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=dim)


def encode_deltas(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The regression targets ``(n, 4, k, R, R)`` (``dx, dy, dw, dh``) from every anchor of
    ``anchors (4, k, R, R)`` to each centre-size box of ``boxes (n, 4)`` (``x, y, w, h``)."""
    b = boxes.view(-1, 4, 1, 1, 1)
    ax, ay, aw, ah = anchors.unsqueeze(0).unbind(1)
    return torch.stack([(b[:, 0] - ax) / aw, (b[:, 1] - ay) / ah, torch.log(b[:, 2] / aw),
                        torch.log(b[:, 3] / ah)], dim=1)  # fmt: skip


def decode_deltas(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`encode_deltas`: the centre-size boxes ``(n, 4, k, R, R)`` (``x, y, w, h``)
    that deltas ``(n, 4, k, R, R)`` describe on ``anchors (4, k, R, R)``."""
    ax, ay, aw, ah = anchors.unsqueeze(0).unbind(1)
    dx, dy, dw, dh = deltas.unbind(1)
    return torch.stack([ax + dx * aw, ay + dy * ah, aw * torch.exp(dw), ah * torch.exp(dh)], dim=1)


def anchor_iou(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The IoU ``(n, k, R, R)`` of every anchor of ``anchors (4, k, R, R)`` (centre-size) with each
    box of ``boxes (n, 4)`` (``x0, y0, x1, y1``)."""
    a = corners(anchors).unsqueeze(0)  # (1, 4, k, R, R)
    b = boxes.view(-1, 4, 1, 1, 1)
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter).clamp_min(1e-12)


@dataclass
class RPNTargets:
    """Per anchor of ``n`` responses: ``labels (n, k, R, R)`` (1 positive, 0 negative, -1 not
    sampled), ``deltas (n, 4, k, R, R)`` the regression targets and ``iou (n, k, R, R)``."""

    labels: torch.Tensor
    deltas: torch.Tensor
    iou: torch.Tensor


def _keep(mask: torch.Tensor, most: int, generator: torch.Generator) -> torch.Tensor:
    """``mask`` with at most ``most`` of its True entries left, chosen at random."""
    where = torch.nonzero(mask.flatten()).flatten()
    if len(where) <= most:
        return mask
    kept = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    chosen = torch.randperm(len(where), generator=generator)[:most].to(where.device)
    kept[where[chosen]] = True
    return kept.view_as(mask)


def rpn_targets(anchors: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, *, pos_iou: float = 0.6,
                neg_iou: float = 0.3, positives: int = 16, total: int = 64,
                generator: torch.Generator | None = None,
                present: torch.Tensor | None = None) -> RPNTargets:  # fmt: skip
    """Label assignment for targets centred at ``offsets (n, 2)`` with ``sizes (n, 2)`` (pixels of
    the search image) on ``anchors (4, k, R, R)``: anchors of IoU ≥ ``pos_iou`` with the target are
    positive, IoU ≤ ``neg_iou`` negative; per pair at most ``positives`` positives are kept and at
    most ``total`` anchors in all (negatives fill what the positives leave), each subset drawn at
    random with ``generator`` (a CPU generator; default: seeded with 0, so the draw is fixed).
    Where ``present (n,)`` is False (a negative pair: no target in the search image) every anchor's
    IoU is 0, so ``total`` negatives are sampled and no positive."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    iou = anchor_iou(anchors, target_boxes(offsets, sizes))
    if present is not None:
        iou = iou * present.to(iou).view(-1, *([1] * (iou.dim() - 1)))
    labels = torch.full_like(iou, -1.0)
    for i in range(len(iou)):
        pos = _keep(iou[i] >= pos_iou, positives, generator)
        neg = _keep(iou[i] <= neg_iou, total - int(pos.sum()), generator)
        labels[i][neg] = 0.0
        labels[i][pos] = 1.0
    deltas = encode_deltas(torch.cat([offsets, sizes.clamp_min(1e-6)], dim=1), anchors)
    return RPNTargets(labels, deltas, iou)


def split_outputs(out: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's ``(n, 5k, R, R)`` output as the anchors' logits ``(n, k, R, R)`` and deltas
    ``(n, 4, k, R, R)``."""
    if out.dim() != 4 or out.shape[1] != 5 * k:
        raise ValueError(f"an RPN output of {k} anchors has shape (n, {5 * k}, R, R), not {tuple(out.shape)}")
    return out[:, :k], out[:, k:].reshape(len(out), 4, k, *out.shape[2:])


def _ratios(value: object) -> tuple[float, ...]:
    def ok(r: object) -> bool:
        return not isinstance(r, bool) and isinstance(r, (int, float)) and math.isfinite(r) and r > 0

    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value or not all(map(ok, value)):
        raise ValueError(f"ratios must be a non-empty list of positive aspect ratios (height / width), not {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"ratios must not repeat a ratio: {list(value)}")
    return tuple(float(r) for r in value)


@COMPARATORS.register("rpn")
class RPNHead(BoxHead):
    """SiamRPN's box head on ``dim``-channel feature maps (the trunk of
    :class:`~twinnet.tracking.box_head.BoxHead`: adjusted depth-wise correlation, two towers with
    ``channels`` channels): per position, ``k = len(ratios)`` anchor logits from the classification
    tower and ``4k`` deltas from the box tower (starting near 0: every anchor as it is). Anchors
    have the area of a ``scale × stride`` pixel square. Output ``(k·n, 5k, R, R)`` (see the
    module's docstring)."""

    tracker = "rpn"

    def __init__(self, dim: int, channels: int = 64, ratios: Sequence[float] = RATIOS, scale: float = 8.0) -> None:
        checked = _ratios(ratios)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"scale must be a positive number of strides (the anchors' side), not {scale!r}")
        super().__init__(dim, channels, cls_out=len(checked), box_out=4 * len(checked))
        self.ratios = checked
        self.scale = float(scale)
        self.k = len(checked)
        assert self.box.bias is not None
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.zeros_(self.box.bias)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(k·n, 5k, R, R)``: the anchors' logits, then their deltas (coordinate-major)."""
        cls, box = self.towers(a, b)
        return torch.cat([cls, box], dim=1)

    def anchors(self, size: int, stride: float, device: torch.device | None = None) -> torch.Tensor:
        """The anchors ``(4, k, size, size)`` of a ``size×size`` response of ``stride`` pixels per cell."""
        return anchor_grid(size, stride, anchor_shapes(self.ratios, self.scale * stride).to(device))

    def extra_repr(self) -> str:
        return f"ratios={list(self.ratios)}, scale={self.scale:g}"


@TRACKERS.register("rpn")
class RPNTracker(BoxTracker):
    """The tracker of a SiamRPN head (:class:`~twinnet.tracking.box_head.BoxTracker`): every
    anchor's box decoded from its deltas, scored by the sigmoid of its logit."""

    kind = "rpn"

    def candidates(self, out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        head = self.model.comparator
        assert isinstance(head, RPNHead)
        logits, deltas = split_outputs(out[:1], head.k)
        boxes = corners(decode_deltas(deltas, head.anchors(out.shape[-1], self.stride, out.device))[0])
        return boxes.cpu().numpy().astype(np.float64), torch.sigmoid(logits[0]).cpu().numpy().astype(np.float64)
