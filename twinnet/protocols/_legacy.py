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
from twinnet.data.text import TextItemSet
from twinnet.errors import DataError
from twinnet.metrics import (
    calc_accuracy,
    calc_average_precision,
    calc_best_accuracy,
    calc_best_f1,
    calc_correlations,
    calc_f1,
    calc_far_frr,
    calc_mean_ci95,
    calc_retrieval,
    calc_roc_auc,
    calc_verification_metrics,
)
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
    if isinstance(items, TextItemSet):
        from twinnet.inference import embed_texts

        return embed_texts(model, items.load(idx), min(batch_size, 64), side)
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


def sample_within_group_episodes(
    items: ItemSet, ways: int = 20, episodes: int = 400, *, seed: int = 0, attribute: str = "drawer"
) -> Episodes:
    """Lake et al.'s one-shot trials (Koch et al. 2015, Table 2): each episode picks ``ways``
    classes of one group (an Omniglot alphabet) and two different values A ≠ B of ``attribute``
    (drawers); the support is each class's item by A, the queries each class's item by B."""
    if items.groups is None or attribute not in items.attributes:
        raise DataError(
            f"within-group episodes need groups and a {attribute!r} per item (Omniglot file names give both)"
        )
    by_key: dict[tuple[int, int], int] = {}
    for i, (c, a) in enumerate(zip(items.labels.tolist(), items.attributes[attribute].tolist())):
        by_key.setdefault((c, a), i)
    values_of: dict[int, set[int]] = {}
    group_classes: dict[int, list[int]] = {}
    for c, a in by_key:
        values_of.setdefault(c, set()).add(a)
    for c in values_of:
        group_classes.setdefault(int(items.groups[items.labels == c][0]), []).append(c)
    pools = [sorted(cs) for _, cs in sorted(group_classes.items()) if len(cs) >= ways]
    if not pools:
        raise DataError(f"no group has {ways} classes for {ways}-way within-group episodes")
    rng = numpy_rng(seed, 13)
    support = np.empty((episodes, ways, 1), np.int64)
    query = np.empty((episodes, ways), np.int64)
    for e in range(episodes):
        pool = pools[rng.integers(len(pools))]
        classes = rng.choice(pool, ways, replace=False)
        common = sorted(set.intersection(*(values_of[int(c)] for c in classes)))
        if len(common) < 2:
            raise DataError("within-group episodes need two drawers shared by all classes of an episode")
        a, b = rng.choice(common, 2, replace=False)
        support[e, :, 0] = [by_key[(int(c), int(a))] for c in classes]
        query[e] = [by_key[(int(c), int(b))] for c in classes]
    return Episodes(support, query, np.arange(ways)[None].repeat(episodes, 0))


def evaluate_within_group(
    model: nn.Module, items: ItemSet, ways: int = 20, episodes: int = 400, *, seed: int = 0,
    embeddings: torch.Tensor | None = None,
) -> NWayResult:  # fmt: skip
    """Within-alphabet ``ways``-way one-shot accuracy (drawer A as support, drawer B as queries)."""
    sampled = sample_within_group_episodes(items, ways, episodes, seed=seed)
    emb = embed_batches(model, items) if embeddings is None else embeddings
    mean, ci = calc_mean_ci95(classify_episodes(model.comparator, emb, sampled))
    return NWayResult(mean, ci, ways, 1, episodes)


@torch.no_grad()
def evaluate_runs(model: nn.Module, runs: Sequence[Any]) -> NWayResult:
    """Accuracy on official one-shot runs: each test image takes the class of the nearest support image."""
    device = model_device(model)
    model.eval()
    per_run = []
    for run in runs:
        sup = model.embed(run.support.to(device))
        tst = model.embed(run.test.to(device))
        predicted = model.comparator.pairwise_similarity(tst, sup).argmax(1).cpu().numpy()
        per_run.append(float((predicted == np.asarray(run.answer)).mean()))
    mean, ci = calc_mean_ci95(per_run)
    return NWayResult(mean, ci, int(runs[0].support.shape[0]), 1, len(runs))


# -- protocols on given pairs (text similarity, paraphrase, duplicates, retrieval) -------------------


