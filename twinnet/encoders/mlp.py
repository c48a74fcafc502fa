"""A multi-layer perceptron encoder for fixed-length vectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from twinnet.encoders.registry import positive_int, positive_ints, register_encoder


@register_encoder("mlp")
class MLPEncoder(nn.Module):
    """Linear → BatchNorm → ReLU (→ dropout) per hidden layer, then a linear embedding layer.

    Inputs of shape ``(batch, ...)`` are flattened, so an 8×8 image works as a 64-vector.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256, 256),
        embedding_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_features = positive_int(in_features, "in_features")
        hidden = positive_ints(hidden, "hidden")
        embedding_dim = positive_int(embedding_dim, "embedding_dim")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, embedding_dim))
        self.net = nn.Sequential(*layers)
        self.output_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))
