"""Loss interfaces and the loss registry.

Three kinds of loss, by what they consume:

- :class:`PairLoss` — one value per pair (a distance, a similarity or a logit) and either
  ``same: BoolTensor`` or, for graded data such as STS, ``score: FloatTensor`` in [0, 1];
  trained from balanced or given pairs.
- :class:`EmbeddingLoss` — a batch of embeddings and their class ``labels``; mines pairs or
  triplets inside the batch, trained from P×K class-balanced batches.
- :class:`RankingLoss` — embeddings of ``n`` positive pairs ``(a_i, b_i)``; every ``b_j`` with
  ``j ≠ i`` is a negative for ``a_i`` (in-batch negatives, for query→document matching).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from twinnet.compare import Comparator
from twinnet.errors import ConfigError
from twinnet.registry import Registry

LOSSES: Registry[nn.Module] = Registry("loss")


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


class PairLoss(nn.Module):
    """A loss on one value per pair. ``input`` says which value: a comparator ``distance``, a
    ``similarity`` (the native value of a similarity comparator such as cosine) or ``logits``;
    ``target`` whether it learns from ``same`` (bool) or a graded ``score`` in [0, 1]."""

    input: ClassVar[Literal["distance", "similarity", "logits"]] = "distance"
    target: ClassVar[Literal["same", "score"]] = "same"

    def check_comparator(self, comparator: Comparator) -> None:
        if self.input == "similarity" and comparator.is_distance:
            raise ConfigError(
                f"loss {type(self).__name__} needs a similarity comparator (cosine), not {type(comparator).__name__}"
            )
        if self.input == "distance" and not comparator.is_distance:
            raise ConfigError(
                f"loss {type(self).__name__} needs a distance comparator (euclidean, squared_euclidean, "
                f"mahalanobis), not {type(comparator).__name__}"
            )
        if self.input == "logits" and not comparator.has_logits:
            raise ConfigError(
                f"loss {type(self).__name__} needs a comparator that gives logits (weighted_l1, mlp), "
                f"not {type(comparator).__name__}"
            )


class EmbeddingLoss(nn.Module):
    """A loss on a labelled batch of embeddings. ``comparator`` is the model's, used when the loss
    was built with ``distance="comparator"`` (so a learned metric is trained by the loss)."""

    def check_comparator(self, comparator: Comparator) -> None:
        pass


class RankingLoss(nn.Module):
    """A loss on the embeddings of positive pairs, with the other pairs of the batch as negatives.
    ``forward(z_a, z_b, comparator)``; row ``i`` of ``z_a`` belongs with row ``i`` of ``z_b``."""

    def check_comparator(self, comparator: Comparator) -> None:
        pass
