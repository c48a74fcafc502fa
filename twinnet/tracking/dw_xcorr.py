"""Depth-wise cross-correlation (SiamRPN++, Li et al. 2019): one response channel per feature channel.

:func:`depthwise_xcorr` correlates channel ``c`` of every exemplar map ``z_i`` with channel ``c``
of its search map ``x_i`` only, so a ``C``-channel exemplar gives a ``C``-channel response (SiamFC's
``xcorr`` sums the channels into one). The whole batch is one grouped
convolution with ``n·C`` groups. The box heads (:mod:`twinnet.tracking.anchor_free`) read these
responses; the ``dw_xcorr`` comparator fuses them into one score map with a learned 1×1 head,
so a SiamFC tracker and its loss can use it in place of ``xcorr``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from twinnet.compare import COMPARATORS
from twinnet.tracking.xcorr import ScoreMapComparator


def depthwise_xcorr(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The per-channel correlation of exemplar maps ``z (n, C, h, w)`` with search maps
    ``x (k·n, C, H, W)`` (search map ``j·n + i`` against exemplar ``i``): ``(k·n, C, H-h+1, W-w+1)``,
    where ``out[j·n+i, c] = z[i, c] ⋆ x[j·n+i, c]``."""
    if z.dim() != 4 or x.dim() != 4 or z.shape[1] != x.shape[1]:
        raise ValueError(f"depth-wise xcorr needs (n, C, h, w) and (k·n, C, H, W) feature maps, not "
                         f"{tuple(z.shape)} and {tuple(x.shape)}")  # fmt: skip
    n, c, h, w = z.shape
    if x.shape[0] % n:
        raise ValueError(f"{x.shape[0]} search maps for {n} exemplars (need a multiple)")
    if x.shape[2] < h or x.shape[3] < w:
        raise ValueError(f"a {h}×{w} exemplar map does not fit in a {x.shape[2]}×{x.shape[3]} search map")
    k = x.shape[0] // n
    out = F.conv2d(x.reshape(k, n * c, *x.shape[2:]), z.reshape(n * c, 1, h, w), groups=n * c)
    return out.reshape(k * n, c, *out.shape[2:])


@COMPARATORS.register("dw_xcorr")
class DepthwiseCrossCorrelation(ScoreMapComparator):
    """Depth-wise correlation of ``dim``-channel maps, fused into one score map by a 1×1 head
    (``dim`` → ``channels``, BatchNorm, ReLU → 1): ``(k·n, 1, H-h+1, W-w+1)`` logits, laid out as
    ``xcorr``'s (``k`` search images per exemplar)."""

    def __init__(self, dim: int, channels: int = 64) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive whole number, not {channels!r}")
        self.fuse = nn.Sequential(
            nn.Conv2d(dim, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1),
        )  # fmt: skip

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fuse(depthwise_xcorr(a, b))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The score map: logits, larger where the exemplar is more likely."""
        return self.logits(a, b)
