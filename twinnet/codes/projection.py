"""Projections of float embeddings onto binary codes, fitted after training, and int8 scalar
quantisation.

A code is ``sign((x − centre) · W)`` for a ``dim × bits`` matrix ``W``:

- ``simhash`` (Charikar 2002): ``W`` random Gaussian hyperplanes, centre 0; the probability that
  a bit differs is the angle between the two embeddings over π.
- ``sign``: ``W = I`` and the centre the training mean: each coordinate's sign about its mean
  (``bits`` = the embedding size). For embeddings whose coordinates already carry the information
  evenly (a sentence model's), no rotation is needed, and one fitted on few embeddings can only add noise.
- ``itq`` (Gong & Lazebnik 2011, iterative quantisation): centre the training embeddings, project
  onto their top ``bits`` principal directions, then find the rotation ``R`` that moves the
  projected points closest to the corners of the hypercube (alternating ``B = sign(VR)`` and an
  orthogonal Procrustes step for ``R``); ``W = P R``. Needs ``bits ≤ dim``.

:class:`Int8Quantizer` is the middle option: each dimension mapped linearly onto 256 levels
between its minimum and maximum on calibration embeddings (sentence-transformers' ``int8``
scheme), 1 byte per dimension, compared by the inner product of the dequantised values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from twinnet.errors import DataError

METHODS = ("simhash", "itq", "learned", "sign")


def sign_projection(dim: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centre, W)`` of the embedding's own coordinates (``W = I``: one bit a dimension, the sign
    of each coordinate about the centre; sentence-transformers' ``ubinary`` with centre 0)."""
    if bits != dim:
        raise ValueError(f"sign codes have one bit a dimension: bits must be {dim}, not {bits}")
    return np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32)


def simhash_projection(dim: int, bits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(centre, W)`` of random hyperplanes through the origin (columns of unit length)."""
    w = np.random.default_rng(seed).standard_normal((dim, bits))
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    return np.zeros(dim, np.float32), w.astype(np.float32)


def itq_projection(
    embeddings: np.ndarray, bits: int, iterations: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(centre, W)`` fitted by iterative quantisation on ``(n, dim)`` training embeddings."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise DataError(f"ITQ needs an (n, dim) array of at least two embeddings, not shape {x.shape}")
    n, dim = x.shape
    if bits > dim:
        raise DataError(f"ITQ gives at most as many bits as dimensions ({dim}), not {bits}: use simhash")
    centre = x.mean(0)
    xc = x - centre
    _, _, vt = np.linalg.svd(xc[: min(n, 200_000)], full_matrices=False)
    pca = vt[:bits].T  # dim × bits
    v = xc @ pca
    rng = np.random.default_rng(seed)
    r, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    for _ in range(iterations):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ b)
        r = u @ wt
    return centre.astype(np.float32), (pca @ r).astype(np.float32)


@dataclass
class Int8Quantizer:
    """Per-dimension linear int8 quantisation (256 levels between each dimension's calibration
    minimum and maximum). ``encode`` gives ``(n, dim)`` int8, ``decode`` the float values it stands for."""

    low: np.ndarray
    step: np.ndarray

    @classmethod
    def fit(cls, embeddings: np.ndarray) -> Int8Quantizer:
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or len(x) < 2:
            raise DataError(f"int8 calibration needs an (n, dim) array of at least two rows, not shape {x.shape}")
        low, high = x.min(0), x.max(0)
        return cls(low, np.maximum(high - low, 1e-12) / 255.0)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        return (np.clip(np.rint((x - self.low) / self.step), 0, 255) - 128).astype(np.int8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return ((np.asarray(codes, dtype=np.float32) + 128.0) * self.step + self.low).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low.tolist(), "step": self.step.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Int8Quantizer:
        return cls(np.asarray(data["low"], np.float32), np.asarray(data["step"], np.float32))
