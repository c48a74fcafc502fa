"""Convolutional image encoders: ``conv4`` (Vinyals et al. 2016) and ``koch`` (Koch et al. 2015)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from twinnet.encoders.registry import optional_positive_int, positive_float, positive_int, register_encoder


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


@torch.no_grad()
def _flat_dim(features: nn.Module, in_channels: int, size: tuple[int, int]) -> int:
    was_training = features.training
    features.eval()
    n = features(torch.zeros(1, in_channels, *size)).flatten(1).shape[1]
    features.train(was_training)
    return int(n)


@register_encoder("conv4")
class Conv4Encoder(nn.Module):
    """``blocks`` × (3×3 conv → BatchNorm → ReLU → 2×2 max-pool), flattened, optionally projected.

    Pooling uses ``ceil_mode`` so small inputs (8×8 digits) survive four blocks; for 28×28 input
    and no projection the embedding has 64 dimensions, as in Vinyals et al. (2016).

    Args:
        in_channels: 1 (grayscale) or 3 (RGB).
        input_size: ``H`` or ``(H, W)`` of the input images.
        hidden: channels of every conv layer.
        blocks: number of conv blocks.
        embedding_dim: size of a final linear projection; ``None`` keeps the flattened features.
        dropout: dropout before the projection.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | Sequence[int] = 28,
        hidden: int = 64,
        blocks: int = 4,
        embedding_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        positive_int(in_channels, "in_channels")
        positive_int(hidden, "hidden")
        positive_int(blocks, "blocks")
        embedding_dim = optional_positive_int(embedding_dim, "embedding_dim")
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(blocks):
            layers += [
                nn.Conv2d(channels, hidden, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            channels = hidden
        self.features = nn.Sequential(*layers)
        flat = _flat_dim(self.features, in_channels, _size_pair(input_size))
        if embedding_dim is None:
            self.head: nn.Module = nn.Identity()
            self.output_dim = flat
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(flat, embedding_dim))
            self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@register_encoder("koch")
class KochEncoder(nn.Module):
    """The convolutional twin of Koch, Zemel & Salakhutdinov (2015), built for 105×105 input.

    conv 64@10×10 → pool → 128@7×7 → pool → 128@4×4 → pool → 256@4×4 → fully connected
    ``embedding_dim`` (4096 in the paper) with a sigmoid. ``width`` scales every layer's channels,
    so a narrower variant trains on a CPU; any input size large enough for the kernels works.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | Sequence[int] = 105,
        embedding_dim: int = 4096,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        positive_int(in_channels, "in_channels")
        embedding_dim = positive_int(embedding_dim, "embedding_dim")
        positive_float(width, "width")
        c1, c2, c3, c4 = (max(1, round(c * width)) for c in (64, 128, 128, 256))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 10), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 7), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c3, c4, 4), nn.ReLU(inplace=True),
        )  # fmt: skip
        flat = _flat_dim(self.features, in_channels, _size_pair(input_size))
        self.head = nn.Sequential(nn.Linear(flat, embedding_dim), nn.Sigmoid())
        self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
