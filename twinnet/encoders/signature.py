"""Encoders for signatures: ``signet`` (offline images, after Dey et al. 2017) and, for pen
trajectories, ``tdnn`` (a time-delay / 1-D convolutional network, as in Bromley et al. 1993) and
``gru`` (bidirectional, recurrent). The sequence encoders pool over time (mean and max), so any
length works; padded steps can be masked with ``lengths``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from twinnet.encoders.conv import _flat_dim, _size_pair
from twinnet.encoders.registry import positive_float, positive_int, positive_ints, register_encoder


@register_encoder("signet")
class SigNetEncoder(nn.Module):
    """A compact SigNet-style CNN: wide first filters, local response normalisation, max-pooling,
    then fully connected layers; ``width`` scales the channels (1.0 ≈ the paper's 96-256-384-256)."""

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | Sequence[int] = (155, 220),
        embedding_dim: int = 128,
        width: float = 0.25,
        hidden: int = 512,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        positive_int(in_channels, "in_channels")
        embedding_dim = positive_int(embedding_dim, "embedding_dim")
        hidden = positive_int(hidden, "hidden")
        positive_float(width, "width")
        c1, c2, c3, c4 = (max(8, round(c * width)) for c in (96, 256, 384, 256))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 11, stride=2, padding=5), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(c1, c2, 5, padding=2), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.BatchNorm2d(c4), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.AdaptiveAvgPool2d((3, 5)),
        )  # fmt: skip
        flat = _flat_dim(self.features, in_channels, _size_pair(input_size))
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embedding_dim)
        )
        self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _masked_pool(h: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Mean and max over time of ``(batch, channels, time)``, ignoring steps past ``lengths``."""
    if lengths is None:
        return torch.cat([h.mean(2), h.amax(2)], 1)
    steps = torch.arange(h.shape[2], device=h.device)
    mask = (steps[None] < lengths[:, None]).unsqueeze(1)
    mean = (h * mask).sum(2) / mask.sum(2).clamp_min(1)
    peak = h.masked_fill(~mask, float("-inf")).amax(2)
    return torch.cat([mean, peak], 1)


@register_encoder("tdnn")
class TDNNEncoder(nn.Module):
    """Time-delay network: 1-D convolutions over the trajectory (each a window of time steps),
    BatchNorm and ReLU, pooled over time. Input ``(batch, features, time)``."""

    def __init__(
        self, in_features: int = 9, length: int | None = None, channels: Sequence[int] = (64, 96, 128),
        kernel: int = 7, embedding_dim: int = 64, dropout: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__()
        in_features = positive_int(in_features, "in_features")
        channels = positive_ints(channels, "channels")
        kernel = positive_int(kernel, "kernel")
        embedding_dim = positive_int(embedding_dim, "embedding_dim")
        layers: list[nn.Module] = []
        width = in_features
        for i, c in enumerate(channels):
            layers += [nn.Conv1d(width, c, kernel, padding=kernel // 2, stride=2 if i else 1), nn.BatchNorm1d(c),
                       nn.ReLU(inplace=True)]  # fmt: skip
            width = c
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, embedding_dim))
        self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv(x)
        if lengths is not None:
            lengths = torch.div(lengths - 1, 2 ** (len(self.conv) // 3 - 1), rounding_mode="floor") + 1
        return self.head(_masked_pool(h, lengths))


@register_encoder("gru")
class GRUEncoder(nn.Module):
    """A bidirectional GRU over the trajectory, pooled over time. Input ``(batch, features, time)``."""

    def __init__(self, in_features: int = 9, length: int | None = None, hidden: int = 64, layers: int = 2,
                 embedding_dim: int = 64, dropout: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        for value, name in ((in_features, "in_features"), (hidden, "hidden"), (layers, "layers"),
                            (embedding_dim, "embedding_dim")):  # fmt: skip
            positive_int(value, name)
        self.gru = nn.GRU(in_features, hidden, layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.head = nn.Linear(4 * hidden, embedding_dim)
        self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h, _ = self.gru(x.transpose(1, 2))
        return self.head(_masked_pool(h.transpose(1, 2), lengths))
