"""Triplet loss with in-batch mining (Schroff et al. 2015; Hermans et al. 2017)."""

from __future__ import annotations

from typing import Literal

import torch

from twinnet.compare import COMPARATORS, Comparator
from twinnet.losses.base import LOSSES, EmbeddingLoss, number, one_of
from twinnet.mining import all_triplets, batch_hard_triplets, semi_hard_triplets

Mining = Literal["all", "batch_hard", "semi_hard"]


@LOSSES.register("triplet")
class TripletLoss(EmbeddingLoss):
    """``max(d(a,p) − d(a,n) + margin, 0)`` over triplets mined from a labelled batch.

    Inputs:
        embeddings: ``(n, dim)``.
        comparator: the model's comparator (used with ``distance="comparator"``).

    Labels:
        labels: ``(n,)`` integer class ids; a positive shares the anchor's label, a negative does not.

    Trained from P×K class-balanced batches (batch plan ``pk``).

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
        self.margin = number(margin, "margin", strict=False)
        self.mining = one_of(mining, "mining", ("all", "batch_hard", "semi_hard"))
        self.reduction = one_of(reduction, "reduction", ("mean", "mean_nonzero"))
        self.use_model_comparator = distance == "comparator"
        # A Comparator instance given here is a sub-module: its parameters train with the model and
        # travel in checkpoints (the trainer saves the loss's state).
        metric: Comparator | None = None
        if isinstance(distance, Comparator):
            metric = distance
        elif not self.use_model_comparator:
            metric = COMPARATORS.build(one_of(distance, "distance", ("euclidean", "squared_euclidean", "comparator")))
        self.distance = metric

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
