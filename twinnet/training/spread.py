"""How spread out a model's embeddings are: the collapse guard's measurement.

Label-free objectives can reach a low loss by mapping everything to one point (or one line);
the per-dimension standard deviation and the effective rank of a fixed sample of training
embeddings show it epoch by epoch (``embedding_std``, ``effective_rank`` in ``metrics.jsonl``).
"""

from __future__ import annotations

import numpy as np
import torch

from twinnet.data.items import ItemSet
from twinnet.runtime import Stream, numpy_rng


def effective_rank(z: torch.Tensor) -> float:
    """Roy & Vetterli (2007): ``exp(H(p))`` with ``p`` the singular values of the centred
    embeddings normalised to sum 1; 1 when all rows lie on one line, ``d`` when every direction is
    used equally. 0 for embeddings that do not vary at all."""
    centred = (z - z.mean(0)).double()
    s = torch.linalg.svdvals(centred)
    total = s.sum()
    if not torch.isfinite(total) or total <= 1e-12 * max(1.0, float(z.abs().max())):
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def normalised_std(z: torch.Tensor) -> float:
    """SimSiam's collapse measure (Chen & He 2021): the per-dimension standard deviation of the
    L2-normalised embeddings, averaged over dimensions, times ``√d``: about 1 when the embeddings
    spread over the sphere, 0 when they collapse to one point. Unlike the effective rank it is not
    fooled by a collapse to one point plus small isotropic noise."""
    if len(z) < 2:
        return 0.0
    unit = torch.nn.functional.normalize(z.float(), dim=1)
    return float(unit.std(0).mean() * z.shape[1] ** 0.5)


def spread(z: torch.Tensor) -> dict[str, float]:
    """``embedding_std`` (the mean over dimensions of the per-dimension standard deviation),
    ``normalised_std`` (:func:`normalised_std`) and ``effective_rank`` of a batch of embeddings."""
    return {"embedding_std": float(z.float().std(0).mean()) if len(z) > 1 else 0.0,
            "normalised_std": normalised_std(z), "effective_rank": effective_rank(z)}  # fmt: skip


_PROBE = 1_000_000  # the probe sample's part of the stream (the pseudo-label epochs use 0, 1, …)


def probe_indices(n_items: int, n_probe: int, seed: int) -> np.ndarray:
    """A fixed seeded sample of ``n_probe`` training items (all of them when there are fewer)."""
    if n_items <= n_probe:
        return np.arange(n_items)
    return np.sort(numpy_rng(seed, Stream.PSEUDO_LABELS, _PROBE).choice(n_items, n_probe, replace=False))


def embedding_spread(model: torch.nn.Module, items: ItemSet, indices: np.ndarray) -> dict[str, float]:
    """:func:`spread` of the model's side-``a`` embeddings of ``items[indices]`` (eval mode, no gradients)."""
    from twinnet.embedding import embed_batches

    return spread(embed_batches(model, items, indices=indices))  # type: ignore[arg-type]
