"""``face_resnet``: a small residual network for 64–128 px face images on a CPU.

The layout follows the face-recognition ResNets (ArcFace's "IR" networks, Deng et al. 2019) scaled
down: a 3×3 stem with stride 2, four stages of basic residual blocks (the first block of each stage
after the first halves the resolution), then the "E" embedding head: BatchNorm → dropout → flatten
→ linear → BatchNorm. The flattened head keeps where on the face a feature is (eyes above mouth),
which global average pooling would throw away.

At 96×96 RGB with the default widths (32, 64, 128, 256) and one block per stage it has about 1.3 M
parameters and costs about 0.17 GMAC per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from twinnet.encoders.conv import _flat_dim, _size_pair
from twinnet.encoders.registry import positive_int, positive_ints, register_encoder


class _Block(nn.Module):
    """A basic residual block: BN → 3×3 conv → BN → PReLU → 3×3 conv (stride) → BN, plus the shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


@register_encoder("face_resnet")
class FaceResNetEncoder(nn.Module):
    """A small residual network with a flattened embedding head, for faces (64–128 px) on a CPU.

    Args:
        in_channels: 1 (grayscale) or 3 (RGB).
        input_size: ``H`` or ``(H, W)`` of the input images.
        widths: channels of the four (or any number of) stages.
        blocks: residual blocks per stage (one number per stage).
        embedding_dim: size of the embedding.
        dropout: dropout before the embedding layer.

    Example::

        >>> import torch
        >>> enc = FaceResNetEncoder(in_channels=3, input_size=64, widths=(8, 16, 16, 32), embedding_dim=32)
        >>> enc(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        in_channels: int = 3,
        input_size: int | Sequence[int] = 96,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = (1, 1, 1, 1),
        embedding_dim: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        positive_int(in_channels, "in_channels")
        widths = positive_ints(widths, "widths")
        blocks = positive_ints(blocks, "blocks")
        embedding_dim = positive_int(embedding_dim, "embedding_dim")
        if not widths or len(widths) != len(blocks):
            raise ValueError(f"widths and blocks need one entry per stage: got {len(widths)} and {len(blocks)}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0])
        )
        layers: list[nn.Module] = []
        c_in = widths[0]
        for stage, (width, n) in enumerate(zip(widths, blocks)):
            for i in range(n):
                layers.append(_Block(c_in, width, 2 if stage > 0 and i == 0 else 1))
                c_in = width
        self.features = nn.Sequential(self.stem, *layers, nn.BatchNorm2d(c_in))
        flat = _flat_dim(self.features, in_channels, _size_pair(input_size))
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(flat, embedding_dim),
                                  nn.BatchNorm1d(embedding_dim))  # fmt: skip
        self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
