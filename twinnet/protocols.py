"""Evaluation protocols: verification on pairs and N-way K-shot classification episodes.

Every protocol embeds each item once, in batches, and compares embeddings; the encoder never runs
once per pair. Each result has a ``primary_metric`` and ``to_dict()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from twinnet.calibrate import Calibration
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs, balanced_pairs
from twinnet.errors import DataError
from twinnet.metrics import calc_far_frr, calc_mean_ci95, calc_verification_metrics
from twinnet.runtime import numpy_rng


def model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def embed_batches(
    model: nn.Module, items: ItemSet, indices: np.ndarray | None = None, batch_size: int = 256, side: str = "a"
) -> torch.Tensor:
    """Embeddings of ``items`` (or of ``indices`` into them), in eval mode, returned on the CPU."""
    idx = np.arange(len(items)) if indices is None else np.asarray(indices)
    device = model_device(model)
    embed = model.embed_a if side == "a" else model.embed_b
    was_training = model.training
    model.eval()
    try:
        out = [embed(items.load(idx[i : i + batch_size]).to(device)).cpu() for i in range(0, len(idx), batch_size)]
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, 0)
    return torch.cat(out)


@torch.no_grad()
def score_pairs(
    model: nn.Module, emb_a: torch.Tensor, emb_b: torch.Tensor, pairs: Pairs, batch_size: int = 65536
) -> np.ndarray:
    """Native comparator values for index ``pairs`` into two embedding tables (batched)."""
    comparator = model.comparator
    device = model_device(model)
    out = []
    for i in range(0, len(pairs), batch_size):
        a = emb_a[torch.from_numpy(pairs.a[i : i + batch_size])].to(device)
        b = emb_b[torch.from_numpy(pairs.b[i : i + batch_size])].to(device)
        out.append(comparator(a, b).float().cpu())
    return torch.cat(out).numpy()


def native_thresholds(metrics: dict[str, float], is_distance: bool) -> dict[str, float]:
    """Report thresholds in the comparator's native scale (metrics compute on similarities,
    i.e. on negated distances)."""
    if not is_distance:
        return metrics
    return {k: (-v if k.endswith("_threshold") else v) for k, v in metrics.items()}


@dataclass
class VerificationResult:
    """Verification on pairs: ROC AUC, EER, best accuracy, TAR@FAR, and the calibrated decision."""

    metrics: dict[str, float]
    n_pairs: int
    calibrated: dict[str, float] = field(default_factory=dict)
    primary_metric: str = "roc_auc"

    @property
    def primary(self) -> float:
        return self.metrics[self.primary_metric]

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": "verification", "n_pairs": self.n_pairs, **self.metrics, "calibrated": self.calibrated}


def evaluate_verification(
    model: nn.Module,
    items: ItemSet,
    pairs: Pairs | None = None,
    *,
    n_pairs: int = 2000,
    seed: int = 0,
    calibration: Calibration | None = None,
    far_targets: Sequence[float] = (1e-1, 1e-2, 1e-3),
    embeddings: torch.Tensor | None = None,
) -> tuple[VerificationResult, np.ndarray, np.ndarray]:
    """Verify ``pairs`` (default: ``n_pairs`` balanced pairs drawn with ``seed``).

    Returns the result and the native values and ``same`` flags of the pairs (for calibration).
    With a ``calibration`` the result also holds accuracy, FAR and FRR at its default threshold.
    """
    if pairs is None:
        pairs = balanced_pairs(items.labels, n_pairs, seed, 7)
    emb = embed_batches(model, items) if embeddings is None else embeddings
    native = score_pairs(model, emb, emb, pairs)
    scores = -native if model.comparator.is_distance else native
    metrics = calc_verification_metrics(scores, pairs.same, far_targets)
    metrics = native_thresholds(metrics, model.comparator.is_distance)
    result = VerificationResult(metrics, len(pairs))
    if calibration is not None:
        decisions = calibration.decide(native)
        t = calibration.thresholds[calibration.default].value
        far, frr = calc_far_frr(scores, pairs.same, t)
        result.calibrated = {
            "threshold": calibration.native_threshold(),
            "accuracy": float((decisions == pairs.same).mean()),
            "far": far,
            "frr": frr,
        }
    return result, native, pairs.same


@dataclass(frozen=True)
class Episodes:
    """N-way K-shot episodes as indices: ``support[e, w, s]``, ``query[e, q]`` and
    ``query_class[e, q]`` (the way, 0…N-1, each query belongs to)."""

    support: np.ndarray
    query: np.ndarray
    query_class: np.ndarray

    def __len__(self) -> int:
        return len(self.support)


def sample_episodes(
    labels: np.ndarray,
    ways: int,
    shots: int,
    episodes: int,
    *,
    queries_per_class: int = 1,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Episodes:
    """Seeded episodes: ``ways`` classes, ``shots`` support items and ``queries_per_class`` queries
    each, all distinct items. With ``groups``, each episode draws its classes from one group
    (e.g. within one Omniglot alphabet); groups with too few classes are skipped."""
    labels = np.asarray(labels)
    need = shots + queries_per_class
    members = {int(c): np.nonzero(labels == c)[0] for c in np.unique(labels)}
    eligible = np.array(sorted(c for c, m in members.items() if len(m) >= need), dtype=np.int64)
    if groups is None:
        pools = [eligible]
    else:
        class_group = {int(labels[m[0]]): int(groups[m[0]]) for m in members.values()}
        by_group: dict[int, list[int]] = {}
        for c in eligible:
            by_group.setdefault(class_group[int(c)], []).append(int(c))
        pools = [np.array(v) for _, v in sorted(by_group.items()) if len(v) >= ways]
    if not pools or max(len(p) for p in pools) < ways:
        raise DataError(
            f"{ways}-way {shots}-shot episodes need {ways} classes with at least {need} items each"
            + (" within one group" if groups is not None else "")
            + f"; found {len(eligible)} such classes"
        )
    rng = numpy_rng(seed, 11)
    support = np.empty((episodes, ways, shots), np.int64)
    query = np.empty((episodes, ways * queries_per_class), np.int64)
    query_class = np.repeat(np.arange(ways), queries_per_class)[None].repeat(episodes, 0)
    for e in range(episodes):
        pool = pools[rng.integers(len(pools))]
        classes = rng.choice(pool, ways, replace=False)
        for w, c in enumerate(classes):
            chosen = rng.choice(members[int(c)], need, replace=False)
            support[e, w] = chosen[:shots]
            query[e, w * queries_per_class : (w + 1) * queries_per_class] = chosen[shots:]
    return Episodes(support, query, query_class)


@dataclass
class NWayResult:
    accuracy: float
    ci95: float
    ways: int
    shots: int
    episodes: int
    primary_metric: str = "accuracy"

    @property
    def primary(self) -> float:
        return self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": "oneshot" if self.shots == 1 else "nway",
            "ways": self.ways,
            "shots": self.shots,
            "episodes": self.episodes,
            "accuracy": self.accuracy,
            "ci95": self.ci95,
        }


@torch.no_grad()
def classify_episodes(
    comparator: nn.Module,
    embeddings: torch.Tensor,
    episodes: Episodes,
    prototype: Literal["nearest", "mean"] = "nearest",
) -> np.ndarray:
    """Per-episode accuracy: each query takes the class of its most similar support shot
    (``nearest``) or class-mean embedding (``mean``)."""
    device = next(iter(comparator.parameters()), embeddings).device
    n_ep, ways, shots = episodes.support.shape
    acc = np.empty(n_ep)
    for e in range(n_ep):
        sup = embeddings[torch.from_numpy(episodes.support[e].ravel())].to(device)
        qry = embeddings[torch.from_numpy(episodes.query[e])].to(device)
        if prototype == "mean":
            sim = comparator.pairwise_similarity(qry, sup.view(ways, shots, -1).mean(1))
        else:
            sim = comparator.pairwise_similarity(qry, sup).view(len(qry), ways, shots).amax(2)
        predicted = sim.argmax(1).cpu().numpy()
        acc[e] = (predicted == episodes.query_class[e]).mean()
    return acc


def evaluate_nway(
    model: nn.Module,
    items: ItemSet,
    ways: int = 5,
    shots: int = 1,
    episodes: int = 1000,
    *,
    queries_per_class: int = 1,
    seed: int = 0,
    prototype: Literal["nearest", "mean"] = "nearest",
    within_groups: bool = False,
    embeddings: torch.Tensor | None = None,
    sampled: Episodes | None = None,
) -> NWayResult:
    """N-way K-shot accuracy with a 95% confidence interval over seeded episodes."""
    sampled = sampled or sample_episodes(
        items.labels, ways, shots, episodes, queries_per_class=queries_per_class, seed=seed,
        groups=items.groups if within_groups else None,
    )  # fmt: skip
    emb = embed_batches(model, items) if embeddings is None else embeddings
    acc = classify_episodes(model.comparator, emb, sampled, prototype)
    mean, ci = calc_mean_ci95(acc)
    return NWayResult(mean, ci, ways, shots, len(sampled))
