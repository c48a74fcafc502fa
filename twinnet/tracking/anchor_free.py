"""The anchor-free box head (SiamFC++, Xu et al. 2020; SiamCAR, Guo et al. 2020): boxes that change shape.

On the depth-wise correlation of the exemplar's and the search image's maps (each first adjusted by
its own 3×3 convolution), every position ``(i, j)`` of the ``R×R`` response predicts

- a classification logit: "this position lies on the target, near its centre";
- a centre-ness logit: how central it is in the target's box (``√(min(l,r)/max(l,r)·min(t,b)/max(t,b))``);
- the distances ``(l, t, r, b)`` from the position to the box's left, top, right and bottom sides.

Positions are points of the search image: ``p = ((j - (R-1)/2)·stride, (i - (R-1)/2)·stride)``
pixels from its centre, the frame of reference the batch plan's ``offsets`` use. The head
(comparator ``anchor_free``) outputs ``(k·n, 6, R, R)``: channel 0 the classification logit, 1 the
centre-ness logit, 2-5 the distances ``l, t, r, b`` in response cells (multiply by the stride for
pixels). Its loss is :class:`twinnet.losses.anchor_free.AnchorFreeLoss`, its tracker
:class:`AnchorFreeTracker` (registered ``anchor_free``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from twinnet.compare import COMPARATORS
from twinnet.tracking.box_head import BoxHead, BoxTracker, cell_points, target_boxes
from twinnet.tracking.tracker import TRACKERS

#: The head's output channels: classification, centre-ness, then the distances l, t, r, b.
CLS, CTR, LTRB = 0, 1, slice(2, 6)


def encode_ltrb(boxes: torch.Tensor, size: int, stride: float) -> torch.Tensor:
    """Distances ``(n, 4, size, size)`` from every position to the sides of ``boxes (n, 4)``
    (``x0, y0, x1, y1``, pixels from the search image's centre): ``l = px - x0, t = py - y0,
    r = x1 - px, b = y1 - py`` (negative where the position is outside the box)."""
    p = cell_points(size, stride, boxes.device)
    px, py = p.view(1, 1, size), p.view(1, size, 1)
    x0, y0, x1, y1 = (boxes[:, k].view(-1, 1, 1) for k in range(4))
    return torch.stack([(px - x0).expand(-1, size, -1), (py - y0).expand(-1, -1, size),
                        (x1 - px).expand(-1, size, -1), (y1 - py).expand(-1, -1, size)], dim=1)  # fmt: skip


def decode_ltrb(ltrb: torch.Tensor, stride: float) -> torch.Tensor:
    """The inverse of :func:`encode_ltrb`: per position, the box ``(x0, y0, x1, y1)`` its distances
    ``ltrb (n, 4, R, R)`` (pixels) describe, as ``(n, 4, R, R)``."""
    size = ltrb.shape[-1]
    p = cell_points(size, stride, ltrb.device)
    px, py = p.view(1, 1, size), p.view(1, size, 1)
    return torch.stack([px - ltrb[:, 0], py - ltrb[:, 1], px + ltrb[:, 2], py + ltrb[:, 3]], dim=1)


@dataclass
class AnchorFreeTargets:
    """Per position of ``n`` response maps: ``labels (n, R, R)`` (1 positive, 0 negative),
    ``ltrb (n, 4, R, R)`` the distances to the target box's sides (pixels), and
    ``centerness (n, R, R)`` (0 at negatives)."""

    labels: torch.Tensor
    ltrb: torch.Tensor
    centerness: torch.Tensor


def anchor_free_targets(size: int, stride: float, offsets: torch.Tensor, sizes: torch.Tensor,
                        radius: float, present: torch.Tensor | None = None) -> AnchorFreeTargets:  # fmt: skip
    """Label assignment: a position is positive when it lies strictly inside the target's box and
    at most ``radius`` pixels from its centre along each axis (a square around the centre, as
    FCOS's centre sampling); every other position is negative. Targets at ``offsets (n, 2)`` with
    ``sizes (n, 2)`` (pixels of the search image); where ``present (n,)`` is False (a negative
    pair) every position is negative, so no centre-ness or box term reaches it."""
    ltrb = encode_ltrb(target_boxes(offsets, sizes), size, stride)
    p = cell_points(size, stride, offsets.device)
    near_x = (p.view(1, 1, size) - offsets[:, 0].view(-1, 1, 1)).abs() <= radius
    near_y = (p.view(1, size, 1) - offsets[:, 1].view(-1, 1, 1)).abs() <= radius
    labels = ((ltrb.amin(dim=1) > 0) & near_x & near_y).float()
    if present is not None:
        labels = labels * present.to(labels).view(-1, 1, 1)
    lr, tb = ltrb[:, 0::2].clamp_min(0), ltrb[:, 1::2].clamp_min(0)
    ratio = (lr.amin(1) / lr.amax(1).clamp_min(1e-6)) * (tb.amin(1) / tb.amax(1).clamp_min(1e-6))
    return AnchorFreeTargets(labels, ltrb, ratio.sqrt() * labels)


@COMPARATORS.register("anchor_free")
class AnchorFreeHead(BoxHead):
    """The anchor-free box head on ``dim``-channel feature maps (the trunk of
    :class:`~twinnet.tracking.box_head.BoxHead`: adjusted depth-wise correlation, two towers with
    ``channels`` channels): the classification tower gives classification and centre-ness, the box
    tower the distances (``exp`` of the output, starting near ``distance`` cells). Output
    ``(k·n, 6, R, R)`` (see the module's docstring)."""

    tracker = "anchor_free"

    def __init__(self, dim: int, channels: int = 64, distance: float = 4.0) -> None:
        super().__init__(dim, channels, cls_out=2, box_out=4)  # classification and centre-ness; l, t, r, b
        if isinstance(distance, bool) or not isinstance(distance, (int, float)) or not distance > 0:
            raise ValueError(f"distance must be a positive number of response cells, not {distance!r}")
        assert self.box.bias is not None
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.constant_(self.box.bias, math.log(float(distance)))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(k·n, 6, R, R)``: classification and centre-ness logits, then ``l, t, r, b`` in cells."""
        cls, box = self.towers(a, b)
        return torch.cat([cls, torch.exp(box.clamp(-8.0, 8.0))], dim=1)


@TRACKERS.register("anchor_free")
class AnchorFreeTracker(BoxTracker):
    """The tracker of an anchor-free box head (:class:`~twinnet.tracking.box_head.BoxTracker`):
    every position's box decoded from its distances, scored by classification × centre-ness."""

    kind = "anchor_free"

    def candidates(self, out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        cls = torch.sigmoid(out[0, CLS]).cpu().numpy()
        ctr = torch.sigmoid(out[0, CTR]).cpu().numpy()
        boxes = decode_ltrb(out[:, LTRB] * self.stride, self.stride)[0].cpu().numpy().astype(np.float64)
        return boxes[:, None], (cls * ctr)[None]
