"""Loss interfaces and the loss registry.

Two kinds of loss, by what they consume:

- :class:`PairLoss` — one value per pair (a distance, or a logit) and ``same: BoolTensor``;
  trained from balanced pairs.
- :class:`EmbeddingLoss` — a batch of embeddings and their class ``labels``; mines pairs or
  triplets inside the batch, trained from P×K class-balanced batches.
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


class PairLoss(nn.Module):
    """A loss on one value per pair. ``input`` says which value: a comparator ``distance`` or ``logits``."""

    input: ClassVar[Literal["distance", "logits"]] = "distance"

    def check_comparator(self, comparator: Comparator) -> None:
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
