"""Local matching: compare parts, not the whole impression.

The twin's encoder gives a grid of local descriptors (``encoder.local(x)``: one per 8×8 pixels of
the preprocessed impression, :class:`twinnet.encoders.fingerprint.FingerprintEncoder`); those on
the ridge region form a :class:`LocalTemplate`. Two templates are matched by **mutual nearest
neighbours** (each descriptor's best match in the other set is itself's best match, above
``min_similarity``), then a **geometric-consistency check**: every two matches propose a rigid
motion (rotation within ``max_rotation`` degrees and a translation, lengths kept within 20%); the
motion that brings most matches within ``tolerance`` cells wins, and the score is the summed
similarity of the matches it explains. Impostor matches rarely agree on one motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from twinnet.data.items import ItemSet
from twinnet.errors import ConfigError
from twinnet.model import AnyTwin


@dataclass
class LocalTemplate:
    """Unit descriptors ``(n, D)`` and their grid positions ``(n, 2)`` (row, column, in cells)."""

    descriptors: np.ndarray
    positions: np.ndarray


@torch.no_grad()
def local_templates(model: AnyTwin, items: ItemSet, batch_size: int = 32, foreground: float = 0.5,
                    paper: float = 0.98) -> list[LocalTemplate]:  # fmt: skip
    """The local template of every item: descriptors on the cells where at least ``foreground`` of
    the pixels are ridge region (darker than ``paper``; the preprocessor whitens the rest)."""
    encoder = model.encoder_for("a")
    local = getattr(encoder, "local", None)
    if local is None:
        raise ConfigError(f"encoder {type(encoder).__name__} gives no local descriptors (use fingerprint_net)")
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(items), batch_size):
            x = items.load(np.arange(start, min(len(items), start + batch_size))).to(model.device)
            maps = local(x).float().cpu()
            cover = F.adaptive_avg_pool2d((x < paper).float().cpu(), maps.shape[-2:])[:, 0]
            for m, c in zip(maps, cover):
                rows, cols = np.nonzero(c.numpy() >= foreground)
                desc = m[:, rows, cols].T.numpy().astype(np.float32)
                out.append(LocalTemplate(desc, np.stack([rows, cols], 1).astype(np.float32)))
    finally:
        model.train(was_training)
    return out


def mutual_matches(a: LocalTemplate, b: LocalTemplate, min_similarity: float) -> tuple[np.ndarray, np.ndarray,
                                                                                           np.ndarray]:  # fmt: skip
    """Indices ``(i, j)`` of mutual nearest neighbours and their similarities."""
    if not len(a.descriptors) or not len(b.descriptors):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    sim = a.descriptors @ b.descriptors.T
    best_b, best_a = sim.argmax(1), sim.argmax(0)
    i = np.flatnonzero(best_a[best_b] == np.arange(len(best_b)))
    j = best_b[i]
    s = sim[i, j]
    keep = s >= min_similarity
    return i[keep], j[keep], s[keep]


def match_score(a: LocalTemplate, b: LocalTemplate, min_similarity: float = 0.5, tolerance: float = 1.5,
                max_rotation: float = 60.0, hypotheses: int = 60) -> float:  # fmt: skip
    """Summed similarity of the mutual matches explained by the best rigid motion (0 with fewer than
    two matches). The ``hypotheses`` most similar matches propose motions (all pairs of them)."""
    i, j, s = mutual_matches(a, b, min_similarity)
    if len(i) < 2:
        return float(s.sum()) * 0.5 if len(i) else 0.0
    pa, pb = a.positions[i].astype(np.float64), b.positions[j].astype(np.float64)
    top = np.argsort(-s)[:hypotheses]
    u, v = np.triu_indices(len(top), 1)
    u, v = top[u], top[v]
    da, db = pa[v] - pa[u], pb[v] - pb[u]
    la, lb = np.hypot(*da.T), np.hypot(*db.T)
    ok = (la > 1.5) & (lb > 1.5) & (np.abs(lb / np.maximum(la, 1e-9) - 1) < 0.2)
    theta = np.arctan2(db[:, 1], db[:, 0]) - np.arctan2(da[:, 1], da[:, 0])
    theta = (theta + np.pi) % (2 * np.pi) - np.pi
    ok &= np.abs(theta) <= np.deg2rad(max_rotation)
    if not ok.any():
        return float(s.max())
    u, theta = u[ok], theta[ok]
    cos, sin = np.cos(theta), np.sin(theta)
    # motion k maps pa[u_k] onto pb[u_k]: p' = R p + t
    rot = lambda p: np.stack([cos[:, None] * p[None, :, 0] - sin[:, None] * p[None, :, 1],  # noqa: E731
                              sin[:, None] * p[None, :, 0] + cos[:, None] * p[None, :, 1]], -1)  # fmt: skip
    t = pb[u] - rot(pa)[np.arange(len(u)), u]
    moved = rot(pa) + t[:, None, :]
    inliers = np.hypot(*(moved - pb[None]).transpose(2, 0, 1)) <= tolerance
    explained = inliers.astype(np.float64) @ s.astype(np.float64)
    return float(explained.max())


def score_pairs(templates: list[LocalTemplate], a: np.ndarray, b: np.ndarray, **options: float) -> np.ndarray:
    """:func:`match_score` of index pairs ``(a[k], b[k])`` into ``templates``."""
    return np.array([match_score(templates[i], templates[j], **options) for i, j in zip(a, b)], float)  # type: ignore[arg-type]
