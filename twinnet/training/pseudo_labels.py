"""Pseudo-labels: clusters of the model's own embeddings as classes (DeepCluster, CACTUs).

The ``pseudo_labels`` plan stands in for a P×K loss's own plan (``train.batch_plan: pseudo_labels``
with ``triplet``, ``contrastive``…). Every ``every`` epochs, before the epoch's batches are drawn,
it embeds all training items with the model as it is then, clusters the embeddings with FAISS
k-means into ``clusters`` groups and draws P×K batches of those clusters, mining inside them as the
loss always does. Items that have a real label (mixed data) keep it; only unlabelled items get a
cluster. With ``train.instance_weight > 0`` every item also comes as two augmented views, so a views
term trains beside the clusters (as with the ``pk`` plan).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from twinnet.config import TrainConfig
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.data.samplers import PKBatchSampler
from twinnet.errors import ConfigError, DataError
from twinnet.runtime import Stream
from twinnet.training.batch import LabelledBatch
from twinnet.training.plans import BATCH_PLANS, BatchJob, BatchPlan, PKPlan, epoch_size


def kmeans_plus_plus(x: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with probability
    proportional to the squared distance to the nearest centre so far. FAISS starts from random
    points, which on well-separated data often merges two clusters and splits a third."""
    centres = np.empty((clusters, x.shape[1]), np.float32)
    centres[0] = x[rng.integers(len(x))]
    nearest = ((x - centres[0]) ** 2).sum(1)
    for k in range(1, clusters):
        total = float(nearest.sum())
        pick = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centres[k] = x[pick]
        nearest = np.minimum(nearest, ((x - centres[k]) ** 2).sum(1))
    return centres


def kmeans_labels(
    embeddings: np.ndarray, clusters: int, seed: int, iterations: int = 20, restarts: int = 3
) -> np.ndarray:
    """Each row's k-means cluster: k-means++ seeding, then FAISS's Lloyd iterations; the run of
    lowest objective of ``restarts`` (seeded): ``(n,)`` ints in ``[0, clusters)``."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if len(x) < clusters:
        raise DataError(f"pseudo-labels: {clusters} clusters need at least as many items, not {len(x)}")
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(restarts):
        kmeans = faiss.Kmeans(x.shape[1], clusters, niter=iterations, seed=int(rng.integers(2**31)), verbose=False,
                              min_points_per_centroid=1, max_points_per_centroid=len(x))  # fmt: skip
        kmeans.train(x, init_centroids=kmeans_plus_plus(x, clusters, rng))
        distances, assign = kmeans.index.search(x, 1)
        objective = float(distances.sum())
        if best is None or objective < best[0]:
            best = (objective, assign[:, 0].astype(np.int64))
    assert best is not None
    return best[1]


@BATCH_PLANS.register("pseudo_labels")
class PseudoLabelPlan(PKPlan):
    """P×K batches (``train.classes_per_batch`` × ``train.items_per_class``) of k-means clusters of
    the model's embeddings, re-clustered every ``every`` epochs; labelled items keep their class.

    Options (``train.plan``): ``clusters`` (k, default 100), ``every`` (epochs between clusterings,
    default 1), ``iterations`` (k-means iterations, default 20), ``restarts`` (k-means++ runs, the
    best kept; default 3).
    """

    name = "pseudo_labels"
    batch_type = LabelledBatch

    def __init__(self, items: ItemSet, pairs: Pairs | None, config: TrainConfig, *, clusters: int = 100,
                 every: int = 1, iterations: int = 20, restarts: int = 3, **kwargs: Any) -> None:  # fmt: skip
        BatchPlan.__init__(self, items, pairs, config, **kwargs)
        if pairs is not None:
            raise ConfigError(f"loss {self.loss_name} with pseudo-labels clusters items; it cannot train from a "
                              "pairs file (set data.labels: false to use its texts or images)")  # fmt: skip
        for name, value in (
            ("clusters", clusters),
            ("every", every),
            ("iterations", iterations),
            ("restarts", restarts),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"train.plan.{name} must be a positive whole number, not {value!r}")
        if clusters < 2:
            raise ConfigError("train.plan.clusters must be at least 2 (one cluster has no negatives)")
        if config.instance_weight > 0 and self.augment is None:
            raise ConfigError("train.instance_weight needs data.augment.enabled: true")
        self.clusters, self.every, self.iterations, self.restarts = clusters, every, iterations, restarts
        c = config
        batch = min(c.classes_per_batch, clusters) * c.items_per_class
        self.world.require(batch // c.items_per_class, "train.classes_per_batch (P, classes in a batch)")
        self.batches_per_epoch = max(1, epoch_size(c, len(items)) // batch)
        self.label_weight, self.instance_weight = c.class_weight, c.instance_weight
        self.assigned: np.ndarray | None = None
        """The pseudo-label of every item (real classes first, then clusters), once clustered."""
        self.clustered_at: int | None = None
        # self.sampler (PKPlan's) is made from the first clustering, in before_epoch

    def _sampler(self, labels: np.ndarray) -> PKBatchSampler:
        c = self.config
        return PKBatchSampler(labels, c.classes_per_batch, c.items_per_class, self.batches_per_epoch, c.seed)

    @property
    def steps_per_epoch(self) -> int:
        return self.batches_per_epoch

    def labels_from(self, embeddings: np.ndarray, epoch: int) -> np.ndarray:
        """Real labels where items have them; cluster ids (after the real classes) elsewhere."""
        seed = int(np.random.SeedSequence([self.seed, Stream.PSEUDO_LABELS, epoch]).generate_state(1)[0])
        clusters = kmeans_labels(embeddings, self.clusters, seed, self.iterations, self.restarts)
        labelled = self.items.labelled
        n_real = int(self.items.labels[labelled].max()) + 1 if labelled.any() else 0
        return np.where(labelled, self.items.labels, n_real + clusters)

    def before_epoch(self, model: Any, epoch: int) -> None:
        if self.assigned is not None and (epoch % self.every != 0 or self.clustered_at == epoch):
            return
        from twinnet.embedding import embed_batches

        z = embed_batches(model, self.items).numpy()
        self.assigned = self.labels_from(z, epoch)
        self.clustered_at = epoch
        self.sampler = self._sampler(self.assigned)

    def _jobs(self, epoch: int, augment: Callable[[Any], Any]) -> list[BatchJob]:
        if self.assigned is None:
            raise RuntimeError("pseudo_labels: before_epoch(model, epoch) must run before the epoch's batches")
        return super()._jobs(epoch, augment)

    @property
    def batch_labels(self) -> np.ndarray:
        assert self.assigned is not None  # _jobs refuses to run before the first clustering
        return self.assigned

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["pseudo_labels"] = None if self.assigned is None else self.assigned.tolist()
        state["clustered_at"] = self.clustered_at
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("pseudo_labels") is not None:
            self.assigned = np.asarray(state["pseudo_labels"], np.int64)
            self.clustered_at = state.get("clustered_at")
            self.sampler = self._sampler(self.assigned)
