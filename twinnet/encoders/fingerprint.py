"""``fingerprint_net``: a small residual network for fingerprint impressions that gives a global
embedding (what a gallery searches) and, from the same weights, a map of local descriptors (what
:mod:`twinnet.fingerprints.local` matches part by part).

The global embedding pools the last feature map (mean and max over positions, so a partial
impression is described by what it shows, wherever it lies) and projects it; the local map is the
third stage's features (stride 8: one descriptor per 8×8 pixels, ~0.8 mm at 250 dpi) through a 1×1
projection, L2-normalised per position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from twinnet.encoders.registry import positive_int, positive_ints, register_encoder
from twinnet.encoders.resnet import _Block


@register_encoder("fingerprint_net")
class FingerprintEncoder(nn.Module):
    """A residual network with pooled global and per-position local outputs, for fingerprints.

    Args:
        in_channels: 1 (greyscale).
        input_size: ``H`` or ``(H, W)`` of the inputs (any size works: the head pools).
        widths: channels of the four stages (strides 2, 4, 8, 16).
        embedding_dim: size of the global embedding.
        local_dim: size of each local descriptor.

    Example::

        >>> import torch
        >>> enc = FingerprintEncoder(in_channels=1, input_size=64, widths=(8, 8, 16, 16), embedding_dim=16)
        >>> enc(torch.zeros(2, 1, 64, 64)).shape, enc.local(torch.zeros(2, 1, 64, 64)).shape
        (torch.Size([2, 16]), torch.Size([2, 32, 8, 8]))
    """

    def __init__(self, in_channels: int = 1, input_size: int | Sequence[int] = 176,
                 widths: Sequence[int] = (16, 32, 64, 128), embedding_dim: int = 128,
                 local_dim: int = 32, dropout: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        positive_int(in_channels, "in_channels")
        widths = positive_ints(widths, "widths")
        if len(widths) != 4:
            raise ValueError(f"widths needs four stages, not {len(widths)}")
        embedding_dim = positive_int(embedding_dim, "embedding_dim")
        local_dim = positive_int(local_dim, "local_dim")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.PReLU(widths[0]))  # fmt: skip
        self.stage2 = _Block(widths[0], widths[1], 2)
        self.stage3 = nn.Sequential(_Block(widths[1], widths[2], 2), _Block(widths[2], widths[2], 1))
        self.stage4 = nn.Sequential(_Block(widths[2], widths[3], 2), _Block(widths[3], widths[3], 1),
                                    nn.BatchNorm2d(widths[3]))  # fmt: skip
        self.local_head = nn.Conv2d(widths[2], local_dim, 1)
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(2 * widths[3], embedding_dim),
                                  nn.BatchNorm1d(embedding_dim))  # fmt: skip
        self.output_dim = embedding_dim
        self.local_dim = local_dim

    def _stage3(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage3(self.stage2(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stage4(self._stage3(x))
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], 1)
        return self.head(pooled)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, local_dim, H/8, W/8)`` L2-normalised local descriptors."""
        return F.normalize(self.local_head(self._stage3(x)), dim=1)
