"""Triplet loss with in-batch mining (Schroff et al. 2015; Hermans et al. 2017)."""

from __future__ import annotations

from typing import Literal

import torch

from twinnet.compare import COMPARATORS, Comparator
from twinnet.errors import ConfigError
from twinnet.losses.base import LOSSES, EmbeddingLoss
from twinnet.mining import all_triplets, batch_hard_triplets, semi_hard_triplets

Mining = Literal["all", "batch_hard", "semi_hard"]


@LOSSES.register("triplet")
class TripletLoss(EmbeddingLoss):
    """``max(d(a,p) − d(a,n) + margin, 0)`` over triplets mined from a labelled batch.

    Inputs:
        embeddings: ``(n, dim)``.
        labels: ``(n,)`` integer class ids; a positive shares the anchor's label, a negative does not.

    Args:
        margin: ``α``.
        mining: ``all`` (every valid triplet), ``batch_hard`` (each anchor's farthest positive and
            closest negative) or ``semi_hard`` (negatives with ``d(a,p) < d(a,n) < d(a,p) + α``).
        distance: ``euclidean``, ``squared_euclidean`` or ``comparator`` (the model's own
            comparator, e.g. to train a Mahalanobis metric; a similarity is negated). A
            :class:`~twinnet.compare.Comparator` instance is accepted too.
        reduction: ``mean`` over mined triplets, or ``mean_nonzero`` over those with a positive
            loss (usual with ``all``, where most triplets are already satisfied).

    Example::

        >>> import torch
        >>> loss = TripletLoss(margin=0.2, mining="batch_hard")
        >>> emb = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        >>> loss(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.2000)
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: Mining = "batch_hard",
        distance: str | Comparator = "euclidean",
        reduction: Literal["mean", "mean_nonzero"] = "mean",
    ) -> None:
        super().__init__()
        if mining not in ("all", "batch_hard", "semi_hard"):
            raise ConfigError(f"loss.params.mining: {mining!r} is not one of all, batch_hard, semi_hard")
        if reduction not in ("mean", "mean_nonzero"):
            raise ConfigError(f"loss.params.reduction: {reduction!r} is not one of mean, mean_nonzero")
        self.margin = margin
        self.mining = mining
        self.reduction = reduction
        self.use_model_comparator = distance == "comparator"
        if isinstance(distance, str) and not self.use_model_comparator:
            if distance not in ("euclidean", "squared_euclidean"):
                raise ConfigError(
                    f"loss.params.distance: {distance!r} is not one of euclidean, squared_euclidean, comparator"
                )
            distance = COMPARATORS.build(distance)
        self.distance: Comparator | None = None if self.use_model_comparator else distance

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, comparator: Comparator | None = None
    ) -> torch.Tensor:
        metric = comparator if self.use_model_comparator else self.distance
        if metric is None:
            raise ValueError("TripletLoss(distance='comparator') needs the model's comparator")
        dist = -metric.pairwise_similarity(embeddings, embeddings)
        if self.mining == "all":
            a, p, n = all_triplets(labels)
        elif self.mining == "batch_hard":
            a, p, n = batch_hard_triplets(dist, labels)
        else:
            a, p, n = semi_hard_triplets(dist, labels, self.margin)
        losses = (dist[a, p] - dist[a, n] + self.margin).clamp_min(0)
        if self.reduction == "mean_nonzero":
            losses = losses[losses > 0]
        if losses.numel() == 0:
            # Keep the graph so backward() works on a batch with nothing to learn.
            return embeddings.sum() * 0.0
        return losses.mean()
