"""Vector search backends behind one interface: FAISS (exact or approximate) and Qdrant.

Scores are similarities (larger = closer): inner product for ``ip``, negated squared distance for
``l2``. Ids are the store's template row ids; a missing result has id -1.

Both backends are derived data: they record the store's change id they reflect (the FAISS cache
file in its header, a Qdrant collection in a companion state collection), and the gallery replays
the store's change log from there.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import zlib
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from twinnet.registry import Registry

Metric = Literal["ip", "l2", "hamming"]
IndexKind = Literal["auto", "flat", "hnsw", "ivf"]

#: ``auto`` switches from exact to IVF search at this many templates (and back below half of it).
AUTO_APPROX_THRESHOLD = 200_000
#: Query batches smaller than this search on one OpenMP thread: for a few queries, waking a thread
#: team costs more than it saves, and on a busy machine (a model, a web server) spinning OpenMP
#: threads made single queries 40× slower in our measurements.
PARALLEL_MIN_QUERIES = 64

#: The first bytes of a cache file written by this version; anything else (a version-1 cache, a
#: torn or foreign file) is not trusted.
CACHE_MAGIC = b"TWINNET-INDEX-CACHE\x00v2\n"
_HEADER_LENGTH = struct.Struct("<Q")


def index_similarity(metric: Metric, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The ``(len(queries), len(vectors))`` scores an exact index of ``metric`` gives: inner
    products, or negated squared Euclidean distances (computed from differences, not expanded, so
    that near-identical vectors score 0 rather than a rounding error)."""
    if metric == "hamming":  # packed binary codes: negated Hamming distances
        from twinnet.codes.bits import hamming_matrix

        return -hamming_matrix(queries, vectors).astype(np.float32)
    q = np.asarray(queries, dtype=np.float32)
    v = np.asarray(vectors, dtype=np.float32)
    if metric == "ip":
        return q @ v.T
    rows = max(1, (1 << 22) // max(1, v.size))  # bounds the broadcast difference to ~16 MB
    out = np.empty((len(q), len(v)), dtype=np.float32)
    for start in range(0, len(q), rows):
        out[start : start + rows] = -((q[start : start + rows, None, :] - v[None, :, :]) ** 2).sum(-1)
    return out


def ivf_lists_for(n: int) -> int:
    """IVF lists for ``n`` vectors: about √n, and at most n/39 so that k-means has the 39 points
    per centroid FAISS asks for (fewer make it print warnings and cluster badly)."""
    return max(1, min(4096, int(np.sqrt(n)), n // 39))


class VectorIndex(Protocol):
    kind: str

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> bool: ...
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def __len__(self) -> int: ...


#: The FAISS index class for each index metric: :class:`FaissIndex` for ``ip`` and ``l2``;
#: :mod:`twinnet.gallery.binary_index` registers ``hamming`` (packed binary codes), imported the
#: first time anyone asks.
FAISS_INDEXES: Registry[FaissIndex] = Registry("FAISS index metric", builtins="twinnet.gallery.binary_index")


def register_faiss_index(*metrics: str) -> Any:
    def decorator(cls: type[FaissIndex]) -> type[FaissIndex]:
        for metric in metrics:
            FAISS_INDEXES.register(metric)(cls)
        return cls

    return decorator


def faiss_index_class(metric: str) -> type[FaissIndex]:
    """The FAISS index class that searches ``metric`` (an index plan's)."""
    return FAISS_INDEXES.get(metric)  # type: ignore[return-value]


class CacheError(Exception):
    """An index cache file that cannot be used (missing, torn, foreign, or for another index)."""


@register_faiss_index("ip", "l2")
class FaissIndex:
    """FAISS: ``flat`` (exact), ``ivf`` (inverted lists: trained on a sample, quick to build, supports
    removal) or ``hnsw`` (graph; no removal, so the gallery rebuilds it after one).

    ``flat`` and ``hnsw`` sit in an ``IndexIDMap2`` (our ids over FAISS's positions); ``ivf`` keeps
    our ids in its inverted lists itself. (An ``IndexIDMap2`` over IVF answers wrongly after a
    removal: it renumbers its id map as if the inner index compacted, which IVF does not.)

    ``ivf`` keeps no table from id to (list, offset) unless ``id_table=True`` (FAISS's
    ``DirectMap.Hashtable``): the table costs about 16 bytes a template, which for 128-bit codes
    (16 bytes of code and 8 of id) is two thirds more memory (10M codes: 381.5 MB with it, 228.9 MB
    without, ``bench/hashing.py``). Without it a removal scans the inverted lists for the ids
    (FAISS's ``DirectMap.NoMap`` path; 40-50 ms a removal at 10M codes on one busy core) and
    :meth:`reconstruct` walks the lists (the gallery only reconstructs the 8 vectors it checks
    when it trusts a cache file; :meth:`ids` walks them anyway). A cache file written with the
    table (earlier versions) loads without it.

    Measured on 1M random 128-d unit vectors with noisy probes (``bench/gallery.py``): IVF with
    √n lists and ``nprobe=48`` keeps recall@1 above 0.95 well under 1 ms per query, and builds in
    seconds; HNSW (M=16, efSearch=64) took minutes to build and reached recall@1 0.41 there.
    """

    #: Defaults of this index class (a binary index has its own, measured on codes).
    HNSW_M, NPROBE = 32, 48

    def __init__(self, dim: int, metric: Metric, kind: str = "flat", *, hnsw_m: int | None = None,
                 ef_search: int = 128, ivf_lists: int | None = None, nprobe: int | None = None,
                 train_per_list: int = 64, id_table: bool = False) -> None:  # fmt: skip
        import faiss

        self.faiss: Any = faiss  # the stubs lack much of what is used (DirectMap, the binary indexes)
        self._check_dim(dim)
        self.dim, self.metric, self.kind = dim, metric, kind
        self.hnsw_m = self.HNSW_M if hnsw_m is None else hnsw_m
        self.nprobe = self.NPROBE if nprobe is None else nprobe
        self._nprobe_given = nprobe is not None
        self.ef_search, self.ivf_lists, self.train_per_list = ef_search, ivf_lists, train_per_list
        #: ``ivf``: keep FAISS's id → (list, offset) hash table (removal by lookup, reconstruction by id)
        self.id_table = id_table
        #: how many vectors the IVF lists were trained for (0: not trained yet)
        self.trained_for = 0
        self.index: Any  # faiss's stubs type each index class apart; they share the attributes used here
        if kind == "flat":
            self.index = self._id_map(self._make_flat())
        elif kind == "hnsw":
            base = self._make_hnsw()
            base.hnsw.efSearch = ef_search
            base.hnsw.efConstruction = max(80, 2 * self.hnsw_m)
            self.index = self._id_map(base)
        elif kind == "ivf":
            self._make_ivf(ivf_lists or 1024)
        else:
            raise ValueError(f"unknown index kind {kind!r}")

    # -- what an index of another kind of vector overrides (twinnet.gallery.binary_index) ------------

    def _check_dim(self, dim: int) -> None:
        """Refuse a dimension this index cannot hold (floats: any)."""

    def _make_flat(self) -> Any:
        return self.faiss.IndexFlatIP(self.dim) if self.metric == "ip" else self.faiss.IndexFlatL2(self.dim)

    def _make_hnsw(self) -> Any:
        return self.faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self._faiss_metric())

    def _make_ivf_index(self, quantizer: Any, n_lists: int) -> Any:
        return self.faiss.IndexIVFFlat(quantizer, self.dim, n_lists, self._faiss_metric())

    def _faiss_metric(self) -> Any:
        return self.faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else self.faiss.METRIC_L2

    def _id_map(self, base: Any) -> Any:
        return self.faiss.IndexIDMap2(base)

    def _downcast(self, index: Any) -> Any:
        return self.faiss.downcast_index(index)

    def _as_stored(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` as the FAISS index takes them (contiguous float32 rows)."""
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _to_similarities(self, raw: np.ndarray) -> np.ndarray:
        """FAISS's search values as similarities (a squared distance negated)."""
        return -raw if self.metric == "l2" else raw

    def _from_codes(self, codes: np.ndarray) -> np.ndarray:
        """Vectors from the ``(n, code_size)`` uint8 codes of an IVF list (IVF-flat: the raw floats)."""
        return codes.view(np.float32)

    # ----------------------------------------------------------------------------------------------

    def _make_ivf(self, n_lists: int) -> None:
        self._quantizer = self._make_flat()  # kept: the IVF index does not own it
        self.index = self._make_ivf_index(self._quantizer, n_lists)
        self.index.nprobe = self._nprobe_for(n_lists)
        self._set_direct_map()
        self._tune_ivf()

    def _nprobe_for(self, n_lists: int) -> int:
        """Lists an IVF search of ``n_lists`` probes: ``nprobe`` (given, or the class's default)."""
        return self.nprobe

    def _tune_ivf(self) -> None:
        """Search settings of an IVF index that FAISS does not serialise (none for float indexes)."""

    def _set_direct_map(self) -> None:
        """The IVF index's id table as :attr:`id_table` asks (converting one loaded from a cache)."""
        direct_map = self.faiss.DirectMap
        wanted = direct_map.Hashtable if self.id_table else direct_map.NoMap
        if self.index.direct_map.type != wanted:
            self.index.set_direct_map_type(wanted)

    @property
    def base(self) -> Any:
        """The FAISS index doing the search (inside the id map for ``flat`` and ``hnsw``)."""
        if self.kind == "ivf":
            return self.index
        return self._downcast(self.index.index)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = self._as_stored(vectors)
        if len(vectors) == 0:
            return
        if self.kind == "ivf" and not self.index.is_trained:
            n_lists = self.ivf_lists or ivf_lists_for(len(vectors))
            if n_lists != self.index.nlist:
                self._make_ivf(n_lists)
            # k-means on a seeded sample: the full set costs minutes and gains little
            sample = min(len(vectors), self.train_per_list * n_lists)
            if sample < len(vectors):
                picked = np.sort(np.random.default_rng(0).choice(len(vectors), sample, replace=False))
                vectors_for_training = vectors[picked]
            else:
                vectors_for_training = vectors
            self.index.train(vectors_for_training)
            self.trained_for = len(vectors)
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> bool:
        if self.kind == "hnsw":
            return False  # HNSW cannot delete: the caller rebuilds
        if len(ids):
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            if self.kind == "ivf" and self.index.direct_map.type == self.faiss.DirectMap.Hashtable:
                # FAISS's hash table removes only an IDSelectorArray; the binary IVF's remove_ids
                # makes an IDSelectorBatch of an array (and failed: each removal rebuilt the index)
                self.index.remove_ids(self.faiss.IDSelectorArray(len(ids), self.faiss.swig_ptr(ids)))
            else:
                self.index.remove_ids(ids)
        return True

    def needs_retraining(self) -> bool:
        """An IVF index that has grown to four times what its lists were trained for (√n lists
        should have doubled): searching it stays correct but gets slow and loses recall."""
        if self.kind != "ivf" or self.ivf_lists is not None or not self.index.is_trained:
            return False
        return ivf_lists_for(len(self)) >= 2 * int(self.index.nlist)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0:
            n = len(queries)
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        threads = self.faiss.omp_get_max_threads()
        if len(queries) < PARALLEL_MIN_QUERIES:
            self.faiss.omp_set_num_threads(1)
        try:
            raw, ids = self.index.search(self._as_stored(queries), k)
        finally:
            self.faiss.omp_set_num_threads(threads)
        ids = ids.astype(np.int64)
        scores = self._to_similarities(raw).astype(np.float32)
        scores[ids < 0] = -np.inf
        return scores, ids

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """Every id the index holds, sorted."""
        if self.kind == "ivf":
            lists = self.index.invlists
            parts = [
                self.faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(self.index.nlist)
                if lists.list_size(i)
            ]
            out = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        else:
            out = self.faiss.vector_to_array(self.index.id_map).astype(np.int64)
        out.sort()
        return out

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (which must be in the index). An IVF index without its id
        table walks its lists (a scan, meant for a few ids; :class:`KeyError` for one it lacks)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self.kind == "ivf" and self.index.direct_map.type == self.faiss.DirectMap.NoMap:
            return self._reconstruct_from_lists(ids)
        if not len(ids):
            return self._from_codes(np.zeros((0, self._code_size()), np.uint8))
        return np.stack([self.index.reconstruct(int(i)) for i in ids])

    def _code_size(self) -> int:
        """Bytes a stored vector takes (float32 rows)."""
        return 4 * self.dim

    def _reconstruct_from_lists(self, ids: np.ndarray) -> np.ndarray:
        code_size, lists = self._code_size(), self.index.invlists
        found: dict[int, np.ndarray] = {}
        wanted = np.unique(ids)
        for i in range(self.index.nlist):
            size = lists.list_size(i)
            if not size:
                continue
            list_ids = self.faiss.rev_swig_ptr(lists.get_ids(i), size)
            hits = np.flatnonzero(np.isin(list_ids, wanted))
            if len(hits):
                codes = self.faiss.rev_swig_ptr(lists.get_codes(i), size * code_size).reshape(size, code_size)
                found.update((int(list_ids[h]), codes[h].copy()) for h in hits)
                if len(found) == len(wanted):
                    break
        missing = np.setdiff1d(wanted, np.fromiter(found, np.int64, len(found)))
        if len(missing):
            raise KeyError(f"id {int(missing[0])} is not in the index")
        rows = [found[int(i)] for i in ids]
        return self._from_codes(np.stack(rows) if rows else np.zeros((0, code_size), np.uint8))

    # -- the cache file -------------------------------------------------------------------------------

    def save(self, path: Path, change_id: int) -> None:
        """Write the index to ``path``, stamped with the store ``change_id`` it reflects.

        Atomic and durable: the header and the index go to a temporary file of their own, which is
        fsynced and then renamed over ``path``; so a reader finds the old file or the new one,
        whole, and never a stamp with another index's contents. Several processes may save at once
        (each has its own temporary file; the last rename wins, and each file is truthful)."""
        payload = self._serialize().data  # a memoryview: no copy
        header = json.dumps({
            "change_id": int(change_id), "kind": self.kind, "metric": self.metric, "dim": self.dim,
            "count": len(self), "trained_for": self.trained_for, "ivf_lists": self.ivf_lists,
            "payload_bytes": payload.nbytes, "payload_crc32": zlib.crc32(payload),
        }).encode()  # fmt: skip
        tmp = temporary_name(path)
        try:
            with open(tmp, "wb") as f:
                f.write(CACHE_MAGIC + _HEADER_LENGTH.pack(len(header)) + header)
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_directory(path.parent)
        path.with_suffix(".json").unlink(missing_ok=True)  # version 1's stamp file: meaningless now

    @staticmethod
    def read_header(path: Path) -> dict[str, Any]:
        """The header of a cache file; :class:`CacheError` if it is not one."""
        try:
            with open(path, "rb") as f:
                return _read_header(f, path)
        except OSError as err:
            raise CacheError(f"{path}: {err.strerror or err}") from None

    @classmethod
    def load(cls, path: Path, dim: int, metric: Metric, kind: str) -> tuple[FaissIndex, int]:
        """The cached index and the change id it claims; :class:`CacheError` when the file is
        missing, torn, corrupt, or holds another kind of index. The caller still checks the claim
        against the store before trusting it."""
        try:
            with open(path, "rb") as f:
                header = _read_header(f, path)
                raw = f.read()
        except OSError as err:
            raise CacheError(f"{path}: {err.strerror or err}") from None
        if header.get("dim") != dim or header.get("metric") != metric or header.get("kind") != kind:
            raise CacheError(f"{path}: holds a {header.get('kind')} {header.get('metric')} index, not {kind} {metric}")
        if len(raw) != header.get("payload_bytes") or zlib.crc32(raw) != header.get("payload_crc32"):
            raise CacheError(f"{path}: torn or corrupted (checksum mismatch)")
        obj = cls(dim, metric, kind, ivf_lists=header.get("ivf_lists"))
        try:
            obj.index = obj._deserialize(np.frombuffer(raw, dtype=np.uint8))
        except RuntimeError as err:
            raise CacheError(f"{path}: unreadable index ({str(err).splitlines()[0]})") from None
        if kind == "ivf":
            obj.index.nprobe = obj._nprobe_for(int(obj.index.nlist))
            obj._set_direct_map()
            obj._tune_ivf()
        elif kind == "hnsw":
            obj.base.hnsw.efSearch = obj.ef_search
        if len(obj) != header.get("count") or obj.index.d != dim:
            raise CacheError(f"{path}: holds {len(obj)} vectors of dimension {obj.index.d}, not what its header says")
        obj.trained_for = int(header.get("trained_for") or 0)
        change_id = header.get("change_id")
        if not isinstance(change_id, int) or change_id < 0:
            raise CacheError(f"{path}: bad change id {change_id!r}")
        return obj, change_id

    def _serialize(self) -> Any:
        return self.faiss.serialize_index(self.index)

    def _deserialize(self, raw: np.ndarray) -> Any:
        return self.faiss.deserialize_index(raw)


def _read_header(f: Any, path: Path) -> dict[str, Any]:
    magic = f.read(len(CACHE_MAGIC))
    if magic != CACHE_MAGIC:
        raise CacheError(f"{path}: not a twinnet v2 index cache")
    raw_length = f.read(_HEADER_LENGTH.size)
    if len(raw_length) != _HEADER_LENGTH.size:
        raise CacheError(f"{path}: truncated header")
    (length,) = _HEADER_LENGTH.unpack(raw_length)
    if length > 1 << 16:
        raise CacheError(f"{path}: implausible header length {length}")
    try:
        header = json.loads(f.read(length))
    except (ValueError, UnicodeDecodeError):
        raise CacheError(f"{path}: unreadable header") from None
    if not isinstance(header, dict):
        raise CacheError(f"{path}: unreadable header")
    return header


def temporary_name(path: Path) -> Path:
    """A temporary file next to ``path``, unique to this process and call: ``.NAME.PID.HEX.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_orphan_temporaries(directory: Path) -> int:
    """Delete temporary files (:func:`temporary_name`) whose writer process is gone: what a writer
    killed between writing and renaming leaves behind. Returns how many went."""
    removed = 0
    for tmp in directory.glob(".*.tmp"):
        parts = tmp.name.split(".")
        if len(parts) < 4 or not parts[-3].isdigit():
            continue
        try:
            os.kill(int(parts[-3]), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            removed += 1
        except (PermissionError, OverflowError):  # another user's live process, or not a PID
            continue
    return removed


def fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class QdrantIndex:
    """Qdrant through ``qdrant-client``: embedded local mode (``path``) or a server/cluster (``url``).

    The change id the collection reflects lives in a one-point companion collection
    (``<collection>_twinnet_state``). It is written after the changes it covers, so it never claims
    more than the collection holds; replaying from it is safe because adds and removes of
    templates are idempotent.

    Embedded mode is one process at a time (qdrant-client locks the directory); several processes
    need a Qdrant server.
    """

    kind = "qdrant"

    def __init__(self, dim: int, metric: Metric, *, path: str | None = None, url: str | None = None,
                 collection: str = "twinnet", api_key: str | None = None) -> None:  # fmt: skip
        from qdrant_client import QdrantClient, models

        self.models = models
        self.client = QdrantClient(url=url, api_key=api_key) if url else QdrantClient(path=path)
        self.collection = collection
        self.state_collection = f"{collection}_twinnet_state"
        self.metric = metric
        #: binary codes are kept as ±1 vectors, compared by the dot product: Hamming = (bits − dot) / 2
        self.bits = dim if metric == "hamming" else None
        distance = models.Distance.EUCLID if metric == "l2" else models.Distance.DOT
        if not self.client.collection_exists(collection):
            self.client.create_collection(collection, vectors_config=models.VectorParams(size=dim, distance=distance))
        if not self.client.collection_exists(self.state_collection):
            self.client.create_collection(
                self.state_collection, vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT)
            )

    def applied(self) -> int | None:
        """The store change id this collection reflects (None: unknown, e.g. made by version 1)."""
        points = self.client.retrieve(self.state_collection, [0], with_payload=True)
        if not points or not points[0].payload:
            return None
        value = points[0].payload.get("change_id")
        return value if isinstance(value, int) else None

    def set_applied(self, change_id: int | None) -> None:
        if change_id is None:
            self.client.delete(self.state_collection, self.models.PointIdsList(points=[0]))
            return
        self.client.upsert(self.state_collection, [self.models.PointStruct(
            id=0, vector=[0.0], payload={"change_id": int(change_id)})])  # fmt: skip

    def reset(self) -> None:
        self.set_applied(None)  # first: while the collection is rebuilt, it claims nothing
        info = self.client.get_collection(self.collection)
        params = info.config.params.vectors
        self.client.delete_collection(self.collection)
        self.client.create_collection(self.collection, vectors_config=params)

    def _points(self, vectors: np.ndarray) -> np.ndarray:
        if self.bits is None:
            return np.asarray(vectors, dtype=np.float32)
        from twinnet.codes.bits import signs

        return signs(vectors)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = self._points(vectors)
        for start in range(0, len(ids), 1024):
            self.client.upsert(self.collection, self.models.Batch(
                ids=[int(i) for i in ids[start : start + 1024]], vectors=vectors[start : start + 1024].tolist(),
            ))  # fmt: skip

    def remove(self, ids: np.ndarray) -> bool:
        if len(ids):
            self.client.delete(self.collection, self.models.PointIdsList(points=[int(i) for i in ids]))
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        requests = [self.models.QueryRequest(query=q.tolist(), limit=k) for q in self._points(queries)]
        for row, response in enumerate(self.client.query_batch_points(self.collection, requests)):
            for col, point in enumerate(response.points):
                ids[row, col] = int(point.id)
                # Qdrant's EUCLID score is the distance: turn it into our -squared-distance similarity
                if self.bits is not None:  # the dot product of ±1 codes: −Hamming = (dot − bits) / 2
                    scores[row, col] = (point.score - self.bits) / 2
                else:
                    scores[row, col] = point.score if self.metric == "ip" else -(point.score**2)
        return scores, ids

    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def close(self) -> None:
        self.client.close()
