"""Vector search backends behind one interface: FAISS (exact or approximate) and Qdrant.

Scores are similarities (larger = closer): inner product for ``ip``, negated squared distance for
``l2``. Ids are the store's template row ids; a missing result has id -1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

Metric = Literal["ip", "l2"]
IndexKind = Literal["auto", "flat", "hnsw", "ivf"]

#: ``auto`` switches from exact to IVF search at this many templates.
AUTO_APPROX_THRESHOLD = 200_000
#: Query batches smaller than this search on one OpenMP thread: for a few queries, waking a thread
#: team costs more than it saves, and on a busy machine (a model, a web server) spinning OpenMP
#: threads made single queries 40× slower in our measurements.
PARALLEL_MIN_QUERIES = 64


def index_similarity(metric: Metric, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The ``(len(queries), len(vectors))`` scores an exact index of ``metric`` gives: inner
    products, or negated squared Euclidean distances (computed from differences, not expanded, so
    that near-identical vectors score 0 rather than a rounding error)."""
    q = np.asarray(queries, dtype=np.float32)
    v = np.asarray(vectors, dtype=np.float32)
    if metric == "ip":
        return q @ v.T
    rows = max(1, (1 << 22) // max(1, v.size))  # bounds the broadcast difference to ~16 MB
    out = np.empty((len(q), len(v)), dtype=np.float32)
    for start in range(0, len(q), rows):
        out[start : start + rows] = -((q[start : start + rows, None, :] - v[None, :, :]) ** 2).sum(-1)
    return out


class VectorIndex(Protocol):
    kind: str

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> bool: ...
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def __len__(self) -> int: ...


class FaissIndex:
    """FAISS: ``flat`` (exact), ``ivf`` (inverted lists: trained on a sample, quick to build, supports
    removal) or ``hnsw`` (graph; no removal, so the gallery rebuilds it after one).

    Measured on 1M random 128-d unit vectors with noisy probes (``bench/gallery.py``): IVF with
    √n lists and ``nprobe=48`` keeps recall@1 above 0.95 well under 1 ms per query, and builds in
    seconds; HNSW (M=16, efSearch=64) took minutes to build and reached recall@1 0.41 there.
    """

    def __init__(self, dim: int, metric: Metric, kind: str = "flat", *, hnsw_m: int = 32, ef_search: int = 128,
                 ivf_lists: int | None = None, nprobe: int = 48, train_per_list: int = 64) -> None:  # fmt: skip
        import faiss

        self.faiss = faiss
        self.dim, self.metric, self.kind = dim, metric, kind
        self.ef_search, self.nprobe, self.hnsw_m, self.ivf_lists = ef_search, nprobe, hnsw_m, ivf_lists
        self.train_per_list = train_per_list
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        base: Any  # faiss's stubs type each index class apart; they share the attributes used here
        if kind == "flat":
            base = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
        elif kind == "hnsw":
            base = faiss.IndexHNSWFlat(dim, hnsw_m, faiss_metric)
            base.hnsw.efSearch = ef_search
            base.hnsw.efConstruction = max(80, 2 * hnsw_m)
        elif kind == "ivf":
            self._quantizer = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
            base = faiss.IndexIVFFlat(self._quantizer, dim, ivf_lists or 1024, faiss_metric)
            base.nprobe = nprobe
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        self.index = faiss.IndexIDMap2(base)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        base: Any = self.faiss.downcast_index(self.index.index)
        if self.kind == "ivf" and not base.is_trained:
            n_lists = self.ivf_lists or max(16, min(4096, int(np.sqrt(len(vectors)))))
            if n_lists != base.nlist:
                self.__init__(self.dim, self.metric, "ivf", ivf_lists=n_lists, nprobe=self.nprobe,  # type: ignore[misc]
                              train_per_list=self.train_per_list)  # fmt: skip
                base = self.faiss.downcast_index(self.index.index)
            # k-means on a seeded sample: the full set costs minutes and gains little
            sample = min(len(vectors), self.train_per_list * n_lists)
            if sample < len(vectors):
                vectors_for_training = vectors[np.random.default_rng(0).choice(len(vectors), sample, replace=False)]
            else:
                vectors_for_training = vectors
            base.train(vectors_for_training)
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> bool:
        if self.kind == "hnsw":
            return False  # HNSW cannot delete: the caller rebuilds
        self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))  # type: ignore[arg-type]  # the wrapper takes arrays
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0:
            n = len(queries)
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        threads = self.faiss.omp_get_max_threads()
        if len(queries) < PARALLEL_MIN_QUERIES:
            self.faiss.omp_set_num_threads(1)
        try:
            scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        finally:
            self.faiss.omp_set_num_threads(threads)
        if self.metric == "l2":
            scores = -scores
        scores[ids < 0] = -np.inf
        return scores, ids

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def save(self, path: Path, generation: int) -> None:
        tmp = path.with_name(path.name + ".tmp")
        self.faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)
        info = path.with_suffix(".json")
        info_tmp = info.with_name(info.name + ".tmp")
        info_tmp.write_text(json.dumps({"generation": generation, "kind": self.kind, "count": len(self)}))
        os.replace(info_tmp, info)

    @classmethod
    def load(cls, path: Path, dim: int, metric: Metric, kind: str, generation: int) -> FaissIndex | None:
        """The cached index, if it exists and was saved at ``generation``; else None (rebuild)."""
        info = path.with_suffix(".json")
        try:
            saved = json.loads(info.read_text())
            if saved.get("generation") != generation or saved.get("kind") != kind:
                return None
            obj = cls(dim, metric, kind)
            obj.index = obj.faiss.read_index(str(path))
            return obj
        except (OSError, ValueError, RuntimeError):
            return None


class QdrantIndex:
    """Qdrant through ``qdrant-client``: embedded local mode (``path``) or a server/cluster (``url``)."""

    kind = "qdrant"

    def __init__(self, dim: int, metric: Metric, *, path: str | None = None, url: str | None = None,
                 collection: str = "twinnet", api_key: str | None = None) -> None:  # fmt: skip
        from qdrant_client import QdrantClient, models

        self.models = models
        self.client = QdrantClient(url=url, api_key=api_key) if url else QdrantClient(path=path)
        self.collection = collection
        self.metric = metric
        distance = models.Distance.DOT if metric == "ip" else models.Distance.EUCLID
        if not self.client.collection_exists(collection):
            self.client.create_collection(collection, vectors_config=models.VectorParams(size=dim, distance=distance))

    def reset(self) -> None:
        info = self.client.get_collection(self.collection)
        params = info.config.params.vectors
        self.client.delete_collection(self.collection)
        self.client.create_collection(self.collection, vectors_config=params)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, len(ids), 1024):
            self.client.upsert(self.collection, self.models.Batch(
                ids=[int(i) for i in ids[start : start + 1024]], vectors=vectors[start : start + 1024].tolist(),
            ))  # fmt: skip

    def remove(self, ids: np.ndarray) -> bool:
        self.client.delete(self.collection, self.models.PointIdsList(points=[int(i) for i in ids]))
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        requests = [self.models.QueryRequest(query=q.tolist(), limit=k) for q in queries]
        for row, response in enumerate(self.client.query_batch_points(self.collection, requests)):
            for col, point in enumerate(response.points):
                ids[row, col] = int(point.id)
                # Qdrant's EUCLID score is the distance: turn it into our -squared-distance similarity
                scores[row, col] = point.score if self.metric == "ip" else -(point.score**2)
        return scores, ids

    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def close(self) -> None:
        self.client.close()