def pair_similarities(model: nn.Module, items: ItemSet, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Native comparator values and similarities (larger = more alike) of ``pairs``; each item is
    embedded once (by the first encoder for ``a`` items and the second for ``b`` items)."""
    emb_a = embed_batches(model, items, side="a")
    emb_b = emb_a if not hasattr(model, "encoder_b") else embed_batches(model, items, side="b")
    native = score_pairs(model, emb_a, emb_b, pairs)
    return native, (-native if model.comparator.is_distance else native)


@dataclass
class CorrelationResult:
    """Graded similarity (STS): Spearman and Pearson correlation of model similarity with gold scores."""

    spearman: float
    pearson: float
    n_pairs: int
    primary_metric: str = "spearman"

    @property
    def primary(self) -> float:
        return self.spearman

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": "sts", "n_pairs": self.n_pairs, "spearman": self.spearman, "pearson": self.pearson}


def evaluate_sts(model: nn.Module, items: ItemSet, pairs: Pairs) -> CorrelationResult:
    """STS protocol: correlation of the comparator's similarity (cosine for text models) with
    ``pairs.score``. Spearman is the primary metric (only the order of similarities matters)."""
    if pairs.score is None:
        raise DataError("the sts protocol needs graded pairs (a score per pair, e.g. STS-B); these have labels only")
    _, sim = pair_similarities(model, items, pairs)
    c = calc_correlations(sim, pairs.score)
    return CorrelationResult(c["spearman"], c["pearson"], len(pairs))


@dataclass
class PairClassificationResult:
    """Paraphrase / duplicate detection on labelled pairs: decisions at the calibrated threshold
    (accuracy, F1, FAR, FRR), threshold-free figures (average precision, ROC AUC), and, marked as
    oracle, the best accuracy and F1 any threshold would give on these very pairs."""

    metrics: dict[str, float]
    n_pairs: int
    threshold: float | None
    primary_metric: str = "f1"

    @property
    def primary(self) -> float:
        return self.metrics.get(self.primary_metric, self.metrics["average_precision"])

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": "pairs", "n_pairs": self.n_pairs, "threshold": self.threshold, **self.metrics}


def evaluate_pairs(
    model: nn.Module, items: ItemSet, pairs: Pairs, calibration: Calibration | None = None
) -> PairClassificationResult:
    """Pairs protocol: with a ``calibration`` (chosen on held-out *training* pairs and stored in the
    model) the decisions at its default threshold give accuracy and F1."""
    _, sim = pair_similarities(model, items, pairs)
    same = pairs.same
    metrics = {"average_precision": calc_average_precision(sim, same), "roc_auc": calc_roc_auc(sim, same)}
    best_f1, _ = calc_best_f1(sim, same)
    metrics["oracle_best_f1"] = best_f1
    metrics["oracle_best_accuracy"] = calc_best_accuracy(sim, same)[0]
    metrics["positive_share"] = float(np.mean(same))
    threshold = None
    if calibration is not None:
        t = calibration.thresholds[calibration.default].value  # in the similarity scale
        far, frr = calc_far_frr(sim, same, t)
        metrics.update({"accuracy": calc_accuracy(sim, same, t), "f1": calc_f1(sim, same, t), "far": far, "frr": frr})
        threshold = calibration.native_threshold()
    result = PairClassificationResult(metrics, len(pairs), threshold)
    if calibration is None:
        result.primary_metric = "average_precision"
    return result


@dataclass
class RetrievalResult:
    """Query → document retrieval: recall@k and MRR@10 over the queries."""

    metrics: dict[str, float]
    n_queries: int
    n_documents: int
    primary_metric: str = "mrr@10"

    @property
    def primary(self) -> float:
        return self.metrics[self.primary_metric]

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": "retrieval", "n_queries": self.n_queries, "n_documents": self.n_documents, **self.metrics}


@torch.no_grad()
def evaluate_retrieval(
    model: nn.Module, items: ItemSet, pairs: Pairs, ks: Sequence[int] = (1, 5, 10), batch_size: int = 1024
) -> RetrievalResult:
    """Retrieval protocol on pairs: every distinct ``a`` item with at least one positive pair is a
    query, every distinct ``b`` item a document of the corpus, and a query's relevant documents are
    its positive partners. Queries are embedded by the first encoder, documents by the second."""
    positive = {}
    for a, b in zip(pairs.a[pairs.same].tolist(), pairs.b[pairs.same].tolist()):
        positive.setdefault(a, set()).add(b)
    if not positive:
        raise DataError(
            "the retrieval protocol needs positive pairs (label 1, or a score above the positive threshold)"
        )
    queries = np.array(sorted(positive))
    documents = np.unique(pairs.b)
    column = {int(d): i for i, d in enumerate(documents)}
    relevant = [{column[d] for d in positive[int(q)]} for q in queries]
    q_emb = embed_batches(model, items, queries, side="a")
    d_emb = embed_batches(model, items, documents, side="b")
    device = model_device(model)
    d_dev = d_emb.to(device)
    sims = torch.cat([
        model.comparator.pairwise_similarity(q_emb[i : i + batch_size].to(device), d_dev).float().cpu()
        for i in range(0, len(q_emb), batch_size)
    ])  # fmt: skip
    return RetrievalResult(calc_retrieval(sims, relevant, ks), len(queries), len(documents))
