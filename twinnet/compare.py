"""Comparators: turn two embeddings into a distance (smaller = more alike) or a score (larger = more alike).

This module is the one owner of *orientation*. Every other part of twinnet asks a comparator (or
the :class:`Orientation` it carries, which a saved calibration keeps) instead of flipping signs:

- ``forward(a, b)`` → one value per row pair, in the comparator's *native* scale;
- ``pairwise(a, b)`` → the ``(len(a), len(b))`` matrix of native values, computed on embeddings
  without a forward pass of the encoder per pair;
- ``orientation`` → whether native values are distances or scores, and everything that follows from
  it: ``to_similarity`` / ``from_similarity`` (larger = more alike, what metrics consume),
  ``matches(values, threshold)``, ``better(a, b)``, ``best(values)``, ``rank(values)`` and the
  human-readable ``rule``;
- ``index_plan()`` → how a vector index searches it (inner product or L2, the transform applied to
  stored and query vectors, how index scores map back to native values, and whether candidates must
  be re-scored exactly by the comparator itself).

Probabilistic comparators (``weighted_l1``, ``mlp``) also give ``logits(a, b)`` for binary
cross-entropy; their native value is ``sigmoid(logits)``, the probability of "same".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twinnet.registry import Registry

Values = TypeVar("Values", np.ndarray, torch.Tensor)
IndexMetric = Literal["ip", "l2", "hamming"]  # hamming: packed binary codes (twinnet.codes)


@dataclass(frozen=True)
class Orientation:
    """Which way a comparator's native values point: ``distance`` (smaller = more alike) or
    ``score`` (larger = more alike). Works on floats, NumPy arrays and tensors alike."""

    kind: Literal["distance", "score"]

    @property
    def is_distance(self) -> bool:
        return self.kind == "distance"

    @property
    def value_name(self) -> str:
        """What a native value is called in results: ``distance`` or ``score``."""
        return self.kind

    @property
    def rule(self) -> str:
        return "same if distance <= threshold" if self.is_distance else "same if score >= threshold"

    def to_similarity(self, values: Any) -> Any:
        """Native values oriented so that larger means more alike (a distance is negated)."""
        return -values if self.is_distance else values

    def from_similarity(self, similarity: Any) -> Any:
        """The inverse of :meth:`to_similarity` (a threshold found on similarities → native)."""
        return -similarity if self.is_distance else similarity

    def matches(self, values: Any, threshold: float) -> Any:
        """Decide "same": ``distance <= threshold`` or ``score >= threshold``."""
        return values <= threshold if self.is_distance else values >= threshold

    def better(self, a: Any, b: Any) -> Any:
        """Whether native value ``a`` means more alike than ``b`` (strictly)."""
        return a < b if self.is_distance else a > b

    def best(self, values: Any, axis: int | None = None) -> Any:
        """The most-alike value (min of distances, max of scores)."""
        if isinstance(values, torch.Tensor):
            if axis is None:
                return values.min() if self.is_distance else values.max()
            return values.amin(axis) if self.is_distance else values.amax(axis)
        return np.min(values, axis=axis) if self.is_distance else np.max(values, axis=axis)

    def rank(self, values: np.ndarray) -> np.ndarray:
        """Indices that sort ``values`` most-alike first (stable)."""
        return np.argsort(-self.to_similarity(np.asarray(values, dtype=np.float64)), kind="stable")

    def to_json(self) -> str:
        return self.kind

    @classmethod
    def from_json(cls, value: Any) -> Orientation:
        if value not in ("distance", "score"):
            raise ValueError(f"orientation must be 'distance' or 'score', not {value!r}")
        return DISTANCE if value == "distance" else SCORE

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Orientation:
        """The orientation a stored JSON object records: ``orientation`` (``distance``/``score``), or
        the boolean ``is_distance`` of files written by earlier versions."""
        if "orientation" in data:
            return cls.from_json(data["orientation"])
        return DISTANCE if data["is_distance"] else SCORE


DISTANCE = Orientation("distance")
SCORE = Orientation("score")


@dataclass(frozen=True)
class IndexPlan:
    """How a vector index (FAISS, Qdrant) searches embeddings compared by one comparator.

    The index stores ``transform(vectors)`` and is searched by ``metric`` (``ip``: inner product,
    ``l2``: Euclidean, ``hamming``: packed binary codes, searched by FAISS binary indexes).
    Index scores are similarities (inner product, or negated squared distance);
    ``to_native`` turns them into the comparator's values. With ``rescore`` the index only proposes
    candidates (by L2 on the raw embeddings) and the comparator scores them exactly.
    """

    metric: IndexMetric
    dim: int
    transform: Callable[[np.ndarray], np.ndarray]
    to_native: Callable[[np.ndarray], np.ndarray]
    rescore: bool = False


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))


def as_float32(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _sqrt_of_negated(similarity: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(-similarity, 0.0))


def _negated(similarity: np.ndarray) -> np.ndarray:
    return np.maximum(-similarity, 0.0)


#: built-ins defined here, plus ``hamming`` (twinnet.codes.comparator), registered on first use
COMPARATORS: Registry[Comparator] = Registry("comparator", builtins="twinnet.codes.comparator")

# Squared distances below this are treated as this, so sqrt never sees 0 and never makes NaN gradients.
_EPS = 1e-12


def pairwise_squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||²`` for all ``i, j``, differentiable, clamped at 0 against rounding."""
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


