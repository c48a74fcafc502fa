"""Batch plans: what a loss trains from, epoch by epoch.

A loss names its plan (``loss.batch_plan``); the trainer builds that plan from the training items
(and fixed pairs, for a pairs file) and, each epoch, runs the plan's batch jobs on a background
thread. A plan knows how many steps an epoch has, builds each batch (loading and augmenting its
items) and has a ``state_dict`` that checkpoints carry, so a resumed run can check it continues the
same plan. Every random draw is seeded from ``(seed, stream, epoch)``: epoch ``e`` of a plan is
the same batches whenever it is drawn, which is what makes a resumed run equal an uninterrupted one.

The built-in plans:

- ``pairs`` — balanced same/different pairs drawn afresh each epoch from class labels
  (:class:`~twinnet.data.pairs.PairSampler`), or the fixed pairs of a pairs file, shuffled per epoch
  (texts grouped by length);
- ``scored_pairs`` — the fixed pairs of a graded pairs file (STS-B), with their ``score``;
- ``positive_pairs`` — the same pairs of a pairs file only (in-batch negatives for ranking losses);
- ``pk`` — P×K class-balanced labelled batches (:class:`~twinnet.data.samplers.PKBatchSampler`),
  optionally with two augmented views of each item (``train.instance_weight``);
- ``items`` — the labelled items shuffled, in plain batches (margin-softmax losses);
- ``views`` — the items (labelled or not) shuffled, each as two augmented views (label-free losses);
- ``pseudo_labels`` — P×K batches of the clusters of the model's own embeddings, re-clustered every
  few epochs (:mod:`twinnet.training.pseudo_labels`).

An epoch is one pass over the training data (as many pairs or items as there are training items)
unless ``train.samples_per_epoch`` says how many.

With several training processes (:mod:`twinnet.training.distributed`) the batches stay those of one
process; each process builds only its share of every batch (``self.world``): its own classes of a
P×K batch, every N-th pair or item of the others.

A new plan subclasses :class:`BatchPlan` and registers itself with ``@BATCH_PLANS.register(name)``;
a loss that sets ``batch_plan = name`` then trains from it.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from twinnet.config import TrainConfig
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs, PairSampler
from twinnet.data.samplers import PKBatchSampler
from twinnet.data.transforms import Augmenter
from twinnet.errors import ConfigError, DataError
from twinnet.registry import Registry, check_params
from twinnet.runtime import Stream, generator, numpy_rng
from twinnet.training.batch import Batch, LabelledBatch, PairBatch, ViewsBatch
from twinnet.training.distributed import World

BatchJob = Callable[[], Batch]
"""Builds one batch when called (on the prefetch thread)."""

BATCH_PLANS: Registry[BatchPlan] = Registry("batch plan")


class BatchPlan(ABC):
    """The batches of every epoch for one loss on one training set.

    Args:
        items: the training items.
        pairs: fixed training pairs into ``items`` (a pairs file), or ``None``.
        config: the training settings (seed, batch sizes, samples per epoch, …).
        augment: the augmentation applied to every loaded batch (``data.augment``, by the kind of input:
            :func:`~twinnet.data.transforms.build_augmenter`), or ``None``.
        loss_name: how error messages name the loss that asked for this plan.
    """

    name: ClassVar[str] = ""
    batch_type: ClassVar[type[Batch]] = Batch
    """The kind of batch this plan builds: a plan can stand in for a loss's own plan
    (``train.batch_plan``) only when it builds the same kind."""

    def __init__(
        self,
        items: ItemSet,
        pairs: Pairs | None,
        config: TrainConfig,
        *,
        augment: Augmenter | None = None,
        loss_name: str = "this loss",
    ) -> None:
        self.items = items
        self.config = config
        self.seed = config.seed
        self.augment = augment
        self.loss_name = loss_name
        self.next_epoch = 0
        self.world = World.current()
        """The training processes: with several, each builds only its share of every batch."""
        if config.input_similarity_weight > 0:
            if not issubclass(self.batch_type, LabelledBatch):
                raise ConfigError(
                    f"train.input_similarity_weight is a term of batch losses on labelled items; "
                    f"loss {loss_name} trains from {self.name or type(self).__name__} batches"
                )
            if items.texts is not None:
                raise ConfigError(
                    "train.input_similarity_weight compares inputs as numbers (images, vectors), not texts"
                )

    @property
    @abstractmethod
    def steps_per_epoch(self) -> int:
        """Batches in every epoch."""

    @abstractmethod
    def _jobs(self, epoch: int, augment: Callable[[Any], Any]) -> list[BatchJob]: ...

    def epoch_jobs(self, epoch: int) -> list[BatchJob]:
        """The batch jobs of ``epoch`` (0-based), in order; the same for the same seed and epoch."""
        aug_gen = generator(self.seed, Stream.AUGMENT, epoch, *self.world.stream)  # one stream per process
        augmenter = self.augment

        def augment(x: Any) -> Any:
            return augmenter(x, aug_gen) if augmenter is not None else x

        self.next_epoch = epoch + 1
        return self._jobs(epoch, augment)

    def before_epoch(self, model: Any, epoch: int) -> None:  # noqa: B027 - a hook most plans leave alone
        """Called by the trainer before it asks for ``epoch_jobs(epoch)``, with the model as it is
        then: a plan that draws its batches from the model's own embeddings (pseudo-labels) looks at
        it here. Most plans need nothing."""

    def fingerprint(self) -> str:
        """A digest of what the batches are drawn from (labels, pairs, sizes), to refuse resuming a
        checkpoint on other data."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.items.labels).tobytes())
        digest.update(repr((len(self.items), self.steps_per_epoch)).encode())
        return digest.hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: the plan, its seed, the next epoch to draw and a fingerprint of its data."""
        return {"plan": self.name, "seed": self.seed, "next_epoch": self.next_epoch,
                "steps_per_epoch": self.steps_per_epoch, "data": self.fingerprint()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's plan state; a DataError when it planned other batches."""
        mine = self.state_dict()
        differs = [k for k in ("plan", "seed", "steps_per_epoch", "data") if state.get(k) != mine[k]]
        if differs:
            theirs = ", ".join(f"{k} {state.get(k)!r}" for k in differs)
            ours = ", ".join(f"{k} {mine[k]!r}" for k in differs)
            raise DataError(f"cannot resume: the checkpoint's batches were planned with {theirs}; this run's are "
                            f"{ours} (other data or train settings)")  # fmt: skip
        self.next_epoch = int(state["next_epoch"])


