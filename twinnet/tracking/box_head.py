"""What the box heads share: response positions, the correlation trunk, and the tracker's post-processing.

A box head (anchor-free: :mod:`twinnet.tracking.anchor_free`; anchor-based, SiamRPN:
:mod:`twinnet.tracking.rpn`) reads the depth-wise correlation of the exemplar's and the search
image's maps, each first adjusted by its own 3×3 convolution, through two towers: one for the
classification, one for the box (:class:`BoxHead`). Positions of its ``R×R`` response are points
of the search image, ``(j - (R-1)/2)·stride`` pixels from its centre (:func:`cell_points`), the
frame of reference of the batch plan's ``offsets``.

Its tracker (:class:`BoxTracker`) differs only in how it turns the head's output into candidate
boxes and scores (:meth:`BoxTracker.candidates`); the rest is SiamRPN's post-processing: a penalty
on the change of scale and aspect ratio, a cosine window, and size smoothing.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from twinnet.tracking.dw_xcorr import depthwise_xcorr
from twinnet.tracking.geometry import clip_box, context_side, crop
from twinnet.tracking.tracker import Tracker
from twinnet.tracking.xcorr import MapComparator


def cell_points(size: int, stride: float, device: torch.device | None = None) -> torch.Tensor:
    """The ``size`` coordinates (pixels from the search image's centre) of a response's positions
    along one axis: ``(j - (size-1)/2)·stride``."""
    return (torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2) * stride


def target_boxes(offsets: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``x0, y0, x1, y1`` boxes ``(n, 4)`` of targets centred ``offsets (n, 2)`` pixels from the
    search image's centre, ``sizes (n, 2)`` pixels wide and high."""
    half = sizes / 2
    return torch.cat([offsets - half, offsets + half], dim=1)


def conv_bn(c_in: int, c_out: int, padding: int = 0) -> nn.Sequential:
    """A 3×3 convolution, BatchNorm and ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=padding, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))  # fmt: skip


def positive_int(value: object, name: str) -> int:
    """``value`` as a positive whole number, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, not {value!r}")
    return value


class BoxHead(MapComparator):
    """The trunk of a box head on ``dim``-channel feature maps: each side adjusted by its own 3×3
    convolution (valid, so a 7×7 exemplar map and a 23×23 search map give a 17×17 response) to
    ``channels`` channels, correlated depth-wise, then a classification tower and a box tower
    (3×3, padded), each ending in a 1×1 convolution to ``cls_out`` and ``box_out`` channels."""

    def __init__(self, dim: int, channels: int, cls_out: int, box_out: int) -> None:
        super().__init__()
        channels = positive_int(channels, "channels")
        self.adjust_z = conv_bn(dim, channels)
        self.adjust_x = conv_bn(dim, channels)
        self.cls_tower = conv_bn(channels, channels, padding=1)
        self.box_tower = conv_bn(channels, channels, padding=1)
        self.cls = nn.Conv2d(channels, cls_out, 1)
        self.box = nn.Conv2d(channels, box_out, 1)

    def towers(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classification and the box outputs ``(k·n, cls_out, R, R)``, ``(k·n, box_out, R, R)``."""
        response = depthwise_xcorr(self.adjust_z(a), self.adjust_x(b))
        return self.cls(self.cls_tower(response)), self.box(self.box_tower(response))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.forward(a, b)


def change(r: np.ndarray) -> np.ndarray:
    """How much a ratio ``r`` changes something, whichever way: ``max(r, 1/r)`` (≥ 1)."""
    return np.maximum(r, 1.0 / r)


def padded_side(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The side of the square of a ``w×h`` box with SiamFC's context margin: ``√((w+p)(h+p))``, ``p = (w+h)/2``."""
    return np.sqrt((w + (w + h) / 2) * (h + (w + h) / 2))


class BoxTracker(Tracker):
    """The tracker of a box head. Each frame: one search image around the last position (at the
    scale where the last box's exemplar region is ``exemplar_size`` pixels), the head's candidate
    boxes and scores (:meth:`candidates`), each score multiplied by a penalty on the change of scale
    and aspect ratio against the last box (``penalty_k``) and mixed with a cosine window over the
    response (``window_influence``); the best candidate gives the new centre, and the size moves
    toward its box by ``scale_lr`` × its penalised score (size smoothing). Subclasses say how their
    head's output becomes candidates; they set ``kind`` and are registered in :data:`TRACKERS`."""

    kind: ClassVar[str]

    def init(self, frame: np.ndarray, box: np.ndarray) -> None:
        super().init(frame, box)
        hann = np.hanning(self._response_size)
        self.window = np.outer(hann, hann)

    def candidates(self, out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """From the head's output for one search image, the candidate boxes ``(4, m, R, R)``
        (``x0, y0, x1, y1``, search-image pixels from its centre) and their scores ``(m, R, R)``
        in [0, 1]: ``m`` candidates per position (1 for the anchor-free head, one per anchor for
        SiamRPN's)."""
        raise NotImplementedError

    @torch.inference_mode()
    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        if self._kernel is None:
            raise RuntimeError("call init(frame, box) before update(frame)")
        s = self.settings
        z_side = context_side(self.target[0], self.target[1], s.context)
        scale = self.exemplar_size / z_side  # search-image pixels per image pixel
        x_side = z_side * self.search_size / self.exemplar_size
        x = self._tensor([crop(frame, self.center, x_side, self.search_size, self.pad)])
        boxes, score = self.candidates(self.model.comparator(self._kernel, self.model.embed(x, "b")).float())
        w, h = boxes[2] - boxes[0], boxes[3] - boxes[1]
        tw, th = self.target * scale
        penalty = np.exp(-(change((tw / th) / (w / h)) * change(padded_side(w, h) / padded_side(tw, th)) - 1)
                         * s.penalty_k)  # fmt: skip
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
