"""N-way K-shot classification: random episodes, Lake et al.'s within-alphabet trials, and the
official Omniglot one-shot runs. Each item is embedded once; queries take the class of the most
similar support shot (or class mean), as the comparator orders them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from twinnet.compare import Comparator
from twinnet.data.items import ItemSet
from twinnet.data.sources import Dataset
from twinnet.embedding import embed_batches
from twinnet.errors import DataError
from twinnet.metrics import calc_mean_ci95
from twinnet.model import AnyTwin
from twinnet.protocols.base import EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.runtime import Stream, numpy_rng

Prototype = Literal["nearest", "mean"]


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
    rng = numpy_rng(seed, Stream.EPISODES)
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
    rng = numpy_rng(seed, Stream.WITHIN_GROUP_EPISODES)
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


@torch.no_grad()
def classify_episodes(
    comparator: Comparator, embeddings: torch.Tensor, episodes: Episodes, prototype: Prototype = "nearest"
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


def _accuracy(protocol: EvaluationProtocol, per_episode: Sequence[float], **figures: Any) -> ProtocolResult:
    mean, ci = calc_mean_ci95(per_episode)
    return protocol.result({**figures, "episodes": len(per_episode), "accuracy": mean, "ci95": ci})


@register_protocol("nway")
class NWayProtocol(EvaluationProtocol):
    """Random N-way K-shot episodes over labelled items (classes never trained on); primary metric
    the mean accuracy, with a 95% confidence interval over episodes."""

    primary_metric = "accuracy"
    summary = "N-way K-shot accuracy over random episodes (--ways, --shots, --episodes, --prototype)"

    def __init__(
        self, ways: int = 5, shots: int = 1, episodes: int = 1000, queries_per_class: int = 1,
        prototype: Prototype = "nearest", within_groups: bool = False, seed: int = 0,
    ) -> None:  # fmt: skip
        if prototype not in ("nearest", "mean"):
            raise ValueError(f"prototype: {prototype!r} is not one of nearest, mean")
        if ways < 2 or shots < 1 or episodes < 1 or queries_per_class < 1:
            raise ValueError("ways must be at least 2, and shots, episodes and queries_per_class at least 1")
        self.ways, self.shots, self.episodes, self.queries_per_class = ways, shots, episodes, queries_per_class
        self.prototype: Prototype = prototype
        self.within_groups, self.seed = within_groups, seed

    def sample(self, items: ItemSet) -> Episodes:
        return sample_episodes(
            items.labels, self.ways, self.shots, self.episodes, queries_per_class=self.queries_per_class,
            seed=self.seed, groups=items.groups if self.within_groups else None,
        )  # fmt: skip

    def run(self, model: AnyTwin, items: ItemSet, embeddings: torch.Tensor | None = None) -> ProtocolResult:
        sampled = self.sample(items)
        emb = embed_batches(model, items) if embeddings is None else embeddings
        per_episode = classify_episodes(model.comparator, emb, sampled, self.prototype)
        return _accuracy(self, per_episode.tolist(), ways=self.ways, shots=self.shots)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        return self.run(model, data.items)


@register_protocol("oneshot")
class OneShotProtocol(NWayProtocol):
    """``nway`` under its most common name (one shot unless ``shots`` says otherwise)."""

    summary = "= nway"


@register_protocol("within-alphabet")
class WithinGroupProtocol(EvaluationProtocol):
    """Within-alphabet N-way one-shot trials: N classes of one group, drawer A as support and
    drawer B as queries (Lake et al.; Koch et al. 2015, Table 2)."""

    primary_metric = "accuracy"
    summary = "N classes of one alphabet, drawer A as support, drawer B as queries (Omniglot)"

    def __init__(self, ways: int = 20, episodes: int = 400, seed: int = 0) -> None:
        if ways < 2 or episodes < 1:
            raise ValueError("ways must be at least 2 and episodes at least 1")
        self.ways, self.episodes, self.seed = ways, episodes, seed

    def run(self, model: AnyTwin, items: ItemSet, embeddings: torch.Tensor | None = None) -> ProtocolResult:
        sampled = sample_within_group_episodes(items, self.ways, self.episodes, seed=self.seed)
        emb = embed_batches(model, items) if embeddings is None else embeddings
        return _accuracy(self, classify_episodes(model.comparator, emb, sampled).tolist(), ways=self.ways, shots=1)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        return self.run(model, data.items)


@register_protocol("omniglot-runs")
class OmniglotRunsProtocol(EvaluationProtocol):
    """The official one-shot runs (Lake et al. 2015): each test image takes the class of the most
    similar support image; accuracy per run, averaged."""

    primary_metric = "accuracy"
    needs = "runs"
    summary = "the official Omniglot one-shot runs (a folder of run01…run20)"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed  # the runs are fixed; accepted so every protocol takes a seed

    @torch.no_grad()
    def run(self, model: AnyTwin, runs: Sequence[Any]) -> ProtocolResult:
        per_run = []
        for run in runs:
            sup = embed_batches(model, run.support)
            tst = embed_batches(model, run.test)
            predicted = model.comparator.pairwise_similarity(tst.to(model.device), sup.to(model.device))
            per_run.append(float((predicted.argmax(1).cpu().numpy() == np.asarray(run.answer)).mean()))
        return _accuracy(self, per_run, ways=int(runs[0].support.shape[0]), shots=1)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        if not data.runs:
            raise DataError(f"{data.source}: the omniglot-runs protocol needs a folder of one-shot runs")
        return self.run(model, data.runs)


def evaluate_nway(
    model: AnyTwin, items: ItemSet, ways: int = 5, shots: int = 1, episodes: int = 1000, *,
    queries_per_class: int = 1, seed: int = 0, prototype: Prototype = "nearest", within_groups: bool = False,
    embeddings: torch.Tensor | None = None,
) -> ProtocolResult:  # fmt: skip
    """N-way K-shot accuracy with a 95% confidence interval over seeded episodes."""
    protocol = NWayProtocol(ways, shots, episodes, queries_per_class, prototype, within_groups, seed)
    return protocol.run(model, items, embeddings)


def evaluate_within_group(
    model: AnyTwin, items: ItemSet, ways: int = 20, episodes: int = 400, *, seed: int = 0,
    embeddings: torch.Tensor | None = None,
) -> ProtocolResult:  # fmt: skip
    """Within-alphabet ``ways``-way one-shot accuracy (drawer A as support, drawer B as queries)."""
    return WithinGroupProtocol(ways, episodes, seed).run(model, items, embeddings)


def evaluate_runs(model: AnyTwin, runs: Sequence[Any]) -> ProtocolResult:
    """Accuracy on official one-shot runs."""
    return OmniglotRunsProtocol().run(model, runs)
