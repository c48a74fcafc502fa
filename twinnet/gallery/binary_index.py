"""FAISS binary indexes behind the gallery's index interface: templates as packed bit codes,
searched by Hamming distance.

A comparator whose :class:`~twinnet.compare.IndexPlan` has metric ``hamming`` (the ``hamming``
comparator of :mod:`twinnet.codes`) is searched by :class:`BinaryFaissIndex`: ``flat`` (exact,
``IndexBinaryFlat``: XOR and popcount over every code), ``ivf`` (``IndexBinaryIVF``: inverted
lists around Hamming k-means centroids; supports removal) or ``hnsw`` (``IndexBinaryHNSW``; no
removal, so the gallery rebuilds it after one). Everything else (the cache file stamped with the
store's change id, its checks, catching up from the change log, ``auto`` switching to IVF) is
:class:`~twinnet.gallery.index.FaissIndex`'s, unchanged: the gallery does not know which kind of
index it holds.

Scores are similarities like every index's: the negated Hamming distance. Ties are ordered by
template id, so an exact search gives the same order as a brute-force one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from twinnet.errors import DataError
from twinnet.gallery.index import FaissIndex, register_faiss_index


@register_faiss_index("hamming")
class BinaryFaissIndex(FaissIndex):
    """A FAISS binary index of ``dim``-bit codes (``dim // 8`` uint8 bytes a template)."""

    HNSW_M, NPROBE = 16, 32
    #: ``ivf`` without an explicit ``nprobe`` probes at least this share of its lists (and at least
    #: ``NPROBE``): a fixed count scans a shrinking share as √n lists grow, and the neighbour a
    #: float re-scoring needs is then lost. Measured (``bench/hashing.py``'s generator, ITQ-128,
    #: 4000 candidates, 1000 queries): 1M codes, 1024 lists: 32 probed 0.914, 64 0.970, 128 0.986
    #: (exact Hamming 0.990); 10M, 1024 lists: 64 probed 0.928, 128 0.933 (exact 0.934).
    PROBE_SHARE = 1 / 16

    def _nprobe_for(self, n_lists: int) -> int:
        if self._nprobe_given:
            return self.nprobe
        return max(self.NPROBE, math.ceil(n_lists * self.PROBE_SHARE))

    def _tune_ivf(self) -> None:
        # Hamming distances are small integers, so the k best can be kept by counting per distance
        # instead of in a heap; with the hundreds to thousands of candidates a re-scored search
        # asks for, the heap was most of the time (measured at 10M ITQ-128 codes, 128 of 1024 lists,
        # k 12,000, one thread: p50 8.0 → 3.6 ms; the same distances). FAISS 1.15 reads this
        # scanner's max_codes of 0 as "scan nothing" instead of "no limit" (facebookresearch/faiss
        # issue 5555), so the limit is set to "every code" explicitly.
        self.index.use_heap = False
        self.index.max_codes = _NO_LIMIT

    def _check_dim(self, dim: int) -> None:
        if dim % 8 or dim < 8:
            raise DataError(f"binary codes have a multiple of 8 bits, not {dim}")

    def _make_flat(self) -> Any:
        return self.faiss.IndexBinaryFlat(self.dim)

    def _make_hnsw(self) -> Any:
        return self.faiss.IndexBinaryHNSW(self.dim, self.hnsw_m)

    def _make_ivf_index(self, quantizer: Any, n_lists: int) -> Any:
        return self.faiss.IndexBinaryIVF(quantizer, self.dim, n_lists)

    def _id_map(self, base: Any) -> Any:
        return self.faiss.IndexBinaryIDMap2(base)

    def _downcast(self, index: Any) -> Any:
        return self.faiss.downcast_IndexBinary(index)

    def _as_stored(self, vectors: np.ndarray) -> np.ndarray:
        return _codes(vectors, self.dim)

    def _to_similarities(self, raw: np.ndarray) -> np.ndarray:
        return -raw

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = super().search(queries, k)
        # equal (integer) distances in id order, as a brute-force search ranks them: one sort of
        # distance·2^b + id (a lexsort of 12,000 candidates took 1.7 ms, this 0.5 ms); missing
        # results (id -1) go last at distance dim + 1
        distance = np.where(ids < 0, self.dim + 1, -scores).astype(np.int64)
        id_bits = 62 - (self.dim + 1).bit_length()
        if ids.size and int(ids.max()) >= 1 << id_bits:  # ids too large to share one int64 with it
            order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), distance), axis=1)
        else:
            order = np.argsort((distance << id_bits) | np.maximum(ids, 0), axis=1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def _from_codes(self, codes: np.ndarray) -> np.ndarray:
        return codes

    def _code_size(self) -> int:
        return self.dim // 8

    def memory_bytes(self) -> int:
        """The bytes of the index's serialised form: codes, ids and lists (what it holds in memory)."""
        return int(self.faiss.serialize_index_binary(self.index).size)

    def _serialize(self) -> Any:
        return self.faiss.serialize_index_binary(self.index)

    def _deserialize(self, raw: np.ndarray) -> Any:
        return self.faiss.deserialize_index_binary(raw)


#: ``max_codes`` for "scan every code the probed lists hold" (FAISS's size_t; any count above a
#: gallery's size does)
_NO_LIMIT = 2**62


def _codes(vectors: np.ndarray, bits: int) -> np.ndarray:
    codes = np.asarray(vectors)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] * 8 != bits:
        raise DataError(f"a {bits}-bit binary index takes (n, {bits // 8}) uint8 codes, not {codes.dtype} "
                        f"of shape {codes.shape}")  # fmt: skip
    return np.ascontiguousarray(codes)