def epoch_size(config: TrainConfig, n_items: int) -> int:
    """Pairs or items in one epoch: ``train.samples_per_epoch`` when set, else one pass over the
    ``n_items`` training items (each item the anchor of about one pair, for pair plans)."""
    return config.samples_per_epoch if config.samples_per_epoch is not None else max(1, n_items)


def plan_for(loss_plan: str, config: TrainConfig, loss_name: str) -> str:
    """The plan a loss trains from: its own (``loss_plan``), or ``train.batch_plan`` when that is set
    and builds the same kind of batch (``pseudo_labels`` for a ``pk`` loss such as triplet)."""
    chosen = config.batch_plan
    if chosen is None or chosen == loss_plan:
        return loss_plan
    theirs, ours = BATCH_PLANS.get(chosen), BATCH_PLANS.get(loss_plan)
    their_kind, our_kind = getattr(theirs, "batch_type", Batch), getattr(ours, "batch_type", Batch)
    if their_kind is Batch or their_kind is not our_kind:
        raise ConfigError(f"train.batch_plan: plan {chosen!r} builds {their_kind.__name__}es; loss {loss_name} "
                          f"trains from plan {loss_plan!r}, which builds {our_kind.__name__}es")  # fmt: skip
    return chosen


def build_plan(
    name: str,
    items: ItemSet,
    pairs: Pairs | None,
    config: TrainConfig,
    *,
    augment: Augmenter | None = None,
    loss_name: str = "this loss",
) -> BatchPlan:
    """The plan registered as ``name`` (an unknown name is a ConfigError listing the known ones),
    with the options of ``train.plan`` (an option the plan does not take is a ConfigError)."""
    factory = BATCH_PLANS.get(name)
    options = dict(config.plan)
    if options:
        check_params(factory, options, field=f"train.plan (plan {name!r})")
    try:
        return factory(items, pairs, config, augment=augment, loss_name=loss_name, **options)
    except TypeError as err:  # the built-in plans pass options on to BatchPlan, which takes none
        if not options:
            raise
        raise ConfigError(f"train.plan: plan {name!r} takes no options {sorted(options)} ({err})") from None