def safe_sqrt(squared: torch.Tensor) -> torch.Tensor:
    return squared.clamp_min(_EPS).sqrt()


class Comparator(nn.Module):
    """Base class. Subclasses set ``orientation`` and implement ``forward``; ``pairwise`` defaults
    to a chunked broadcast of ``forward`` and should be overridden where a closed form exists.

    ``index_plan`` defaults to "propose candidates by L2, re-score exactly", which is right for any
    comparator; comparators an index can search directly override it.
    """

    orientation: ClassVar[Orientation] = DISTANCE
    #: What it compares: ``vectors`` (one embedding per input: pair losses, verification, galleries)
    #: or ``maps`` (feature maps into a score map: tracking). Callers ask this, not the class.
    compares: ClassVar[Literal["vectors", "maps"]] = "vectors"
    #: The largest number of (row, column, feature) elements the default ``pairwise`` broadcasts at once.
    chunk_elements: ClassVar[int] = 1 << 24
    #: For a comparator of compact codes: the registry name of the (parameter-free) float
    #: comparator it stands in for, with which a gallery re-scores its candidates exactly; None
    #: for every comparator that is its own exact measure.
    rescore_with: str | None = None

    @property
    def is_distance(self) -> bool:
        return self.orientation.is_distance

    @property
    def has_weights(self) -> bool:
        """Whether it has learned parameters: then its registry name alone does not rebuild it,
        and an exported model carries it as a graph of its own."""
        return any(True for _ in self.parameters())

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

    # -- orientation: every caller asks these, nobody flips signs itself ----------------------------

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``forward`` oriented so that larger means more alike."""
        return self.orientation.to_similarity(self.forward(a, b))

    def pairwise_similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``pairwise`` oriented so that larger means more alike."""
        return self.orientation.to_similarity(self.pairwise(a, b))

    def to_similarity(self, values: Values) -> Values:
        """Orient native values so that larger means more alike."""
        return self.orientation.to_similarity(values)

    def from_similarity(self, similarity: Values) -> Values:
        return self.orientation.from_similarity(similarity)

    def matches(self, values: Any, threshold: float) -> Any:
        return self.orientation.matches(values, threshold)

    @property
    def rule(self) -> str:
        return self.orientation.rule

    # -- probabilistic comparators ------------------------------------------------------------------

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            f"comparator {type(self).__name__} gives no logits; binary cross-entropy needs a "
            "probabilistic comparator such as 'weighted_l1' or 'mlp'"
        )

    @property
    def has_logits(self) -> bool:
        return type(self).logits is not Comparator.logits

    def offers(self, value: Literal["distance", "similarity", "logits"]) -> bool:
        """Whether this comparator gives what a loss consumes: a ``distance`` (smaller = more
        alike), a ``similarity`` (larger = more alike) as its native value, or ``logits``."""
        if value == "logits":
            return self.has_logits
        return self.orientation.kind == ("distance" if value == "distance" else "score")

    # -- search -------------------------------------------------------------------------------------

    def index_plan(self, dim: int) -> IndexPlan:
        """How an index searches ``dim``-d embeddings compared by this comparator: by default L2
        candidates re-scored exactly with :meth:`pairwise` (correct for any comparator)."""
        return IndexPlan("l2", dim, as_float32, _sqrt_of_negated, rescore=True)

    @torch.no_grad()
    def score_matrix(self, queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """Native values of every query against every template, on NumPy arrays (for re-scoring)."""
        device = next(iter(self.parameters()), torch.empty(0)).device
        # copies: stored templates are often read-only views of a database buffer
        q = torch.tensor(np.asarray(queries, dtype=np.float32), device=device)
        t = torch.tensor(np.asarray(templates, dtype=np.float32), device=device)
        return self.pairwise(q, t).float().cpu().numpy()


@COMPARATORS.register("euclidean")
class EuclideanDistance(Comparator):
    """``||a - b||₂``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return safe_sqrt((a - b).pow(2).sum(-1))

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return safe_sqrt(pairwise_squared_euclidean(a, b))

    def index_plan(self, dim: int) -> IndexPlan:
        return IndexPlan("l2", dim, as_float32, _sqrt_of_negated)


@COMPARATORS.register("squared_euclidean")
class SquaredEuclideanDistance(Comparator):
    """``||a - b||₂²``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).pow(2).sum(-1)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return pairwise_squared_euclidean(a, b)

    def index_plan(self, dim: int) -> IndexPlan:
        return IndexPlan("l2", dim, as_float32, _negated)


