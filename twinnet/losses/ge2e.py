"""The generalised end-to-end loss (GE2E; Wan et al. 2018) for speaker verification."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from twinnet.compare import Comparator
from twinnet.losses.base import LOSSES, EmbeddingLoss, number, one_of


@LOSSES.register("ge2e")
class GE2ELoss(EmbeddingLoss):
    """GE2E: every embedding is scored against every speaker's centroid in the batch by a learned
    affine map of the cosine, ``S = w · cos(e, c) + b`` (``w > 0``), and pulled to its own centroid,
    computed *without* the embedding itself; ``softmax`` takes the cross-entropy over the speakers,
    ``contrast`` pushes ``σ(S)`` of its own speaker up and the largest of the others down.

    Inputs:
        embeddings: ``(n, dim)`` (normalised here).

    Labels:
        labels: ``(n,)`` speaker ids; every speaker of the batch needs at least two utterances
        (P×K batches, batch plan ``pk``: ``train.classes_per_batch`` speakers ×
        ``train.items_per_class`` utterances).

    Args:
        init_w, init_b: the starting scale and bias (10 and −5, as in the paper); both are learned.
        variant: ``softmax`` or ``contrast``.

    Example::

        >>> import torch
        >>> loss = GE2ELoss(init_w=1.0, init_b=0.0)
        >>> emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> round(loss(emb, torch.tensor([0, 0, 1, 1])).item(), 4)   # log(1 + e^-1)
        0.3133
    """

    def __init__(self, init_w: float = 10.0, init_b: float = -5.0,
                 variant: Literal["softmax", "contrast"] = "softmax") -> None:  # fmt: skip
        super().__init__()
        self.w = nn.Parameter(torch.tensor(number(init_w, "init_w")))
        self.b = nn.Parameter(torch.tensor(float(number(init_b, "init_b", minimum=-1e9))))
        self.variant = one_of(variant, "variant", ("softmax", "contrast"))

    def similarity(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, speakers)`` scaled similarities and each row's own speaker column."""
        e = F.normalize(embeddings, dim=1)
        speakers, own = torch.unique(labels, return_inverse=True)
        onehot = F.one_hot(own, len(speakers)).to(e.dtype)  # (n, s)
        counts = onehot.sum(0)
        if bool((counts < 2).any()):
            raise ValueError("GE2E needs at least two utterances of every speaker in a batch (P×K batches)")
        sums = onehot.T @ e  # (s, dim)
        centroids = F.normalize(sums, dim=1)
        cos = e @ centroids.T  # (n, s)
        # each embedding's own centroid leaves the embedding out
        excl = F.normalize(sums[own] - e, dim=1)
        cos_own = (e * excl).sum(1)
        cos = cos.scatter(1, own[:, None], cos_own[:, None])
        return self.w.clamp_min(1e-6) * cos + self.b, own

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, comparator: Comparator | None = None
    ) -> torch.Tensor:
        s, own = self.similarity(embeddings, labels.long())
        if self.variant == "softmax":
            return F.cross_entropy(s, own)
        sig = torch.sigmoid(s)
        others = sig.scatter(1, own[:, None], float("-inf")).amax(1)
        return (1 - sig.gather(1, own[:, None])[:, 0] + others).mean()
