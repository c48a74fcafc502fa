"""The cross-correlation comparator: an exemplar's feature map slid over a search image's.

``xcorr(z, x)`` is the correlation of every exemplar map ``z_i`` with its search map ``x_i`` — a
score map with one value per position of the exemplar inside the search image (Bertinetto et al.
2016), computed for the whole batch as one grouped convolution. As in SiamFC the raw correlation
is scaled by a learned factor (starting at ``scale`` = 0.001: correlations of unnormalised maps are
in the hundreds) plus a learned bias, so its values are logits of "the target is here".
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twinnet.compare import COMPARATORS, SCORE, Comparator, IndexPlan
from twinnet.errors import ConfigError


class MapComparator(Comparator):
    """A comparator of feature *maps* (a tracking model): an exemplar's map against a search
    image's, giving maps of per-position outputs. It has no value per pair of vectors: no pairwise
    matrix, no vector index, and it offers nothing a pair loss consumes.

    ``tracker`` names the registered tracker (:data:`twinnet.tracking.tracker.TRACKERS`) that reads its
    maps: the comparator knows what its output channels mean, so it says who decodes them."""

    orientation = SCORE
    compares = "maps"
    tracker: ClassVar[str]

    def offers(self, value: Literal["distance", "similarity", "logits"]) -> bool:
        return False

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} compares feature maps into score maps; it has no pairwise matrix")

    # A user can point a gallery or a verification at a tracking model: say so in one line.
    def index_plan(self, dim: int) -> IndexPlan:
        raise ConfigError(f"{type(self).__name__} compares feature maps (a tracking model); a gallery needs a "
                          "comparator of vectors")  # fmt: skip

    def score_matrix(self, queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
        raise ConfigError(f"{type(self).__name__} compares feature maps (a tracking model); it scores no pairs "
                          "of inputs: use twinnet track")  # fmt: skip


class ScoreMapComparator(MapComparator):
    """A map comparator giving one score map ``(k·n, 1, R, R)`` (larger = the target is more likely
    centred there): trained by the score-map losses, read by the SiamFC tracker."""

    tracker = "siamfc"


@COMPARATORS.register("xcorr")
class CrossCorrelation(ScoreMapComparator):
    """``scale · (z ⋆ x) + bias`` for exemplar maps ``z (n, C, h, w)`` and search maps
    ``x (k·n, C, H, W)``: search image ``j·n + i`` is scored against exemplar ``i`` (``k`` search
    images per exemplar, e.g. the scales of one frame). Returns ``(k·n, 1, H-h+1, W-w+1)``."""

    def __init__(self, scale: float = 1e-3, learn_scale: bool = True) -> None:
        super().__init__()
        if not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"scale must be a positive number, not {scale!r}")
        self.weight = nn.Parameter(torch.tensor(float(scale)), requires_grad=bool(learn_scale))
        self.bias = nn.Parameter(torch.zeros(()))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        z, x = a, b
        if z.dim() != 4 or x.dim() != 4 or z.shape[1] != x.shape[1]:
            raise ValueError(f"xcorr needs (n, C, h, w) and (k·n, C, H, W) feature maps, not {tuple(z.shape)} "
                             f"and {tuple(x.shape)}")  # fmt: skip
        n, c = z.shape[:2]
        if x.shape[0] % n:
            raise ValueError(f"{x.shape[0]} search maps for {n} exemplars (need a multiple)")
        k = x.shape[0] // n
        out = F.conv2d(x.reshape(k, n * c, *x.shape[2:]), z, groups=n)
        return (out.reshape(k * n, 1, *out.shape[2:])) * self.weight + self.bias

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The score map: logits, larger where the exemplar is more likely."""
        return self.logits(a, b)

    def extra_repr(self) -> str:
        return f"scale={float(self.weight):.4g}"


def response_stride(search_size: int, exemplar_size: int, response_size: int, where: Any = "model") -> int:
    """Image pixels per response cell, from the sizes alone: ``(search - exemplar) / (response - 1)``
    (8 for SiamFC's 255, 127 and 17)."""
    if response_size < 2 or (search_size - exemplar_size) % (response_size - 1):
        raise ValueError(f"{where}: a {response_size}×{response_size} response for a {search_size} search image and "
                         f"a {exemplar_size} exemplar has no whole stride")  # fmt: skip
    return (search_size - exemplar_size) // (response_size - 1)
