"""Encoders with self-attention: ``vit`` (a small vision transformer on image patches, or on the
feature map of a convolutional stem) and ``trajectory_transformer`` (a transformer encoder over
pen or object trajectories, after a strided 1-D convolutional stem).

Both keep the attention weights of their last forward pass when asked (``keep_attention``), so
:mod:`twinnet.explain` can roll them out into a map of the input (:class:`HasAttention`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import nn

from twinnet.encoders.conv import _size_pair
from twinnet.encoders.registry import positive_float, positive_int, register_encoder


@runtime_checkable
class HasAttention(Protocol):
    """An encoder whose tokens stand for regions of the input and that records its attention.

    ``keep_attention`` switches recording on; ``attention_maps`` are the last forward pass's weights,
    one ``(batch, heads, tokens, tokens)`` tensor per block; ``token_grid`` says how the input tokens
    (after any class token, ``prefix_tokens`` of them) lie on the input: ``(rows, cols)`` for images,
    ``(1, steps)`` for sequences."""

    keep_attention: bool
    prefix_tokens: int

    def attention_maps(self) -> list[torch.Tensor]: ...

    def token_grid(self) -> tuple[int, int]: ...


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: multi-head self-attention and an MLP, each with a residual.

    The attention is written out (not ``nn.MultiheadAttention``) so its weights can be kept, with
    their gradients, for attention rollout."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)
        self.keep = False
        self.attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        if pad is not None:  # (b, n) True where a step is padding: no token attends to it
            logits = logits.masked_fill(pad[:, None, None, :], float("-inf"))
        weights = logits.softmax(-1)
        if self.keep:
            if weights.requires_grad:
                weights.retain_grad()
            self.attention = weights
        out = (self.drop(weights) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.proj(out))
        return x + self.drop(self.mlp(self.norm2(x)))


class _Recording(nn.Module):
    """What both attention encoders share: blocks whose weights can be kept."""

    blocks: nn.ModuleList
    prefix_tokens: int = 0

    def _blocks(self) -> list[AttentionBlock]:
        return [block for block in self.blocks if isinstance(block, AttentionBlock)]

    @property
    def keep_attention(self) -> bool:
        return any(block.keep for block in self._blocks())

    @keep_attention.setter
    def keep_attention(self, value: bool) -> None:
        for block in self._blocks():
            block.keep = value
            if not value:
                block.attention = None

    def attention_maps(self) -> list[torch.Tensor]:
        maps = [block.attention for block in self._blocks()]
        kept = [m for m in maps if m is not None]
        if len(kept) != len(maps):
            raise RuntimeError("no attention was kept: set keep_attention = True and run a forward pass")
        return kept


def _check_fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), not {value!r}")
    return float(value)


@register_encoder("vit")
class ViTEncoder(_Recording):
    """A small vision transformer for small images.

    ``stem: patch`` cuts the image into ``patch``×``patch`` squares, each linearly embedded (ViT,
    Dosovitskiy et al. 2021); ``stem: conv`` embeds the feature map of ``conv_blocks`` × (3×3 conv →
    BatchNorm → ReLU → 2×2 max-pool) instead, one token per cell (a hybrid, as conv stems help
    transformers that see little data). Learned position embeddings, ``depth`` pre-norm blocks,
    then the class token (``pool: cls``) or the mean of the tokens (``pool: mean``), projected to
    ``embedding_dim``.

    Args:
        in_channels: 1 (grayscale) or 3 (RGB).
        input_size: ``H`` or ``(H, W)``; with ``stem: patch`` a multiple of ``patch``.
        patch: patch side in pixels (``stem: patch``).
        stem: ``patch`` or ``conv``.
        conv_blocks: pooling blocks of the conv stem (each halves the grid).
        dim: token width; heads: attention heads (``dim`` a multiple of it); depth: blocks.
        mlp_ratio: width of each block's MLP relative to ``dim``.
        embedding_dim: output size.
        pool: ``cls`` or ``mean``.
        dropout: dropout in the blocks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | Sequence[int] = 28,
        patch: int = 4,
        stem: Literal["patch", "conv"] = "patch",
        conv_blocks: int = 2,
        dim: int = 64,
        heads: int = 4,
        depth: int = 4,
        mlp_ratio: float = 2.0,
        embedding_dim: int = 64,
        pool: Literal["cls", "mean"] = "mean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        dim, heads, depth = positive_int(dim, "dim"), positive_int(heads, "heads"), positive_int(depth, "depth")
        embedding_dim = positive_int(embedding_dim, "embedding_dim")
        positive_float(mlp_ratio, "mlp_ratio")
        dropout = _check_fraction(dropout, "dropout")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be cls or mean, not {pool!r}")
        h, w = _size_pair(input_size)
        if stem == "patch":
            patch = positive_int(patch, "patch")
            if h % patch or w % patch:
                raise ValueError(f"input_size {h}×{w} is not a multiple of patch {patch}")
            self.stem: nn.Module = nn.Conv2d(in_channels, dim, patch, stride=patch)
            self.grid = (h // patch, w // patch)
        elif stem == "conv":
            blocks = positive_int(conv_blocks, "conv_blocks")
            layers: list[nn.Module] = []
            channels = in_channels
            for i in range(blocks):
                width = dim if i == blocks - 1 else max(16, dim // 2)
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]  # fmt: skip
                channels = width
            self.stem = nn.Sequential(*layers)
            self.grid = (h, w)
            for _ in range(blocks):
                self.grid = (math.ceil(self.grid[0] / 2), math.ceil(self.grid[1] / 2))
        else:
            raise ValueError(f"stem must be patch or conv, not {stem!r}")
        self.pool = pool
        self.prefix_tokens = 1 if pool == "cls" else 0
        tokens = self.grid[0] * self.grid[1] + self.prefix_tokens
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, embedding_dim)
        self.output_dim = embedding_dim

    def token_grid(self) -> tuple[int, int]:
        return self.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)  # (batch, cells, dim)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1)
        tokens = tokens + self.position
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return self.head(tokens[:, 0] if self.cls is not None else tokens.mean(1))