# -- pairs ------------------------------------------------------------------------------------------


def _text_lengths(items: ItemSet) -> np.ndarray | None:
    """Characters per text, for length-grouped batches; ``None`` for tensors (all one size)."""
    texts = items.texts
    return None if texts is None else np.array([len(t) for t in texts])


def _pair_job(items: ItemSet, p: Pairs, augment: Callable[[Any], Any]) -> BatchJob:
    def job() -> PairBatch:
        # Both sides load (and augment) as one batch, a then b, so the augmentation stream is drawn
        # in the same order whatever the model does with the halves.
        x = augment(items.load(np.concatenate([p.a, p.b])))
        n = len(p)
        score = None if p.score is None else torch.from_numpy(p.score)
        return PairBatch(x[:n], x[n:], torch.from_numpy(p.same), score)

    return job


class _FixedPairs:
    """Given pairs shuffled afresh each epoch; texts grouped by length (``train.group_by_length``)."""

    def __init__(self, items: ItemSet, pairs: Pairs, config: TrainConfig) -> None:
        self.pairs = pairs
        self.batch_size = config.batch_size
        self.seed = config.seed
        lengths = _text_lengths(items) if config.group_by_length else None
        # the longer text of each pair, in characters: what a batch pads to
        self.lengths = None if lengths is None else np.maximum(lengths[pairs.a], lengths[pairs.b])

    def __len__(self) -> int:
        return -(-len(self.pairs) // self.batch_size)

    def epoch(self, epoch: int) -> list[Pairs]:
        rng = numpy_rng(self.seed, Stream.PAIR_ORDER, epoch)
        order = rng.permutation(len(self.pairs))
        bs = self.batch_size
        if self.lengths is not None:
            order = group_by_length(order, self.lengths, bs, rng)
        return [self.pairs[order[i : i + bs]] for i in range(0, len(order), bs)]


def group_by_length(order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Reorder a shuffled epoch so each batch holds pairs of similar length (less padding, ~2× faster
    on STS-B), yet stays random: sort within windows of 50 batches, then shuffle whole batches."""
    window = 50 * batch_size
    grouped = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        grouped.append(chunk[np.argsort(-lengths[chunk], kind="stable")])
    flat = np.concatenate(grouped)
    batches = [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


def _pairs_digest(pairs: Pairs | None) -> bytes:
    if pairs is None:
        return b""
    parts = [pairs.a, pairs.b, pairs.same] + ([] if pairs.score is None else [pairs.score])
    return b"".join(np.ascontiguousarray(x).tobytes() for x in parts)


@BATCH_PLANS.register("pairs")
class PairsPlan(BatchPlan):
    """Balanced pairs sampled from class labels each epoch (``train.samples_per_epoch`` pairs, by
    default as many as there are training items, in batches of ``train.batch_size``), or the fixed
    pairs of a pairs file."""

    name = "pairs"
    batch_type = PairBatch

    def __init__(self, items: ItemSet, pairs: Pairs | None, config: TrainConfig, **kwargs: Any) -> None:
        super().__init__(items, pairs, config, **kwargs)
        self.pairs = self._select(pairs)
        self.world.require(config.batch_size, "train.batch_size")
        self.source: PairSampler | _FixedPairs
        if self.pairs is not None:
            self.source = _FixedPairs(items, self.pairs, config)
        else:
            items.require_min_per_class(2, "same-class training pairs")
            self.source = PairSampler(items.labels, epoch_size(config, len(items)), config.batch_size,
                                      config.seed)  # fmt: skip

    def _select(self, pairs: Pairs | None) -> Pairs | None:
        """The fixed pairs this plan trains from: all of them, which must hold both same and
        different pairs (a pair loss on one kind only learns nothing, silently)."""
        if pairs is not None and len(pairs) and (pairs.same.all() or not pairs.same.any()):
            kind = "same" if pairs.same.all() else "different"
            raise ConfigError(
                f"loss {self.loss_name} learns from same and different pairs; every training pair is {kind}: "
                "give a pairs file with both labels, or a loss that needs positive pairs only "
                "(multiple_negatives_ranking)"
            )
        return pairs

    @property
    def steps_per_epoch(self) -> int:
        return len(self.source)

    def _jobs(self, epoch: int, augment: Callable[[Any], Any]) -> list[BatchJob]:
        return [_pair_job(self.items, p[self.world.shard(len(p))], augment) for p in self.source.epoch(epoch)]

    def fingerprint(self) -> str:
        digest = hashlib.sha256(super().fingerprint().encode())
        digest.update(_pairs_digest(self.pairs))
        return digest.hexdigest()[:16]


@BATCH_PLANS.register("scored_pairs")
class ScoredPairsPlan(PairsPlan):
    """The graded pairs of a pairs file (a ``score`` per pair, e.g. STS-B), shuffled per epoch."""

    name = "scored_pairs"

    def _select(self, pairs: Pairs | None) -> Pairs:
        if pairs is None or pairs.score is None:
            raise ConfigError(
                f"loss {self.loss_name} learns from graded scores (e.g. STS-B); this training data has "
                "labels only: use contrastive, online_contrastive or multiple_negatives_ranking"
            )
        return pairs


@BATCH_PLANS.register("positive_pairs")
class PositivePairsPlan(PairsPlan):
    """The same (positive) pairs of a pairs file, shuffled per epoch; the other pairs of a batch are
    the negatives (in-batch negatives)."""

    name = "positive_pairs"

    def _select(self, pairs: Pairs | None) -> Pairs:
        if pairs is None:
            raise ConfigError(f"loss {self.loss_name} trains from (query, positive) pairs: give a pairs file")
        positives = pairs[pairs.same]
        if len(positives) < 2:
            raise ConfigError(f"loss {self.loss_name} needs at least 2 positive training pairs")
        return positives


# -- P×K labelled batches ---------------------------------------------------------------------------


@BATCH_PLANS.register("pk")
class PKPlan(BatchPlan):
    """P×K batches (``train.classes_per_batch`` classes × ``train.items_per_class`` items) of
    labelled items, about ``train.samples_per_epoch`` items per epoch (by default one pass: as many
    as there are training items). With
    ``train.instance_weight > 0`` every item appears twice, as two augmented views, and the batch
    carries instance ids for the loss's instance term; a class of a single labelled item then takes
    part too (one labelled example per class is enough)."""

    name = "pk"
    batch_type = LabelledBatch

    def __init__(self, items: ItemSet, pairs: Pairs | None, config: TrainConfig, **kwargs: Any) -> None:
        super().__init__(items, pairs, config, **kwargs)
        if pairs is not None:
            raise ConfigError(f"loss {self.loss_name} mines within labelled batches; it cannot train from a pairs file")
        if config.instance_weight > 0 and self.augment is None:
            raise ConfigError(
                "train.instance_weight needs data.augment.enabled: true (two views of an item differ only "
                "through augmentation)"
            )
        c = config
        batch = min(c.classes_per_batch, len(np.unique(items.labels))) * c.items_per_class
        self.world.require(batch // c.items_per_class, "train.classes_per_batch (P, classes in a batch)")
        # with two views of every item, a class of one item has positives too (its item's views): one
        # labelled example per class is enough; without views such a class has nothing to learn from
        self.sampler = PKBatchSampler(
            items.labels,
            c.classes_per_batch,
            c.items_per_class,
            max(1, epoch_size(c, len(items)) // batch),
            c.seed,
            min_items=1 if c.instance_weight > 0 else 2,
        )
        self.label_weight = c.class_weight
        self.instance_weight = c.instance_weight

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler)

    def _jobs(self, epoch: int, augment: Callable[[Any], Any]) -> list[BatchJob]:
        rank, size = self.world.rank, self.world.size
        return [self._job(self.sampler.shard(idx, rank, size), augment) for idx in self.sampler.epoch(epoch)]

    @property
    def batch_labels(self) -> np.ndarray:
        """The class of every training item that batches carry: its label (pseudo-labels: its cluster)."""
        return self.items.labels

    def _job(self, idx: np.ndarray, augment: Callable[[Any], Any]) -> BatchJob:
        items, labels = self.items, self.batch_labels
        similarity_weight = self.config.input_similarity_weight
        if self.instance_weight > 0:
            views = np.concatenate([idx, idx])
            # one id per underlying item, numbered within the batch: a class with fewer than K items
            # gives some item more than once, and its copies are views of one instance, not negatives
            instances = torch.from_numpy(np.unique(idx, return_inverse=True)[1].reshape(-1)).repeat(2)
            return lambda: LabelledBatch(
                augment(items.load(views)), torch.from_numpy(labels[views]), self.label_weight,
                instances, self.instance_weight, similarity_weight,
            )  # fmt: skip
        return lambda: LabelledBatch(augment(items.load(idx)), torch.from_numpy(labels[idx]), self.label_weight,
                                     input_similarity_weight=similarity_weight)  # fmt: skip


# -- plain labelled batches -------------------------------------------------------------------------


def shuffled_batches(seed: int, epoch: int, n_items: int, per_epoch: int, batch_size: int) -> list[np.ndarray]:
    """Epoch ``epoch``'s ``per_epoch`` item indices (passes over fresh seeded shuffles of the
    ``n_items`` items) in batches of ``batch_size``."""
    rng = numpy_rng(seed, Stream.ITEM_ORDER, epoch)
    order = np.concatenate([rng.permutation(n_items) for _ in range(-(-per_epoch // n_items))])[:per_epoch]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@BATCH_PLANS.register("items")
class ItemsPlan(BatchPlan):
    """The labelled training items shuffled afresh each epoch, in batches of ``train.batch_size``
    items: one pass over the training data per epoch, or ``train.samples_per_epoch`` items when it
    is set (drawn by passes over fresh shuffles). For classification-style losses (margin softmax),
    where every class counts, even one with a single item."""

    name = "items"
    batch_type = LabelledBatch

    def __init__(self, items: ItemSet, pairs: Pairs | None, config: TrainConfig, **kwargs: Any) -> None:
        super().__init__(items, pairs, config, **kwargs)
        if pairs is not None:
            raise ConfigError(f"loss {self.loss_name} learns from labelled items (a folder of classes), "
                              "not a pairs file")  # fmt: skip
        if len(items) == 0:
            raise DataError("no training items")
        self.batch_size = config.batch_size
        self.world.require(config.batch_size, "train.batch_size")
        self.per_epoch = epoch_size(config, len(items))

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.per_epoch // self.batch_size)

    def _jobs(self, epoch: int, augment: Callable[[Any], Any]) -> list[BatchJob]:
        items = self.items

        def job(idx: np.ndarray) -> BatchJob:
            weight = self.config.input_similarity_weight
            return lambda: LabelledBatch(augment(items.load(idx)), torch.from_numpy(items.labels[idx]),
                                         input_similarity_weight=weight)  # fmt: skip

        batches = shuffled_batches(self.seed, epoch, len(items), self.per_epoch, self.batch_size)
        return [job(b[self.world.shard(len(b))]) for b in batches]  # with several processes, this one's share


# -- two views of each item -------------------------------------------------------------------------


def delete_words(text: str, share: float, rng: np.random.Generator) -> str:
    """``text`` with each word dropped with probability ``share`` (at least one word kept)."""
    words = text.split()
    if share <= 0 or len(words) < 2:
        return text
    keep = rng.random(len(words)) >= share
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return " ".join(w for w, k in zip(words, keep, strict=True) if k)


@BATCH_PLANS.register("views")
class ViewsPlan(BatchPlan):
    """Every training item, labelled or not, shuffled afresh each epoch, in batches of
    ``train.batch_size`` items, each item as two views: images and pen trajectories augmented twice
    by ``data.augment`` (which must be enabled: two identical views teach nothing); texts twice as
    they are (dropout makes the two encoder passes differ, SimCSE) or, with the option
    ``word_deletion: p``, with each word deleted with probability ``p`` in each view. An epoch is one
    pass over the items unless ``train.samples_per_epoch`` says how many.

    Options (``train.plan``): ``word_deletion`` (texts, default 0).
    """

    name = "views"
    batch_type = ViewsBatch

    def __init__(self, items: ItemSet, pairs: Pairs | None, config: TrainConfig, *,
                 word_deletion: float = 0.0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(items, pairs, config, **kwargs)
        if pairs is not None:
            raise ConfigError(f"loss {self.loss_name} learns from two views of each item, not from a pairs file: set "
                              "data.labels: false to train on the pairs' texts or images without labels")  # fmt: skip
        if len(items) < 2:
            raise DataError("two views of each item need at least 2 training items (the others are the negatives)")
        if not 0.0 <= float(word_deletion) < 1.0:
            raise ConfigError(f"train.plan.word_deletion must be in [0, 1), not {word_deletion}")
        self.word_deletion = float(word_deletion)
        self.is_text = items.texts is not None
        if not self.is_text and self.augment is None:
            raise ConfigError(f"loss {self.loss_name} compares two augmented views of each item: set "
                              "data.augment.enabled: true (two identical views teach nothing)")  # fmt: skip
        if self.word_deletion and not self.is_text:
            raise ConfigError("train.plan.word_deletion applies to texts only")
        self.batch_size = config.batch_size
        self.world.require(config.batch_size, "train.batch_size")
        self.per_epoch = epoch_size(config, len(items))
        self.labels = np.where(items.labelled, items.labels, -1)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.per_epoch // self.batch_size)

    def _jobs(self, epoch: int, augment: Callable[[Any], Any]) -> list[BatchJob]:
        batches = shuffled_batches(self.seed, epoch, len(self.items), self.per_epoch, self.batch_size)
        batches = [b for b in batches if len(b) >= 2] or batches  # a last batch of one has no negatives
        words = numpy_rng(self.seed, Stream.VIEWS, epoch, *self.world.stream)
        return [self._job(b[self.world.shard(len(b))], augment, words) for b in batches]

    def _job(self, idx: np.ndarray, augment: Callable[[Any], Any], words: np.random.Generator) -> BatchJob:
        items, labels, share = self.items, torch.from_numpy(self.labels[idx]), self.word_deletion
        if self.is_text:
            texts = items.load(idx)
            # drawn here, in batch order, so the deletions do not depend on the prefetch thread's timing
            a = [delete_words(t, share, words) for t in texts] if share else texts
            b = [delete_words(t, share, words) for t in texts] if share else list(texts)
            return lambda: ViewsBatch(a, b, labels)

        def job() -> ViewsBatch:
            # both views load as one batch, a then b, so the augmentation stream is drawn in one order
            x = augment(items.load(np.concatenate([idx, idx])))
            return ViewsBatch(x[: len(idx)], x[len(idx) :], labels)

        return job