@COMPARATORS.register("cosine")
class CosineSimilarity(Comparator):
    """``a·b / (||a|| ||b||)``, a similarity in [-1, 1]."""

    orientation = SCORE

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(a, b, dim=-1, eps=1e-8)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.normalize(a, dim=-1, eps=1e-8) @ F.normalize(b, dim=-1, eps=1e-8).T

    def index_plan(self, dim: int) -> IndexPlan:
        # inner product of unit vectors = cosine, whether or not the model normalises
        return IndexPlan("ip", dim, unit_rows, lambda sim: sim)


@COMPARATORS.register("cosine_distance")
class CosineDistance(Comparator):
    """``1 − cos(a, b)``, a distance in [0, 2]: cosine similarity for losses that need a distance
    (contrastive, online contrastive; sentence-transformers' default for them)."""

    orientation = DISTANCE

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=1e-8)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.normalize(a, dim=-1, eps=1e-8) @ F.normalize(b, dim=-1, eps=1e-8).T

    def index_plan(self, dim: int) -> IndexPlan:
        return IndexPlan("ip", dim, unit_rows, lambda sim: 1.0 - sim)


@COMPARATORS.register("weighted_l1")
class WeightedL1(Comparator):
    """Koch et al. (2015): ``p(same) = sigmoid(Σ_j α_j |a_j - b_j| + β)`` with learned ``α``, ``β``.

    ``α`` starts negative (a larger difference means less likely the same), so training starts
    from a sensible score rather than a constant.
    """

    orientation = SCORE

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

    def index_plan(self, dim: int) -> IndexPlan:
        # Euclidean distance after mapping through L is exactly this distance: the index searches it
        L = self.L.detach().cpu().numpy().astype(np.float32)

        def through_l(vectors: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.asarray(vectors, dtype=np.float32) @ L.T, dtype=np.float32)

        return IndexPlan("l2", int(L.shape[0]), through_l, _negated if self.squared else _sqrt_of_negated)


@COMPARATORS.register("mlp")
class MLPMetric(Comparator):
    """A learned non-linear metric: a small network on ``[|a-b|, a⊙b]`` giving ``p(same)``.

    Both features are symmetric in ``a`` and ``b``, so the score is too.
    """

    orientation = SCORE

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([(a - b).abs(), a * b], dim=-1)).squeeze(-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(a, b))


def comparator_names(compares: Literal["vectors", "maps"] = "vectors") -> list[str]:
    """The registered comparators that compare ``vectors`` (the default) or feature ``maps``."""
    return [
        name
        for name, factory in COMPARATORS.items()
        if isinstance(factory, type) and issubclass(factory, Comparator) and factory.compares == compares
    ]


def build_comparator(name: str, params: dict[str, Any] | None, dim: int) -> Comparator:
    """Build comparator ``name`` for embeddings of size ``dim``."""
    import inspect

    factory = COMPARATORS.get(name)
    merged = {"dim": dim} if "dim" in inspect.signature(factory).parameters else {}
    merged.update(params or {})
    return COMPARATORS.build(name, merged, field=f"model.comparator (name {name!r})")
