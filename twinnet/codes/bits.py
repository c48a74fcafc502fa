"""Binary codes as packed bits: signs → bytes, bytes → signs, and Hamming distances.

A code of ``bits`` bits is ``bits // 8`` bytes, most significant bit first within each byte
(``numpy.packbits``' order, which FAISS's binary indexes read the same way). Bit ``j`` is 1 where
projection ``j`` of the embedding is positive.
"""

from __future__ import annotations

import numpy as np

from twinnet.errors import DataError


def check_bits(bits: int) -> int:
    """``bits`` if it is a positive multiple of 8 (FAISS binary indexes store whole bytes)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 8 or bits % 8:
        raise ValueError(f"bits must be a positive multiple of 8, not {bits!r}")
    return int(bits)


def pack_bits(positive: np.ndarray) -> np.ndarray:
    """``(n, bits)`` booleans (or values, positive → 1) → ``(n, bits // 8)`` uint8 codes."""
    x = np.asarray(positive)
    if x.ndim != 2:
        raise DataError(f"expected an (n, bits) array, got shape {x.shape}")
    check_bits(x.shape[1])
    on = x if x.dtype == np.bool_ else x > 0
    return np.ascontiguousarray(np.packbits(on, axis=1))


def unpack_bits(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """``(n, bytes)`` uint8 codes → ``(n, bits)`` booleans (the inverse of :func:`pack_bits`)."""
    c = _codes(codes)
    out = np.unpackbits(c, axis=1).astype(bool)
    return out if bits is None else out[:, : check_bits(bits)]


def signs(codes: np.ndarray) -> np.ndarray:
    """Codes as ±1 float32 vectors, ``(n, bits)``: the Hamming distance is ``(bits − a·b) / 2``."""
    return unpack_bits(codes).astype(np.float32) * 2.0 - 1.0


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distances of two ``(n, bytes)`` code arrays: ``(n,)`` int64."""
    x, y = _codes(a), _codes(b)
    if x.shape != y.shape:
        raise DataError(f"code arrays differ in shape: {x.shape} vs {y.shape}")
    return np.bitwise_count(np.bitwise_xor(x, y)).sum(1, dtype=np.int64)


def hamming_matrix(a: np.ndarray, b: np.ndarray, rows: int = 256) -> np.ndarray:
    """All Hamming distances between ``(n, bytes)`` and ``(m, bytes)`` codes: ``(n, m)`` int64
    (by XOR and popcount, in blocks of ``rows`` query rows)."""
    x, y = _codes(a), _codes(b)
    if x.shape[1] != y.shape[1]:
        raise DataError(f"codes of {8 * x.shape[1]} and {8 * y.shape[1]} bits cannot be compared")
    out = np.empty((len(x), len(y)), dtype=np.int64)
    for start in range(0, len(x), rows):
        block = np.bitwise_xor(x[start : start + rows, None, :], y[None, :, :])
        out[start : start + rows] = np.bitwise_count(block).sum(-1, dtype=np.int64)
    return out


def _codes(codes: np.ndarray) -> np.ndarray:
    c = np.asarray(codes)
    if c.ndim != 2 or c.dtype != np.uint8:
        raise DataError(f"codes must be an (n, bytes) uint8 array, not {c.dtype} of shape {c.shape}")
    return np.ascontiguousarray(c)