@register_encoder("trajectory_transformer")
class TrajectoryTransformerEncoder(_Recording):
    """A transformer encoder over a trajectory ``(batch, features, time)`` (online signatures,
    tracks): a 1-D convolutional stem that shortens time by ``2**downsample`` (so attention over a
    256-step signature costs 64² per head), sinusoidal positions, ``depth`` pre-norm blocks with
    padded steps masked, and mean + max pooling over time, projected to ``embedding_dim``."""

    def __init__(
        self,
        in_features: int = 9,
        length: int | None = None,
        dim: int = 64,
        heads: int = 4,
        depth: int = 3,
        mlp_ratio: float = 2.0,
        downsample: int = 2,
        kernel: int = 5,
        embedding_dim: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        in_features = positive_int(in_features, "in_features")
        dim, heads, depth = positive_int(dim, "dim"), positive_int(heads, "heads"), positive_int(depth, "depth")
        kernel, embedding_dim = positive_int(kernel, "kernel"), positive_int(embedding_dim, "embedding_dim")
        positive_float(mlp_ratio, "mlp_ratio")
        dropout = _check_fraction(dropout, "dropout")
        if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 0:
            raise ValueError(f"downsample must be a whole number ≥ 0, not {downsample!r}")
        layers: list[nn.Module] = [nn.Conv1d(in_features, dim, kernel, padding=kernel // 2), nn.GELU()]
        for _ in range(downsample):
            layers += [nn.Conv1d(dim, dim, kernel, stride=2, padding=kernel // 2), nn.GELU()]
        self.stem = nn.Sequential(*layers)
        self.downsample = downsample
        self.length = length
        self.dim = dim
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(2 * dim, embedding_dim)
        self.output_dim = embedding_dim
        self._steps = 0

    def token_grid(self) -> tuple[int, int]:
        return (1, self._steps)

    def _positions(self, steps: int, device: torch.device) -> torch.Tensor:
        position = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
        rate = torch.exp(torch.arange(0, self.dim, 2, device=device, dtype=torch.float32)
                         * (-math.log(10000.0) / self.dim))  # fmt: skip
        table = torch.zeros(steps, self.dim, device=device)
        table[:, 0::2] = torch.sin(position * rate)
        table[:, 1::2] = torch.cos(position * rate)[:, : self.dim // 2]
        return table[None]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.stem(x).transpose(1, 2)  # (batch, steps, dim)
        self._steps = h.shape[1]
        h = h + self._positions(h.shape[1], h.device)
        pad = None
        if lengths is not None:
            for _ in range(self.downsample):
                lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
            pad = torch.arange(h.shape[1], device=h.device)[None] >= lengths.to(h.device)[:, None]
        for block in self.blocks:
            h = block(h, pad)
        h = self.norm(h)
        if pad is None:
            return self.head(torch.cat([h.mean(1), h.amax(1)], 1))
        keep = (~pad).unsqueeze(-1)
        mean = (h * keep).sum(1) / keep.sum(1).clamp_min(1)
        peak = h.masked_fill(~keep, float("-inf")).amax(1)
        return self.head(torch.cat([mean, peak], 1))
