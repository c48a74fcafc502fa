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

from typing import Any

import numpy as np

from twinnet.errors import DataError
from twinnet.gallery.index import PARALLEL_MIN_QUERIES, FaissIndex, Metric, ivf_lists_for, register_faiss_index


@register_faiss_index("hamming")
class BinaryFaissIndex(FaissIndex):
    """A FAISS binary index of ``dim``-bit codes (``dim // 8`` uint8 bytes a template)."""

    def __init__(self, dim: int, metric: Metric = "hamming", kind: str = "flat", *, hnsw_m: int = 16,
                 ef_search: int = 128, ivf_lists: int | None = None, nprobe: int = 32,
                 train_per_list: int = 64) -> None:  # fmt: skip
        import faiss

        if dim % 8 or dim < 8:
            raise DataError(f"binary codes have a multiple of 8 bits, not {dim}")
        self.faiss = faiss
        self.dim, self.metric, self.kind = dim, metric, kind
        self.ef_search, self.nprobe, self.hnsw_m, self.ivf_lists = ef_search, nprobe, hnsw_m, ivf_lists
        self.train_per_list = train_per_list
        self.trained_for = 0
        self.index: Any
        if kind == "flat":
            self.index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(dim))
        elif kind == "hnsw":
            base = faiss.IndexBinaryHNSW(dim, hnsw_m)
            base.hnsw.efSearch = ef_search
            base.hnsw.efConstruction = max(80, 2 * hnsw_m)
            self.index = faiss.IndexBinaryIDMap2(base)
        elif kind == "ivf":
            self._make_ivf(ivf_lists or 1024)
        else:
            raise ValueError(f"unknown index kind {kind!r}")

    def _make_ivf(self, n_lists: int) -> None:
        faiss = self.faiss
        self._quantizer = faiss.IndexBinaryFlat(self.dim)
        self.index = faiss.IndexBinaryIVF(self._quantizer, self.dim, n_lists)
        self.index.nprobe = self.nprobe
        self.index.set_direct_map_type(faiss.DirectMap.Hashtable)

    @property
    def base(self) -> Any:
        if self.kind == "ivf":
            return self.index
        return self.faiss.downcast_IndexBinary(self.index.index)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        codes = _codes(vectors, self.dim)
        if len(codes) == 0:
            return
        if self.kind == "ivf" and not self.index.is_trained:
            n_lists = self.ivf_lists or ivf_lists_for(len(codes))
            if n_lists != self.index.nlist:
                self._make_ivf(n_lists)
            sample = min(len(codes), self.train_per_list * n_lists)
            picked = np.random.default_rng(0).choice(len(codes), sample, replace=False) if sample < len(codes) else None
            self.index.train(codes if picked is None else codes[np.sort(picked)])
            self.trained_for = len(codes)
        self.index.add_with_ids(codes, np.ascontiguousarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        codes = _codes(queries, self.dim)
        if len(self) == 0:
            return np.full((len(codes), k), -np.inf, np.float32), np.full((len(codes), k), -1, np.int64)
        threads = self.faiss.omp_get_max_threads()
        if len(codes) < PARALLEL_MIN_QUERIES:
            self.faiss.omp_set_num_threads(1)
        try:
            distances, ids = self.index.search(codes, k)
        finally:
            self.faiss.omp_set_num_threads(threads)
        ids = ids.astype(np.int64)
        scores = -distances.astype(np.float32)
        scores[ids < 0] = -np.inf
        # equal distances in id order, as a brute-force search ranks them
        order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -scores), axis=1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, self.dim // 8), np.uint8)
        return np.stack([self.index.reconstruct(int(i)) for i in ids])

    def memory_bytes(self) -> int:
        """The bytes of the index's serialised form: codes, ids and lists (what it holds in memory)."""
        return int(self.faiss.serialize_index_binary(self.index).size)

    def _serialize(self) -> Any:
        return self.faiss.serialize_index_binary(self.index)

    def _deserialize(self, raw: np.ndarray) -> Any:
        return self.faiss.deserialize_index_binary(raw)


def _codes(vectors: np.ndarray, bits: int) -> np.ndarray:
    codes = np.asarray(vectors)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] * 8 != bits:
        raise DataError(f"a {bits}-bit binary index takes (n, {bits // 8}) uint8 codes, not {codes.dtype} "
                        f"of shape {codes.shape}")  # fmt: skip
    return np.ascontiguousarray(codes)
