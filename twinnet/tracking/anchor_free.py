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
from twinnet.tracking.dw_xcorr import depthwise_xcorr
from twinnet.tracking.geometry import clip_box, context_side, crop
from twinnet.tracking.tracker import TRACKERS, Tracker
from twinnet.tracking.xcorr import MapComparator

#: The head's output channels: classification, centre-ness, then the distances l, t, r, b.
CLS, CTR, LTRB = 0, 1, slice(2, 6)


def cell_points(size: int, stride: float, device: torch.device | None = None) -> torch.Tensor:
    """The ``size`` coordinates (pixels from the search image's centre) of a response's positions
    along one axis: ``(j - (size-1)/2)·stride``."""
    return (torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2) * stride


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


def target_boxes(offsets: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``x0, y0, x1, y1`` boxes ``(n, 4)`` of targets centred ``offsets (n, 2)`` pixels from the
    search image's centre, ``sizes (n, 2)`` pixels wide and high."""
    half = sizes / 2
    return torch.cat([offsets - half, offsets + half], dim=1)


def anchor_free_targets(size: int, stride: float, offsets: torch.Tensor, sizes: torch.Tensor,
                        radius: float) -> AnchorFreeTargets:  # fmt: skip
    """Label assignment: a position is positive when it lies strictly inside the target's box and
    at most ``radius`` pixels from its centre along each axis (a square around the centre, as
    FCOS's centre sampling); every other position is negative. Targets at ``offsets (n, 2)`` with
    ``sizes (n, 2)`` (pixels of the search image)."""
    ltrb = encode_ltrb(target_boxes(offsets, sizes), size, stride)
    p = cell_points(size, stride, offsets.device)
    near_x = (p.view(1, 1, size) - offsets[:, 0].view(-1, 1, 1)).abs() <= radius
    near_y = (p.view(1, size, 1) - offsets[:, 1].view(-1, 1, 1)).abs() <= radius
    labels = ((ltrb.amin(dim=1) > 0) & near_x & near_y).float()
    lr, tb = ltrb[:, 0::2].clamp_min(0), ltrb[:, 1::2].clamp_min(0)
    ratio = (lr.amin(1) / lr.amax(1).clamp_min(1e-6)) * (tb.amin(1) / tb.amax(1).clamp_min(1e-6))
    return AnchorFreeTargets(labels, ltrb, ratio.sqrt() * labels)


def _conv_bn(c_in: int, c_out: int, padding: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=padding, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))  # fmt: skip


@COMPARATORS.register("anchor_free")
class AnchorFreeHead(MapComparator):
    """The anchor-free box head on ``dim``-channel feature maps: each side adjusted by its own 3×3
    convolution (valid, so a 7×7 exemplar map and a 23×23 search map give a 17×17 response) to
    ``channels`` channels, correlated depth-wise, then a classification tower (classification and
    centre-ness) and a box tower (distances, ``exp`` of the output, starting near ``distance``
    cells). Output ``(k·n, 6, R, R)`` (see the module's docstring)."""

    tracker = "anchor_free"

    def __init__(self, dim: int, channels: int = 64, distance: float = 4.0) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive whole number, not {channels!r}")
        if isinstance(distance, bool) or not isinstance(distance, (int, float)) or not distance > 0:
            raise ValueError(f"distance must be a positive number of response cells, not {distance!r}")
        self.adjust_z = _conv_bn(dim, channels)
        self.adjust_x = _conv_bn(dim, channels)
        self.cls_tower = _conv_bn(channels, channels, padding=1)
        self.box_tower = _conv_bn(channels, channels, padding=1)
        self.cls = nn.Conv2d(channels, 2, 1)  # classification and centre-ness
        self.box = nn.Conv2d(channels, 4, 1)
        assert self.box.bias is not None
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.constant_(self.box.bias, math.log(float(distance)))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(k·n, 6, R, R)``: classification and centre-ness logits, then ``l, t, r, b`` in cells."""
        response = depthwise_xcorr(self.adjust_z(a), self.adjust_x(b))
        ltrb = torch.exp(self.box(self.box_tower(response)).clamp(-8.0, 8.0))
        return torch.cat([self.cls(self.cls_tower(response)), ltrb], dim=1)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.forward(a, b)


def _change(r: np.ndarray) -> np.ndarray:
    return np.maximum(r, 1.0 / r)


def _side(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.sqrt((w + (w + h) / 2) * (h + (w + h) / 2))


@TRACKERS.register("anchor_free")
class AnchorFreeTracker(Tracker):
    """The tracker of an anchor-free box head. Each frame: one search image around the last position
    (at the scale where the last box's exemplar region is ``exemplar_size`` pixels), every position's
    box decoded from its distances, its score (classification × centre-ness) multiplied by a penalty
    on the change of scale and aspect ratio against the last box (``penalty_k``), mixed with a cosine
    window (``window_influence``); the best position's box gives the new centre, and its size moves
    toward the new one by ``scale_lr`` × its penalised score (size smoothing)."""

    kind = "anchor_free"

    def init(self, frame: np.ndarray, box: np.ndarray) -> None:
        super().init(frame, box)
        hann = np.hanning(self._response_size)
        self.window = np.outer(hann, hann)

    @torch.inference_mode()
    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        if self._kernel is None:
            raise RuntimeError("call init(frame, box) before update(frame)")
        s = self.settings
        z_side = context_side(self.target[0], self.target[1], s.context)
        scale = self.exemplar_size / z_side  # search-image pixels per image pixel
        x_side = z_side * self.search_size / self.exemplar_size
        x = self._tensor([crop(frame, self.center, x_side, self.search_size, self.pad)])
        out = self.model.comparator(self._kernel, self.model.embed(x, "b")).float()
        cls = torch.sigmoid(out[0, CLS]).cpu().numpy()
        ctr = torch.sigmoid(out[0, CTR]).cpu().numpy()
        boxes = decode_ltrb(out[:, LTRB] * self.stride, self.stride)[0].cpu().numpy().astype(np.float64)
        w, h = boxes[2] - boxes[0], boxes[3] - boxes[1]
        tw, th = self.target * scale
        penalty = np.exp(-(_change((tw / th) / (w / h)) * _change(_side(w, h) / _side(tw, th)) - 1) * s.penalty_k)
        score = cls * ctr
        pscore = penalty * score * (1 - s.window_influence) + self.window * s.window_influence
        best = np.unravel_index(int(np.argmax(pscore)), pscore.shape)
        cx, cy = (boxes[0][best] + boxes[2][best]) / 2, (boxes[1][best] + boxes[3][best]) / 2
        lr = float(penalty[best] * score[best] * s.scale_lr)
        size = self.target * (1 - lr) + np.array([w[best], h[best]]) / scale * lr
        self.target = np.clip(size, s.min_scale * self.base_target, s.max_scale * self.base_target)
        width, height = self.size
        self.center = np.clip(self.center + np.array([cx, cy]) / scale, 0, [width, height])
        box = clip_box(np.array([*(self.center - self.target / 2), *self.target]), self.size)
        return box, float(score[best])
