"""In-batch mining: pure functions from a distance matrix and labels to triplet indices.

All functions take ``labels`` of shape ``(n,)`` and, where needed, ``dist`` of shape ``(n, n)``
(smaller = more alike), and return ``(anchor, positive, negative)`` index tensors of equal length.
An anchor is never its own positive.
"""

from __future__ import annotations

import torch

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _same_and_positive_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same, same & ~eye


def valid_triplet_mask(labels: torch.Tensor) -> torch.Tensor:
    """``mask[a, p, n]`` is True where ``a ≠ p``, ``label[a] = label[p]`` and ``label[a] ≠ label[n]``."""
    same, positive = _same_and_positive_masks(labels)
    return positive.unsqueeze(2) & ~same.unsqueeze(1)


def all_triplets(labels: torch.Tensor) -> Triplets:
    """Every valid triplet of the batch ("batch all", Hermans et al. 2017)."""
    a, p, n = valid_triplet_mask(labels).nonzero(as_tuple=True)
    return a, p, n


def batch_hard_triplets(dist: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """For each anchor, its farthest positive and its closest negative (Hermans et al. 2017).

    Anchors without a positive or without a negative in the batch are left out.
    """
    same, positive = _same_and_positive_masks(labels)
    negative = ~same
    keep = positive.any(1) & negative.any(1)
    d = dist.detach()
    hardest_pos = d.masked_fill(~positive, float("-inf")).argmax(1)
    hardest_neg = d.masked_fill(~negative, float("inf")).argmin(1)
    anchors = keep.nonzero(as_tuple=True)[0]
    return anchors, hardest_pos[anchors], hardest_neg[anchors]


def semi_hard_triplets(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    """Triplets whose negative is farther than the positive but within the margin:
    ``d(a,p) < d(a,n) < d(a,p) + margin`` (Schroff et al. 2015)."""
    d = dist.detach()
    d_ap = d.unsqueeze(2)
    d_an = d.unsqueeze(1)
    mask = valid_triplet_mask(labels) & (d_an > d_ap) & (d_an < d_ap + margin)
    a, p, n = mask.nonzero(as_tuple=True)
    return a, p, n
