"""Margin-softmax losses for many identities with few images each: ArcFace (Deng et al. 2019) and
CosFace (Wang et al. 2018).

Both keep one learned unit-length *class centre* per training identity and classify each embedding
among all of them by cosine, with a margin against the embedding's own class: CosFace subtracts
``m`` from the target cosine, ArcFace adds ``m`` to the target angle. The classifier is thrown away
after training; what stays is an embedding space where one person's images lie within a narrow
angle, which is what a twin network compares at test time (use the ``cosine`` comparator, or
``euclidean`` with ``normalize: true``, which orders pairs the same way).

Values equal ``pytorch_metric_learning.losses.ArcFaceLoss`` / ``CosFaceLoss`` for the same class
centres (``W`` there is the transpose of :attr:`MarginSoftmaxLoss.weight`; PML's ArcFace margin is in
degrees): ``tests/losses/test_margin_softmax.py`` checks it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from twinnet.compare import Comparator
from twinnet.losses.base import LOSSES, EmbeddingLoss, number

if TYPE_CHECKING:
    from twinnet.data.items import ItemSet


class MarginSoftmaxLoss(EmbeddingLoss):
    """Base of the margin-softmax losses: cross-entropy over ``scale · cos(embedding, centre_c)``
    with the target logit changed by :meth:`target_logit`.

    Inputs:
        embeddings: ``(n, dim)``; they are L2-normalised here (whether or not the model normalises).

    Labels:
        labels: ``(n,)`` integer class ids in ``[0, num_classes)`` — the training items' class ids
        (:attr:`twinnet.data.items.ItemSet.labels`). Class ids must mean the same identity in every
        batch: they index the learned class centres. There is no pair label and no "same" flag.

    Trained from plain shuffled batches of ``train.batch_size`` labelled items (batch plan
    ``items``: one pass over the training images per epoch unless ``train.samples_per_epoch`` is
    set); every identity counts, even one with a single image.

    Args:
        num_classes: the number of class centres; ``None``: the training items' number of classes,
            set by :meth:`prepare` when training starts.
        embedding_dim: the embedding size; ``None``: the model's, set by :meth:`prepare`.
        margin: ``m`` (ArcFace: radians added to the target angle; CosFace: subtracted from the
            target cosine).
        scale: ``s``, the inverse temperature of the softmax.
    """

    batch_plan: ClassVar[str] = "items"
    default_margin: ClassVar[float] = 0.35

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        margin: float | None = None,
        scale: float = 30.0,
    ) -> None:
        super().__init__()
        self.margin = number(self.default_margin if margin is None else margin, "margin", strict=False)
        self.scale = number(scale, "scale")
        self.weight: nn.Parameter | None = None
        if (num_classes is None) != (embedding_dim is None):
            raise ValueError("give num_classes and embedding_dim together, or neither (then training sets both)")
        if num_classes is not None and embedding_dim is not None:
            self._make_weight(_count(num_classes, "num_classes"), _count(embedding_dim, "embedding_dim"))

    def _make_weight(self, num_classes: int, embedding_dim: int) -> None:
        weight = torch.empty(num_classes, embedding_dim)
        nn.init.xavier_uniform_(weight)
        self.weight = nn.Parameter(weight)

    @property
    def num_classes(self) -> int | None:
        return None if self.weight is None else int(self.weight.shape[0])

    def prepare(self, items: ItemSet, embedding_dim: int) -> None:
        """One class centre per class of the training items (unless ``num_classes`` was given)."""
        n = len(items.class_names)
        if self.weight is None:
            self._make_weight(max(n, int(items.labels.max()) + 1 if len(items) else n), embedding_dim)
            return
        assert self.num_classes is not None
        if int(items.labels.max()) >= self.num_classes or self.weight.shape[1] != embedding_dim:
            raise ValueError(f"{type(self).__name__}: {self.num_classes} class centres of size "
                             f"{self.weight.shape[1]}, but the training data has class ids up to "
                             f"{int(items.labels.max())} and the model embeds to {embedding_dim}")  # fmt: skip

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(n, num_classes)`` cosines of each embedding with each class centre."""
        if self.weight is None:
            raise ValueError(f"{type(self).__name__}: no class centres yet: give num_classes and embedding_dim, "
                             "or train it (the trainer sizes them from the training data)")  # fmt: skip
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The target class's cosine with the margin applied (before scaling)."""
        raise NotImplementedError

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, comparator: Comparator | None = None
    ) -> torch.Tensor:
        cos = self.cosines(embeddings)
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= cos.shape[1]):
            raise ValueError(f"labels must be class ids in [0, {cos.shape[1]}), got {labels.min()}..{labels.max()}")
        target = cos.gather(1, labels[:, None])
        logits = cos.scatter(1, labels[:, None], self.target_logit(target))
        return F.cross_entropy(self.scale * logits, labels)


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, not {value!r}")
    return value


@LOSSES.register("arcface")
class ArcFaceLoss(MarginSoftmaxLoss):
    """ArcFace (additive angular margin, Deng et al. 2019): the target logit is ``s·cos(θ + m)``,
    every other class's ``s·cos θ``.

    With ``monotonic`` (insightface's default), where ``θ + m`` would pass π (so that a *worse*
    angle gave a *larger* logit) the target logit is ``cos θ − m·sin m`` instead; without it, the
    formula of pytorch-metric-learning's ``ArcFaceLoss`` everywhere. The two agree whenever every
    target angle is below ``π − m``.

    Inputs:
        embeddings: ``(n, d)`` embeddings of a batch of the ``items`` plan (made unit-length inside).
    Labels:
        labels: ``(n,)`` integer class ids that index the class centres (see :class:`MarginSoftmaxLoss`).

    Example::

        >>> import torch
        >>> loss = ArcFaceLoss(num_classes=2, embedding_dim=2, margin=0.5, scale=10.0)
        >>> with torch.no_grad():
        ...     _ = loss.weight.copy_(torch.eye(2))
        >>> round(loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])).item(), 4)
        0.0002
    """

    default_margin = 0.5

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        margin: float | None = None,
        scale: float = 30.0,
        monotonic: bool = True,
    ) -> None:
        super().__init__(num_classes, embedding_dim, margin, scale)
        if self.margin >= math.pi / 2:
            raise ValueError(f"margin is an angle in radians below π/2, not {self.margin:g}")
        self.monotonic = bool(monotonic)

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        angle = torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7))
        with_margin = torch.cos(angle + self.margin)
        if not self.monotonic:
            return with_margin
        m = self.margin
        return torch.where(cosine > math.cos(math.pi - m), with_margin, cosine - math.sin(math.pi - m) * m)


@LOSSES.register("cosface")
class CosFaceLoss(MarginSoftmaxLoss):
    """CosFace (large margin cosine loss, Wang et al. 2018): the target logit is ``s·(cos θ − m)``,
    every other class's ``s·cos θ``. It trains from scratch more readily than ArcFace.

    Inputs:
        embeddings: ``(n, d)`` embeddings of a batch of the ``items`` plan (made unit-length inside).
    Labels:
        labels: ``(n,)`` integer class ids that index the class centres (see :class:`MarginSoftmaxLoss`).

    Example::

        >>> import torch
        >>> loss = CosFaceLoss(num_classes=2, embedding_dim=2, margin=0.35, scale=10.0)
        >>> with torch.no_grad():
        ...     _ = loss.weight.copy_(torch.eye(2))
        >>> round(loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])).item(), 4)
        0.0015
    """

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine - self.margin
