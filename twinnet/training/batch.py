"""The typed batches a batch plan builds and a loss consumes (see :mod:`twinnet.training.plans`).

A batch holds model inputs (a float tensor, or a list of strings for text models) and the targets
of its kind. It says how many items it holds and moves itself to a device; nothing else. Losses
read the fields by name (``batch.same``, ``batch.labels``), never by key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

Inputs = torch.Tensor | list[str]
"""A batch of model inputs: a tensor (images, vectors, sequences) or texts, which text encoders tokenize."""


def _to(x: Inputs, device: torch.device) -> Inputs:
    return x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x


def _to_opt(x: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if x is None else x.to(device, non_blocking=True)


@dataclass
class Batch:
    """Base class of all batches."""

    @property
    def n_items(self) -> int:  # pragma: no cover - abstract
        """How many inputs the batch runs through an encoder (for the items/s figure)."""
        raise NotImplementedError

    def to(self, device: torch.device) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class PairBatch(Batch):
    """``n`` pairs: row ``i`` of ``inputs_a`` (side a) goes with row ``i`` of ``inputs_b`` (side b).

    ``same`` (``torch.bool``) says whether the two show the same class; graded data (STS) also has
    ``score``, the gold similarity in [0, 1]. A batch of positive pairs (ranking losses) has ``same``
    all True.
    """

    inputs_a: Inputs
    inputs_b: Inputs
    same: torch.Tensor
    score: torch.Tensor | None = None

    @property
    def n_items(self) -> int:
        return 2 * len(self.same)

    def to(self, device: torch.device) -> PairBatch:
        return replace(self, inputs_a=_to(self.inputs_a, device), inputs_b=_to(self.inputs_b, device),
                       same=self.same.to(device), score=_to_opt(self.score, device))  # fmt: skip


@dataclass
class LabelledBatch(Batch):
    """Items with integer class ``labels`` (a P×K batch), for losses that mine inside the batch.

    With ``instances`` every item is in the batch twice, as two augmented views, and ``instances``
    numbers the underlying item of each view: the loss is then applied a second time with those ids
    as labels, weighted by ``instance_weight`` (the class term is weighted by ``label_weight``).
    With ``input_similarity_weight > 0`` the loss also keeps the embeddings' similarities close to
    the inputs' own (:func:`twinnet.losses.input_similarity.input_similarity_loss`).
    """

    inputs: Inputs
    labels: torch.Tensor
    label_weight: float = 1.0
    instances: torch.Tensor | None = None
    instance_weight: float = 0.0
    input_similarity_weight: float = 0.0

    @property
    def n_items(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> LabelledBatch:
        return replace(self, inputs=_to(self.inputs, device), labels=self.labels.to(device),
                       instances=_to_opt(self.instances, device))  # fmt: skip


@dataclass
class ViewsBatch(Batch):
    """Two views of the same ``n`` items, for losses that learn without labels: row ``i`` of
    ``view_a`` and row ``i`` of ``view_b`` are two augmentations of one item (for texts: the same
    text, or the text with some words deleted; dropout makes the two passes differ, as in SimCSE).

    ``labels`` holds each item's class where the item is labelled and ``-1`` where it is not (mixed
    data); losses that ignore labels never read it.
    """

    view_a: Inputs
    view_b: Inputs
    labels: torch.Tensor

    @property
    def n_items(self) -> int:
        return 2 * len(self.labels)

    def to(self, device: torch.device) -> ViewsBatch:
        return replace(self, view_a=_to(self.view_a, device), view_b=_to(self.view_b, device),
                       labels=self.labels.to(device))  # fmt: skip
