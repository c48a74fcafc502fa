"""Loss interfaces and the loss registry.

Every loss is a :class:`TwinLoss`: it names the **batch plan** that feeds it (``batch_plan``, a
name in :data:`twinnet.training.plans.BATCH_PLANS`) and computes itself from the model and one
typed batch of that plan (:meth:`TwinLoss.compute`). The trainer only does
``loss.compute(model, batch)``; it never asks what kind of loss it has or whether inputs are texts.

Four kinds of loss, by what they consume:

- :class:`PairLoss` — one value per pair (a distance, a similarity or a logit) and either
  ``same: BoolTensor`` (plan ``pairs``: balanced sampled pairs, or the pairs of a pairs file) or,
  for graded data such as STS, ``score: FloatTensor`` in [0, 1] (plan ``scored_pairs``).
- :class:`EmbeddingLoss` — a batch of embeddings and their class ``labels``; mines pairs or
  triplets inside the batch (plan ``pk``: P×K class-balanced batches).
- :class:`RankingLoss` — embeddings of ``n`` positive pairs ``(a_i, b_i)``; every ``b_j`` with
  ``j ≠ i`` is a negative for ``a_i`` (plan ``positive_pairs``: in-batch negatives).
- :class:`~twinnet.losses.views.ViewsLoss` — embeddings of two augmented views of the same items,
  no labels (plan ``views``): self-supervised objectives (NT-Xent, SimSiam, BYOL, Barlow Twins, VICReg).

A new loss subclasses one of them, implements ``forward`` and registers itself::

    @LOSSES.register("my_loss")
    class MyLoss(PairLoss):
        input = "distance"
        def forward(self, distance, same): ...

Constructors raise plain ``ValueError`` for bad arguments; :func:`twinnet.train.build_loss` turns
that into a one-line ``ConfigError`` naming ``loss.params``.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from twinnet.compare import Comparator
from twinnet.errors import ConfigError
from twinnet.losses.input_similarity import input_similarity_loss
from twinnet.registry import Registry
from twinnet.training.batch import Batch, LabelledBatch, PairBatch
from twinnet.training.distributed import gather, gather_ids

if TYPE_CHECKING:
    from twinnet.data.items import ItemSet
    from twinnet.model import AnyTwin

LOSSES: Registry[TwinLoss] = Registry("loss")


def check_same(same: torch.Tensor) -> None:
    """Refuse anything but a boolean ``same`` tensor, so 0/1 label conventions cannot be confused."""
    if not isinstance(same, torch.Tensor) or same.dtype != torch.bool:
        raise TypeError(
            "`same` must be a torch.bool tensor, True where the two inputs are of the same class. "
            "(Hadsell et al. write y=1 for *dissimilar* pairs; twinnet avoids 0/1 labels on purpose: "
            "pass e.g. `same=(labels_a == labels_b)`.)"
        )


def check_score(score: torch.Tensor | None) -> torch.Tensor:
    if score is None or not isinstance(score, torch.Tensor) or not score.is_floating_point():
        raise TypeError("`score` must be a float tensor of graded similarities in [0, 1] (e.g. STS score / 5)")
    return score


def number(value: Any, name: str, *, minimum: float = 0.0, strict: bool = True) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` when it is not a finite number
    above ``minimum`` (at least ``minimum`` with ``strict=False``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a number, not {value!r}")
    value = float(value)
    if value < minimum or (strict and value == minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise ValueError(f"{name} must be {bound}, not {value:g}")
    return value


def one_of(value: Any, name: str, choices: tuple[str, ...]) -> Any:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming ``name`` and the choices."""
    if value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


