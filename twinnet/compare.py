"""Comparators: turn two embeddings into a distance (smaller = more alike) or a score (larger = more alike).

Every comparator has

- ``forward(a, b)`` → one value per row pair, in its *native* scale;
- ``pairwise(a, b)`` → the ``(len(a), len(b))`` matrix of native values, computed on embeddings
  without a forward pass of the encoder per pair;
- ``similarity`` / ``pairwise_similarity`` → the same values oriented so that larger means "more
  alike" (a distance is negated), which is what metrics and calibration consume;
- ``is_distance``: whether the native value is a distance.

Probabilistic comparators (``weighted_l1``, ``mlp``) also give ``logits(a, b)`` for binary
cross-entropy; their native value is ``sigmoid(logits)``, the probability of "same".
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from twinnet.registry import Registry

COMPARATORS: Registry[Comparator] = Registry("comparator")

# Squared distances below this are treated as this, so sqrt never sees 0 and never makes NaN gradients.
_EPS = 1e-12


def pairwise_squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||²`` for all ``i, j``, differentiable, clamped at 0 against rounding."""
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


def safe_sqrt(squared: torch.Tensor) -> torch.Tensor:
    return squared.clamp_min(_EPS).sqrt()


class Comparator(nn.Module):
    """Base class. Subclasses set ``is_distance`` and implement ``forward``; ``pairwise`` defaults
    to a chunked broadcast of ``forward`` and should be overridden where a closed form exists."""

    is_distance: ClassVar[bool] = True
    #: The largest number of (row, column, feature) elements the default ``pairwise`` broadcasts at once.
    chunk_elements: ClassVar[int] = 1 << 24

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n, m, d = a.shape[0], b.shape[0], a.shape[1]
        rows = max(1, self.chunk_elements // max(1, m * d))
        out = []
        for start in range(0, n, rows):
            chunk = a[start : start + rows]
            left = chunk.unsqueeze(1).expand(-1, m, d).reshape(-1, d)
            right = b.unsqueeze(0).expand(chunk.shape[0], m, d).reshape(-1, d)
            out.append(self.forward(left, right).view(chunk.shape[0], m))
        return torch.cat(out) if out else a.new_zeros(0, m)

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        values = self.forward(a, b)
        return -values if self.is_distance else values

    def pairwise_similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        values = self.pairwise(a, b)
        return -values if self.is_distance else values

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            f"comparator {type(self).__name__} gives no logits; binary cross-entropy needs a "
            "probabilistic comparator such as 'weighted_l1' or 'mlp'"
        )

    @property
    def has_logits(self) -> bool:
        return type(self).logits is not Comparator.logits

    def to_similarity(self, values: torch.Tensor) -> torch.Tensor:
        """Orient native values so that larger means more alike."""
        return -values if self.is_distance else values


@COMPARATORS.register("euclidean")
class EuclideanDistance(Comparator):
    """``||a - b||₂``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return safe_sqrt((a - b).pow(2).sum(-1))

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return safe_sqrt(pairwise_squared_euclidean(a, b))


@COMPARATORS.register("squared_euclidean")
class SquaredEuclideanDistance(Comparator):
    """``||a - b||₂²``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).pow(2).sum(-1)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return pairwise_squared_euclidean(a, b)


@COMPARATORS.register("cosine")
class CosineSimilarity(Comparator):
    """``a·b / (||a|| ||b||)``, a similarity in [-1, 1]."""

    is_distance = False

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(a, b, dim=-1, eps=1e-8)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.normalize(a, dim=-1, eps=1e-8) @ F.normalize(b, dim=-1, eps=1e-8).T


@COMPARATORS.register("cosine_distance")
class CosineDistance(Comparator):
    """``1 − cos(a, b)``, a distance in [0, 2]: cosine similarity for losses that need a distance
    (contrastive, online contrastive; sentence-transformers' default for them)."""

    is_distance = True

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=1e-8)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.normalize(a, dim=-1, eps=1e-8) @ F.normalize(b, dim=-1, eps=1e-8).T


@COMPARATORS.register("weighted_l1")
class WeightedL1(Comparator):
    """Koch et al. (2015): ``p(same) = sigmoid(Σ_j α_j |a_j - b_j| + β)`` with learned ``α``, ``β``.

    ``α`` starts negative (a larger difference means less likely the same), so training starts
    from a sensible score rather than a constant.
    """

    is_distance = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), -1.0 / dim**0.5))
        self.bias = nn.Parameter(torch.ones(()))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs() @ self.weight + self.bias

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(a, b))


@COMPARATORS.register("mahalanobis")
class MahalanobisDistance(Comparator):
    """A learned Mahalanobis distance ``sqrt((a-b)ᵀ M (a-b))`` with ``M = LᵀL``.

    Writing ``M`` as ``LᵀL`` keeps it positive semi-definite for every value of the trained
    parameter ``L`` (``rank × dim``; full rank by default), with no projection step.
    ``L`` starts as the identity, i.e. as the Euclidean distance. ``squared=True`` returns the
    quadratic form itself.
    """

    def __init__(self, dim: int, rank: int | None = None, squared: bool = False) -> None:
        super().__init__()
        rank = rank or dim
        self.squared = squared
        self.L = nn.Parameter(torch.eye(rank, dim))

    @property
    def M(self) -> torch.Tensor:
        return self.L.T @ self.L

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        q = ((a - b) @ self.L.T).pow(2).sum(-1)
        return q if self.squared else safe_sqrt(q)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        q = pairwise_squared_euclidean(a @ self.L.T, b @ self.L.T)
        return q if self.squared else safe_sqrt(q)


@COMPARATORS.register("mlp")
class MLPMetric(Comparator):
    """A learned non-linear metric: a small network on ``[|a-b|, a⊙b]`` giving ``p(same)``.

    Both features are symmetric in ``a`` and ``b``, so the score is too.
    """

    is_distance = False

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([(a - b).abs(), a * b], dim=-1)).squeeze(-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(a, b))


def build_comparator(name: str, params: dict[str, Any] | None, dim: int) -> Comparator:
    """Build comparator ``name`` for embeddings of size ``dim``."""
    import inspect

    factory = COMPARATORS.get(name)
    merged = {"dim": dim} if "dim" in inspect.signature(factory).parameters else {}
    merged.update(params or {})
    return COMPARATORS.build(name, merged, field=f"model.comparator (name {name!r})")
