"""Identity-shaped synthetic embeddings: N identities × K templates with the spread of a real model.

Random unit vectors are a poor stand-in for a gallery: real embeddings cluster by identity, the
identities themselves fill only part of the space, and the nearest template of a probe is usually
one of its own identity's. :class:`IdentityGenerator` is fitted on a real model's embeddings of
labelled data and draws as many identities as wanted with the same structure:

- identity centres ``μ + B z`` (``z ~ N(0, I)``), where ``B Bᵀ`` is the covariance of the real
  class means (the between-identity spread, its whole spectrum);
- templates ``centre + W z'``, where ``W Wᵀ`` is the pooled covariance of the real embeddings
  around their class means (the within-identity spread), scaled by ``within_scale``;
- rows renormalised to unit length when the real embeddings were (an L2-normalised model).

Both covariances are estimated on the real data after removing the bias of finite classes (a
class mean of ``k`` templates carries ``1/k`` of the within-identity covariance). :meth:`stats`
gives the figures that :meth:`fit` matches: mean cosine of same-identity pairs and of
different-identity pairs; the benchmarks report them for the real and the synthetic data side by
side. Generation is chunked and seeded: ``generate(n_identities, k, seed)`` gives the same
vectors in any chunking.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from twinnet.errors import DataError


@dataclass
class IdentityGenerator:
    """A fitted generator (see the module docstring). ``between`` and ``within`` are square-root
    factors (``dim × dim``) of the two covariances."""

    mean: np.ndarray
    between: np.ndarray
    within: np.ndarray
    normalize: bool
    within_scale: float = 1.0

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: np.ndarray, normalize: bool | None = None) -> IdentityGenerator:
        """Fit on real ``(n, dim)`` embeddings with one identity label per row (at least two
        identities with two templates or more). ``normalize``: renormalise generated rows (default:
        whether the given rows are unit length)."""
        x = np.asarray(embeddings, dtype=np.float64)
        y = np.asarray(labels)
        if x.ndim != 2 or len(x) != len(y):
            raise DataError(f"embeddings {x.shape} and labels {y.shape} do not match")
        classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        if len(classes) < 2 or (counts >= 2).sum() < 2:
            raise DataError("fitting needs at least two identities with two templates or more")
        if normalize is None:
            normalize = bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3))
        means = np.zeros((len(classes), x.shape[1]))
        np.add.at(means, inverse, x)
        means /= counts[:, None]
        residual = x - means[inverse]
        dof = int((counts - 1).sum())
        within_cov = residual.T @ residual / max(1, dof)
        mu = means.mean(0)
        centred = means - mu
        between_cov = centred.T @ centred / max(1, len(classes) - 1)
        # a class mean of k templates also carries 1/k of the within-identity covariance
        between_cov -= within_cov * float(np.mean(1.0 / counts))
        return cls(mu.astype(np.float32), _sqrt_psd(between_cov), _sqrt_psd(within_cov), normalize)

    def centres(self, n_identities: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng([seed, 1])
        z = rng.standard_normal((n_identities, self.dim), dtype=np.float32)
        return (self.mean + z @ self.between.T).astype(np.float32)

    def templates_of(self, centres: np.ndarray, k: int, seed: int, draw: int = 0) -> np.ndarray:
        """``k`` templates of each identity in ``centres``, ``(len(centres) * k, dim)``, identity by
        identity. ``draw`` picks an independent stream (e.g. probes that are not the enrolled templates)."""
        rng = np.random.default_rng([seed, 2, draw])
        z = rng.standard_normal((len(centres) * k, self.dim), dtype=np.float32)
        x = np.repeat(centres, k, axis=0) + self.within_scale * (z @ self.within.T)
        return _unit(x) if self.normalize else x.astype(np.float32)

    def generate(
        self, n_identities: int, k: int, seed: int = 0, chunk: int = 100_000, draw: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(identity indices, templates)`` in chunks of about ``chunk`` templates: identity ``i``'s
        ``k`` templates are rows ``i*k … i*k+k-1`` overall. The same seed gives the same vectors
        whatever the chunk size (each chunk of identities has its own seeded stream)."""
        if n_identities < 1 or k < 1:
            raise DataError(f"need at least one identity and one template each, not {n_identities} × {k}")
        centres = self.centres(n_identities, seed)
        per_block = 1000  # identities per seeded block: chunking never changes the stream
        ids_per_chunk = max(per_block, (chunk // k) // per_block * per_block)
        for start in range(0, n_identities, ids_per_chunk):
            stop = min(n_identities, start + ids_per_chunk)
            parts = [
                self.templates_of(centres[b : min(stop, b + per_block)], k, seed * 1_000_003 + b // per_block, draw)
                for b in range(start, stop, per_block)
            ]
            yield np.repeat(np.arange(start, stop), k), np.concatenate(parts)

    def sample(self, n_identities: int, k: int, seed: int = 0, draw: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """All of :meth:`generate` at once: ``(templates, identity labels)``."""
        labels, parts = [], []
        for lab, x in self.generate(n_identities, k, seed, draw=draw):
            labels.append(lab)
            parts.append(x)
        return np.concatenate(parts), np.concatenate(labels)


def stats(embeddings: np.ndarray, labels: np.ndarray, pairs: int = 20_000, seed: int = 0) -> dict[str, float]:
    """Mean cosine of ``pairs`` random same-identity and different-identity pairs, and the
    verification EER of cosine on them: the shape the generator matches."""
    from twinnet.metrics import calc_eer

    x = _unit(np.asarray(embeddings, dtype=np.float32))
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = np.argsort(y, kind="stable")
    ys = y[order]
    starts = np.searchsorted(ys, ys, side="left")
    ends = np.searchsorted(ys, ys, side="right")
    multi = np.flatnonzero(ends - starts >= 2)
    a = rng.choice(multi, pairs)
    offset = rng.integers(1, (ends - starts)[a])
    b = starts[a] + (a - starts[a] + offset) % (ends - starts)[a]
    same = np.einsum("ij,ij->i", x[order[a]], x[order[b]])
    i, j = rng.integers(0, len(x), pairs), rng.integers(0, len(x), pairs)
    keep = y[i] != y[j]
    diff = np.einsum("ij,ij->i", x[i[keep]], x[j[keep]])
    eer, _ = calc_eer(np.r_[same, diff], np.r_[np.ones(len(same), bool), np.zeros(len(diff), bool)])
    return {"same_cosine": float(same.mean()), "different_cosine": float(diff.mean()), "eer": float(eer)}


def _sqrt_psd(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