class TwinLoss(nn.Module):
    """Base of every loss: the batch plan it trains from, and how it computes from a batch.

    ``batch_plan`` names a registered plan (``pairs``, ``scored_pairs``, ``positive_pairs``, ``pk``
    or one registered by the user); the plan decides which batch type ``compute`` receives.
    Parameters of a loss (a learned margin, a comparator inside it) are trained with the model and
    saved in checkpoints.
    """

    batch_plan: ClassVar[str]

    def check_comparator(self, comparator: Comparator) -> None:
        """Raise ConfigError when this loss cannot train with ``comparator``."""

    def prepare(self, items: ItemSet, embedding_dim: int) -> None:
        """Called by the trainer with the training items and the model's embedding size before the
        optimiser is built: a loss with parameters sized by the data (one class centre per training
        class, as margin-softmax losses have) creates them here. Raise ``ValueError`` when the data
        do not fit the loss. Most losses need nothing."""

    def attach(self, model: AnyTwin) -> None:
        """Called by the trainer with the model (on its device, weights initialised) after
        :meth:`prepare` and before the optimiser is built: a loss that keeps a copy of a model side
        (BYOL's momentum target, :class:`twinnet.losses.views.MomentumTower`) makes it here. Most
        losses need nothing."""

    def after_step(self, model: AnyTwin) -> None:
        """Called by the trainer after every optimiser step: a momentum target follows the model
        here. Most losses need nothing."""

    def compute(self, model: AnyTwin, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        """The loss of ``model`` on ``batch`` (a batch of this loss's plan, on the model's device)."""
        raise NotImplementedError


class PairLoss(TwinLoss):
    """A loss on one value per pair. ``input`` says which value: a comparator ``distance``, a
    ``similarity`` (the native value of a similarity comparator such as cosine) or ``logits``;
    ``target`` whether it learns from ``same`` (bool) or a graded ``score`` in [0, 1].

    ``forward(values, target)``; ``compute`` embeds side a and side b of a :class:`PairBatch`
    (one encoder pass for a twin), compares them and calls ``forward``. The plan follows the target:
    ``pairs`` for ``same``, ``scored_pairs`` for ``score`` (unless a subclass names its own).

    Example::

        >>> import torch
        >>> class L1(PairLoss):            # a minimal pair loss: distance of same pairs, nothing else
        ...     def forward(self, distance, same):
        ...         return distance[same].sum() / len(distance)
        >>> L1.batch_plan
        'pairs'
        >>> L1()(torch.tensor([0.5, 2.0]), torch.tensor([True, False]))
        tensor(0.2500)
    """

    input: ClassVar[Literal["distance", "similarity", "logits"]] = "distance"
    target: ClassVar[Literal["same", "score"]] = "same"
    batch_plan: ClassVar[str] = "pairs"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The plan follows the target unless the subclass chose one: graded losses need scored pairs.
        if "batch_plan" not in cls.__dict__:
            cls.batch_plan = "scored_pairs" if cls.target == "score" else "pairs"

    def check_comparator(self, comparator: Comparator) -> None:
        if comparator.offers(self.input):
            return
        wanted = {
            "similarity": "a similarity comparator (cosine)",
            "distance": "a distance comparator (euclidean, squared_euclidean, mahalanobis)",
            "logits": "a comparator that gives logits (weighted_l1, mlp)",
        }[self.input]
        raise ConfigError(f"loss {type(self).__name__} needs {wanted}, not {type(comparator).__name__}")

    def compute(self, model: AnyTwin, batch: PairBatch) -> torch.Tensor:  # type: ignore[override]
        # with several training processes the loss sees the pairs of all of them (the global batch)
        z_a, z_b, target = gather(*model.embed_pair(batch.inputs_a, batch.inputs_b),
                                  batch.score if self.target == "score" else batch.same)  # fmt: skip
        comparator = model.comparator
        values = comparator.logits(z_a, z_b) if self.input == "logits" else comparator(z_a, z_b)
        return self(values, target)


class EmbeddingLoss(TwinLoss):
    """A loss on a labelled batch of embeddings: ``forward(embeddings, labels, comparator)``.
    ``comparator`` is the model's, used when the loss was built with ``distance="comparator"`` (so a
    learned metric is trained by the loss).

    ``compute`` embeds a :class:`LabelledBatch` once and applies ``forward`` to its class labels
    (weighted by ``label_weight``) and, with two augmented views per item, to its instance ids
    (weighted by ``instance_weight``).

    Example::

        >>> import torch
        >>> class Spread(EmbeddingLoss):   # a minimal embedding loss: pull same-label embeddings together
        ...     def forward(self, embeddings, labels, comparator=None):
        ...         same = labels[:, None] == labels[None, :]
        ...         return torch.cdist(embeddings, embeddings)[same].mean()
        >>> Spread.batch_plan
        'pk'
        >>> Spread()(torch.tensor([[0.0], [1.0], [5.0], [5.0]]), torch.tensor([0, 0, 1, 1]))
        tensor(0.2500)
    """

    batch_plan: ClassVar[str] = "pk"

    def compute(self, model: AnyTwin, batch: LabelledBatch) -> torch.Tensor:  # type: ignore[override]
        local = model.embed(batch.inputs)
        # with several training processes, mining sees the embeddings of all of them (the global batch)
        z, labels = gather(local, batch.labels)
        total = batch.label_weight * self(z, labels, model.comparator)
        if batch.instances is not None:
            total = total + batch.instance_weight * self(z, gather_ids(batch.instances), model.comparator)
        if batch.input_similarity_weight > 0:  # this process's own items: their inputs are here
            if not isinstance(batch.inputs, torch.Tensor):  # the plan refuses texts; this keeps it so
                raise ConfigError("train.input_similarity_weight compares inputs as numbers, not texts")
            total = total + batch.input_similarity_weight * input_similarity_loss(local, batch.inputs)
        return total


class RankingLoss(TwinLoss):
    """A loss on the embeddings of positive pairs, with the other pairs of the batch as negatives.
    ``forward(z_a, z_b, comparator)``; row ``i`` of ``z_a`` belongs with row ``i`` of ``z_b``.

    ``compute`` embeds side a and side b of a :class:`PairBatch` of positive pairs (plan
    ``positive_pairs``: the same pairs of a pairs file).

    Example::

        >>> import torch, twinnet
        >>> class Diagonal(RankingLoss):   # a minimal ranking loss: the own document must score highest
        ...     def forward(self, z_a, z_b, comparator):
        ...         sim = comparator.pairwise_similarity(z_a, z_b)
        ...         return torch.nn.functional.cross_entropy(sim, torch.arange(len(z_a)))
        >>> Diagonal.batch_plan
        'positive_pairs'
        >>> round(Diagonal()(torch.eye(2), torch.eye(2), twinnet.CosineSimilarity()).item(), 4)
        0.3133
    """

    batch_plan: ClassVar[str] = "positive_pairs"

    def compute(self, model: AnyTwin, batch: PairBatch) -> torch.Tensor:  # type: ignore[override]
        z_a, z_b = gather(*model.embed_pair(batch.inputs_a, batch.inputs_b))  # in-batch negatives of all processes
        return self(z_a, z_b, model.comparator)
