"""Deep supervised hashing: a triplet loss on relaxed Hamming distances plus a quantisation term."""

from __future__ import annotations

from typing import Literal

import torch

from twinnet.codes.comparator import HammingDistance
from twinnet.compare import Comparator
from twinnet.losses.base import LOSSES, EmbeddingLoss, number
from twinnet.losses.triplet import Mining, TripletLoss


@LOSSES.register("hashing")
class HashingLoss(EmbeddingLoss):
    """Learns binary codes: ``triplet(relaxed Hamming) + λ_q · quantisation + λ_b · bit balance``.

    The model's comparator must be ``hamming`` (method ``learned``): in train mode it gives the
    relaxed distance ``(bits − tanh(h_a)·tanh(h_b)) / 2`` with ``h = (x − centre) · W``, which the
    triplet term trains (margin in bits); the quantisation term ``mean (1 − |tanh h|)²`` pushes every
    relaxed bit to ±1 so that the exact codes (eval mode, galleries) lose little (as in deep
    supervised hashing, Liu et al. 2016); the balance term ``mean_bits (batch mean of tanh h)²``
    keeps each bit on for about half the items.

    Inputs:
        embeddings: ``(n, dim)`` float embeddings (the encoder's output).
        comparator: the model's :class:`~twinnet.codes.comparator.HammingDistance`.

    Labels:
        labels: ``(n,)`` integer class ids (P×K batches, batch plan ``pk``).

    Args:
        margin: triplet margin, in bits (relaxed Hamming distance).
        mining: ``batch_hard``, ``semi_hard`` or ``all`` (as :class:`~twinnet.losses.triplet.TripletLoss`).
        quantization: ``λ_q``.
        balance: ``λ_b``.

    Example::

        >>> import torch
        >>> from twinnet.codes import HammingDistance
        >>> comparator = HammingDistance(dim=4, bits=8, method="learned").train()
        >>> loss = HashingLoss(margin=2.0, quantization=0.1)
        >>> emb = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1.0, 0], [0, 0, 0.9, 0.1]])
        >>> value = loss(emb, torch.tensor([0, 0, 1, 1]), comparator)
        >>> bool(value > 0) and value.requires_grad
        True
    """

    def __init__(
        self, margin: float = 8.0, mining: Mining = "batch_hard", quantization: float = 0.1, balance: float = 0.01,
        reduction: Literal["mean", "mean_nonzero"] = "mean",
    ) -> None:  # fmt: skip
        super().__init__()
        self.triplet = TripletLoss(margin, mining, "comparator", reduction)
        self.quantization = number(quantization, "quantization", strict=False)
        self.balance = number(balance, "balance", strict=False)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, comparator: Comparator | None = None
    ) -> torch.Tensor:
        if not isinstance(comparator, HammingDistance):
            raise ValueError("the hashing loss needs the model's comparator to be 'hamming' (method: learned)")
        total = self.triplet(embeddings, labels, comparator)
        return (total + self.quantization * comparator.quantization_penalty(embeddings)
                + self.balance * comparator.bit_balance_penalty(embeddings))  # fmt: skip
