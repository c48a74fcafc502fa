"""``Gallery``: enrol identities once, then identify (1:N, open set) and verify (1:1) against them.

The gallery decides nothing about orientation itself: its :class:`~twinnet.compare.Comparator`
(the model's, or for precomputed vectors the one named by the gallery's metric) says how the
vector index searches it (:meth:`~twinnet.compare.Comparator.index_plan`) and which values are
better, best and matching (:attr:`~twinnet.compare.Comparator.orientation`). Templates are
side-``b`` embeddings (documents) and queries side-``a`` ones: for a plain twin both sides are the
same encoder.

**Several processes.** The SQLite store is the source of truth and keeps a change log (see
:mod:`twinnet.gallery.store`); the vector index is derived from it and records the change id it
reflects. Every identify and every write first checks, cheaply, whether another connection has
committed (``PRAGMA data_version``); if so the index replays the log from its change id (only the
templates added and removed since; a full rebuild only where the index cannot follow: an HNSW
index after a removal, an ``auto`` index changing kind, IVF lists outgrown, or a log pruned past
it). The FAISS cache file ``index.faiss`` is written atomically, stamped with the change id it
holds, and checked against the store before it is used.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from twinnet.codes.comparator import HammingDistance
from twinnet.compare import COMPARATORS, SCORE, Comparator, IndexPlan, Orientation, build_comparator
from twinnet.errors import ConfigError, DataError, NotFoundError
from twinnet.gallery.index import (
    AUTO_APPROX_THRESHOLD,
    CacheError,
    FaissIndex,
    QdrantIndex,
    faiss_index_class,
    fsync_directory,
    index_similarity,
    remove_orphan_temporaries,
    temporary_name,
)
from twinnet.gallery.store import TemplateStore, Written, content_hash
from twinnet.inference import point_normalizer
from twinnet.io import weights_fingerprint
from twinnet.model import AnyTwin, Side

GALLERY_FORMAT = "twinnet-gallery"
#: 2: the store has a change log and content hashes, and the index cache is stamped with a change
#: id. Version 1 galleries are upgraded when opened; a twinnet that reads only version 1 then
#: refuses the gallery (it would not log its writes' effect on the cache).
GALLERY_VERSION = 2

TEMPLATE_SIDE: Side = "b"
"""The side templates (documents) are embedded with."""
QUERY_SIDE: Side = "a"
"""The side queries are embedded with."""
#: How several inputs of one enrolment become templates: one each, or one for all (their mean).
Template = Literal["all", "mean"]

#: Comparators a gallery of precomputed vectors (no model) may be created with: both have no
#: learned parameters, so the name alone rebuilds them.
VECTOR_METRICS = ("cosine", "euclidean")
_INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")
_BACKENDS = ("faiss", "qdrant")


@dataclass
class Match:
    identity: str
    value: float
    """The comparator's native value: a distance (smaller = closer) or a score (larger = closer)."""
    same: bool | None
    """Whether ``value`` passes the threshold (None without a threshold)."""
    normalized: float | None = None
    """The cohort-normalised score the decision was made on, at an operating point fitted on them."""

    def to_dict(self, key: str) -> dict[str, Any]:
        out = {"identity": self.identity, key: self.value, "same": self.same}
        return out if self.normalized is None else {**out, "normalized_score": self.normalized}


@dataclass
class Identification:
    matches: list[Match]
    threshold: float | None
    orientation: Orientation
    operating_point: str | None = None
    """The model's operating point the threshold came from (None: an explicit threshold, or none)."""

    @property
    def identity(self) -> str | None:
        """The best match, or None ("unknown") when it does not pass the threshold."""
        if not self.matches or self.matches[0].same is False:
            return None
        return self.matches[0].identity

    def to_dict(self) -> dict[str, Any]:
        key = self.orientation.value_name
        return {
            "identity": self.identity,
            "known": self.identity is not None,
            "threshold": self.threshold,
            "operating_point": self.operating_point,
            "matches": [m.to_dict(key) for m in self.matches],
        }


@dataclass
class GalleryVerification:
    identity: str
    value: float
    threshold: float | None
    same: bool | None
    orientation: Orientation
    templates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    operating_point: str | None = None
    """The model's operating point the threshold came from (None: an explicit threshold, or none)."""

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, self.orientation.value_name: self.value, "threshold": self.threshold,
                "operating_point": self.operating_point, "same": self.same, "templates": self.templates,
                **self.extra}  # fmt: skip


@dataclass
class Enrolment:
    """What one enrolment did: templates added, and inputs whose content the identity already had."""

    identity: str
    added: int
    already: int
    template_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "added": self.added, "already_enrolled": self.already}


class Gallery:
    """A persistent gallery of identities: a directory with ``gallery.json``, the SQLite store
    (the source of truth) and a cached vector index (FAISS, or a Qdrant collection).

    The model that made the embeddings is part of a gallery's identity: opening it with another
    model (a different weight fingerprint) is refused. A gallery of precomputed vectors has no
    model; give ``dim`` and ``metric`` (``cosine`` or ``euclidean``) when creating it.

    **Concurrency.** One ``Gallery`` object is safe to share between threads. Several processes
    *on one machine* may open one gallery and read and write it at once (the CLI next to a running
    ``twinnet serve``, several ``gallery enroll`` runs): each sees the others' committed
    enrolments and removals at its next identify, without reopening, and SQLite serialises the
    writes. Not supported: a gallery on a network filesystem (NFS, SMB, most FUSE mounts) or
    shared between machines or containers without one kernel: SQLite's WAL mode needs shared
    memory and working locks, which twinnet cannot detect are missing (keep such galleries
    local, or use a Qdrant server for the vectors and one writer host). With ``backend="qdrant"``
    in embedded mode only one process may open the gallery (refused with a clear error); a Qdrant
    server (``qdrant_url``) serves several.
    """

    #: Log entries kept behind the newest cache file when the log is pruned: an index this far
    #: behind still catches up incrementally; one further behind rebuilds.
    LOG_KEEP = 10_000
    #: The log is pruned when it is longer than ``LOG_SLACK`` plus twice the templates.
    LOG_SLACK = 10_000

    def __init__(self, path: Path, info: dict[str, Any], model: AnyTwin | None) -> None:
        self.path = path
        self.info = info
        self.model = model
        self.dim = int(info["dim"])
        self.comparator: Comparator = model.comparator if model is not None else _named_comparator(info, path)
        #: templates fetched from the index per query and scored exactly (re-scored plans only)
        self.rescore_candidates = 100
        self.plan: IndexPlan
        # `create(codes=bits)`: the model's embeddings hashed into SimHash codes by the gallery
        hashing = _codes_comparator(info, path, self.comparator) if info.get("codes") else self.comparator
        if info.get("rescore"):
            # the codes only propose candidates; the float comparator scores them and decides, so
            # values and thresholds are in its scale
            self.plan = replace(hashing.index_plan(self.dim), rescore=True)
            self.comparator = _float_comparator(hashing, self.comparator, path)
            self.rescore_candidates = int(info["rescore"])
        else:
            self.comparator = hashing
            self.plan = hashing.index_plan(self.dim)
        self.orientation: Orientation = self.comparator.orientation
        self.store = TemplateStore(path / "templates.sqlite")  # creates or upgrades the schema
        if int(info["format_version"]) < GALLERY_VERSION:
            self.info = info = {**info, "format_version": GALLERY_VERSION}
            _write_info(path, info)
        self._lock = threading.RLock()
        self._seen = 0  # the store change id the in-memory index reflects
        self._data_version: int | None = None  # PRAGMA data_version when the index was last in step
        self._saved = -1  # the change id of the cache file this process last loaded or wrote
        self._status: dict[str, Any] = {"origin": None, "reason": None, "catch_ups": 0, "rebuilds": 0}
        self._index: FaissIndex | QdrantIndex = self._open_index()

    @property
    def metric(self) -> str:
        """How the index searches: ``ip`` (inner product) or ``l2``."""
        return self.plan.metric

    # -- creation and opening ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        model: AnyTwin | None = None,
        *,
        dim: int | None = None,
        metric: Literal["cosine", "euclidean"] | None = None,
        index: str = "auto",
        backend: Literal["faiss", "qdrant"] = "faiss",
        qdrant_url: str | None = None,
        exist_ok: bool = False,
        codes: int | None = None,
        codes_fit: Any = None,
        rescore: int = 0,
    ) -> Gallery:
        """A new, empty gallery at ``path``.

        ``codes``: index ``codes``-bit SimHash codes of the embeddings (Hamming distance, FAISS
        binary indexes, 16 bytes a template at 128 bits) instead of the float embeddings.
        ``codes_fit``: inputs (or, for a gallery of vectors, embeddings) whose mean embedding the
        hyperplanes pass through; left out they pass through the origin, and embeddings that sit
        in a narrow cone then get nearly the same code (``bench/hashing.py``: EER 0.060 uncentred,
        0.055 centred on its Omniglot model; 0.46 and 0.15 on a less trained one). For ITQ or learned codes, give a
        model whose comparator is ``hamming`` (:func:`twinnet.codes.with_codes`) and leave
        ``codes`` out.

        ``rescore`` (a gallery searched by codes): fetch that many candidates per query by
        Hamming distance and score them exactly in float from the stored templates, with the
        model's own comparator (``codes``) or the one its codes stand in for (a ``hamming`` model:
        ``rescore_with``), so values and thresholds are in that scale (and a float model's
        calibration applies); 0 (the default): values are Hamming distances and decisions need
        an explicit threshold."""
        path = Path(path)
        if (path / "gallery.json").exists():
            if exist_ok:
                return cls.open(path, model)
            raise DataError(f"gallery already exists: {path}")
        if index not in _INDEX_KINDS:
            raise DataError(f"index {index!r} is not one of auto, flat, hnsw, ivf")
        if backend not in _BACKENDS:
            raise DataError(f"backend {backend!r} is not one of faiss, qdrant")
        if model is not None:
            # written for people and for older readers; with a model, the model's comparator is used
            comparator = _registered_name(model)
            emb_dim = model.embedding_dim
            fingerprint = model.fingerprint or weights_fingerprint(model)
        else:
            if dim is None or metric not in VECTOR_METRICS:
                raise DataError("a gallery without a model needs dim and metric (cosine or euclidean)")
            comparator, emb_dim, fingerprint = metric, dim, None
        info = {
            "format": GALLERY_FORMAT, "format_version": GALLERY_VERSION, "dim": emb_dim, "comparator": comparator,
            "model_fingerprint": fingerprint, "index": index, "backend": backend, "qdrant_url": qdrant_url,
        }  # fmt: skip
        if codes is not None:
            code_info: dict[str, Any] = {"bits": codes, "method": "simhash", "seed": 0}
            if codes_fit is not None:
                code_info["centre"] = _mean_embedding(model, codes_fit, emb_dim)
            _check_codes(code_info, path / "gallery.json", emb_dim)
            info["codes"] = code_info
        elif codes_fit is not None:
            raise DataError("codes_fit centres the codes of a gallery created with codes: give codes too")
        if rescore:
            _check_rescore(rescore, path / "gallery.json")
            searched = model.comparator if model is not None else None
            if codes is None and (searched is None or searched.index_plan(emb_dim).metric != "hamming"):
                raise DataError("rescore re-scores the candidates of a gallery of codes: give codes, or a model "
                                "that compares codes (twinnet.codes.with_codes)")  # fmt: skip
            if codes is None and searched is not None:
                _float_comparator(searched, searched, path)  # refused now, not at the first open
            info["rescore"] = rescore
        path.mkdir(parents=True, exist_ok=True)
        _write_info(path, info)
        return cls(path, info, model)

    @classmethod
    def open(cls, path: str | Path, model: AnyTwin | None = None) -> Gallery:
        path = Path(path)
        info = _read_info(path)
        expected = info["model_fingerprint"]
        if model is not None:
            got = model.fingerprint or weights_fingerprint(model)
            if expected is None:
                raise DataError(f"gallery {path} holds precomputed vectors; open it without a model")
            if got != expected:
                raise DataError(
                    f"gallery {path} was built with model {expected[:12]}…, not this one ({got[:12]}…): "
                    "embeddings of different models are not comparable; re-enrol into a new gallery"
                )
        return cls(path, info, model)

    def close(self) -> None:
        self.flush()
        if isinstance(self._index, QdrantIndex):
            self._index.close()
        self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the index ----------------------------------------------------------------------------------

    @property
    def index_kind(self) -> str:
        """The FAISS index kind this gallery's size asks for (``auto``: exact below
        :data:`AUTO_APPROX_THRESHOLD` templates, IVF above)."""
        current = self._index.kind if hasattr(self, "_index") else None
        return self._wanted_kind(self.store.count()[1], current)

    def _wanted_kind(self, n_templates: int, current: str | None) -> str:
        kind = self.info["index"]
        if kind != "auto":
            return kind
        # hysteresis: a gallery hovering around the threshold does not rebuild back and forth
        threshold = AUTO_APPROX_THRESHOLD // 2 if current == "ivf" else AUTO_APPROX_THRESHOLD
        return "ivf" if n_templates >= threshold else "flat"

    def index_status(self) -> dict[str, Any]:
        """How the index got here: ``origin`` (``cache``: the cache file, checked and caught up;
        ``rebuilt``: from the store, with the ``reason``), catch-ups and rebuilds since, and the
        change id it reflects."""
        with self._lock:
            return {**self._status, "change_id": self._seen, "kind": self._index.kind, "templates": len(self._index)}

    def _open_index(self) -> FaissIndex | QdrantIndex:
        plan = self.plan
        if self.info["backend"] == "qdrant":
            url = self.info.get("qdrant_url")
            try:
                index = QdrantIndex(plan.dim, plan.metric, path=None if url else str(self.path / "qdrant"), url=url)
            except RuntimeError as err:
                if "already accessed" not in str(err):
                    raise
                self.store.close()
                raise DataError(
                    f"gallery {self.path}: its embedded Qdrant store is open in another process, and embedded "
                    "Qdrant allows one process at a time; close the other one, or keep the vectors in a Qdrant "
                    "server (--qdrant-url) to share the gallery between processes"
                ) from None
            self._index = index
            self._sync_qdrant(check_count=True)
            return index
        data_version = self.store.data_version()  # before the snapshot: a later commit shows as a change
        cache = self.path / "index.faiss"
        with self.store.snapshot() as store:
            n_templates = store.count()[1]
            try:
                header = FaissIndex.read_header(cache)
                kind = self._wanted_kind(n_templates, header.get("kind"))
                loaded, claimed = faiss_index_class(plan.metric).load(cache, plan.dim, plan.metric, kind)
                changes = self._verify_cache(loaded, claimed, store)
            except CacheError as err:
                faiss_index = self._build(store, self._wanted_kind(n_templates, None), f"cache not used: {err}")
            else:
                self._saved = claimed
                self._status.update(origin="cache", reason=f"cache at change {claimed}, {len(changes)} to replay")
                self._seen = claimed
                faiss_index = self._advance(loaded, changes.added_ids, changes.added_vectors, changes.removed_ids,
                                            changes.head, store)  # fmt: skip
        self._data_version = data_version
        return faiss_index

    def _verify_cache(self, index: FaissIndex, claimed: int, store: TemplateStore) -> Any:
        """Check a cache file's claim against the store (inside one snapshot): it must hold exactly
        the templates the store had at its change id, with their vectors; then return the changes
        to replay. :class:`CacheError` when the claim is false or cannot be checked."""
        head = store.head()
        if claimed > head:
            raise CacheError(f"it claims change {claimed}, but the database is at change {head}")
        if claimed < store.pruned_through():
            raise CacheError(f"its change {claimed} is older than the change log reaches")
        changes = store.changes_since(claimed, self.dim)
        now = store.template_ids()
        expected = np.setdiff1d(np.union1d(now, changes.all_removed), changes.all_added)
        held = index.ids()
        if not np.array_equal(held, expected):
            raise CacheError(
                f"it claims change {claimed} but holds {len(held)} templates where the database had "
                f"{len(expected)} ({len(np.setxor1d(held, expected))} differ)"
            )
        # a few vectors, compared with the store's: catches a file whose ids agree but contents do not
        still_there = np.intersect1d(held, now)
        if len(still_there):
            sample = np.random.default_rng(claimed).choice(still_there, min(8, len(still_there)), replace=False)
            stored = store.vectors_of(sample, self.dim)
            truth = self.plan.transform(np.stack([stored[int(i)] for i in sample]))
            if not np.allclose(index.reconstruct(sample), truth, rtol=1e-4, atol=1e-5):
                raise CacheError(f"its vectors differ from the database's (change {claimed})")
        return changes

    def _build(self, store: TemplateStore, kind: str, reason: str) -> FaissIndex:
        """A fresh index of every template, with the change id of the same snapshot (call inside
        :meth:`TemplateStore.snapshot`)."""
        index = faiss_index_class(self.plan.metric)(self.plan.dim, self.plan.metric, kind)
        head = store.head()
        ids, vectors = store.all_templates(self.dim)
        if len(ids):
            index.add(ids, self.plan.transform(vectors))
        self._seen = head
        self._status["rebuilds"] += self._status["origin"] is not None
        self._status.update(origin="rebuilt", reason=reason)
        return index

    def _advance(
        self, index: FaissIndex, added_ids: np.ndarray, added: np.ndarray, removed_ids: np.ndarray, head: int,
        store: TemplateStore | None,
    ) -> FaissIndex:  # fmt: skip
        """Apply a change (embeddings ``added`` under ``added_ids``; ``removed_ids`` gone) that takes
        the index to change id ``head``; rebuild instead where the index cannot follow. ``store``:
        the snapshot the change came from (None: take a new one for a rebuild)."""
        n_after = len(index) + len(added_ids) - len(removed_ids)
        kind = self._wanted_kind(n_after, index.kind)
        reason = None
        try:
            if kind != index.kind:
                reason = f"{n_after} templates: {kind} index instead of {index.kind}"
            elif len(removed_ids) and not index.remove(removed_ids):
                reason = f"{index.kind} index cannot remove templates"
            else:
                if len(added_ids):
                    index.add(added_ids, self.plan.transform(added))
                if index.needs_retraining():
                    reason = f"IVF lists trained for {index.trained_for} templates, now {len(index)}"
        except Exception as err:  # half-applied: replaying onto it would duplicate; start again from the store
            reason = f"applying changes failed ({type(err).__name__}: {err})"
        if reason is not None:
            if store is not None:
                return self._build(store, kind, reason)
            with self.store.snapshot() as snapshot:
                return self._build(snapshot, kind, reason)
        self._seen = head
        return index

    def _sync(self) -> None:
        """Bring the index in step with the database if another connection (this process or
        another) committed since it was last in step. Costs one ``PRAGMA data_version`` when
        nothing changed. Call with ``self._lock`` held."""
        data_version = self.store.data_version()
        if data_version == self._data_version:
            return
        if self.store.head() != self._seen:  # else: a commit that changed no template (metadata)
            if isinstance(self._index, QdrantIndex):
                self._sync_qdrant()
            else:
                self._catch_up()
        self._data_version = data_version

    def _catch_up(self) -> None:
        """Replay the change log from the index's change id (FAISS; ``self._lock`` held)."""
        assert isinstance(self._index, FaissIndex)
        with self.store.snapshot() as store:
            if self._seen < store.pruned_through():
                self._index = self._build(store, self._index.kind, f"change log pruned past change {self._seen}")
                return
            changes = store.changes_since(self._seen, self.dim)
            self._status["catch_ups"] += 1
            self._index = self._advance(self._index, changes.added_ids, changes.added_vectors, changes.removed_ids,
                                        changes.head, store)  # fmt: skip

    def _sync_qdrant(self, check_count: bool = False) -> None:
        """Qdrant: the collection is shared by every process using it, so it is brought up to date
        under the database's write lock (no commit and no other process's update meanwhile), and
        its state point records the change id it then holds."""
        index = self._index
        assert isinstance(index, QdrantIndex)
        with self.store.exclusive() as store:
            head = store.head()
            applied = index.applied()
            reason = None
            if applied is None:
                reason = "the collection records no change id"
            elif applied > head:
                reason = f"the collection claims change {applied}, the database is at {head}"
            elif applied < store.pruned_through():
                reason = f"the collection's change {applied} is older than the change log reaches"
            elif applied < head:
                changes = store.changes_since(applied, self.dim)
                index.remove(changes.removed_ids)
                if len(changes.added_ids):
                    index.add(changes.added_ids, self.plan.transform(changes.added_vectors))
                index.set_applied(head)
                self._status["catch_ups"] += 1
            if reason is None and check_count and len(index) != store.count()[1]:
                reason = f"the collection holds {len(index)} points, the database {store.count()[1]} templates"
            if reason is not None:
                index.reset()
                ids, vectors = store.all_templates(self.dim)
                if len(ids):
                    index.add(ids, self.plan.transform(vectors))
                index.set_applied(head)
                self._status["rebuilds"] += self._status["origin"] is not None
                self._status.update(origin="rebuilt", reason=reason)
            elif self._status["origin"] is None:
                self._status.update(origin="cache", reason=f"collection at change {applied}")
            self._seen = head

    def _after_write(self, written: Written, added: np.ndarray) -> None:
        """Bring the index in step after this connection's write (``self._lock`` held)."""
        if isinstance(self._index, QdrantIndex):
            if written.after != written.before:
                self._sync_qdrant()
            return
        if written.before != self._seen:
            self._catch_up()  # others committed before our write: the log has theirs and ours
            return
        # only our own change since the index was in step: apply it from memory
        self._index = self._advance(self._index, np.asarray(written.added, dtype=np.int64), added,
                                    np.asarray(written.removed, dtype=np.int64), written.after, None)  # fmt: skip

    def flush(self) -> None:
        """Save the FAISS index cache, stamped with the change id it holds (derived data: a stale
        cache is caught up on open, a wrong or unreadable one rebuilt)."""
        with self._lock:
            if not isinstance(self._index, FaissIndex):
                return
            self._sync()
            if self._seen == self._saved:
                return
            path = self.path / "index.faiss"
            try:
                header = FaissIndex.read_header(path)
                claimed = header.get("change_id")
                # another process saved a newer state (one the database has reached: a file claiming
                # a future change is a lie, and is replaced)
                if isinstance(claimed, int) and self._seen < claimed <= self.store.head():
                    return
            except CacheError:
                pass
            remove_orphan_temporaries(self.path)
            self._index.save(path, self._seen)
            self._saved = self._seen
            self._prune_log()

    def _prune_log(self) -> None:
        """Bound the change log: when it is much longer than the gallery, drop all but the last
        :attr:`LOG_KEEP` changes before the cache just written (an index further behind rebuilds)."""
        floor = self.store.pruned_through()
        if self._seen - floor > 2 * len(self._index) + self.LOG_SLACK and self._seen - self.LOG_KEEP > floor:
            self.store.prune_log(self._seen - self.LOG_KEEP)

    # -- embedding ----------------------------------------------------------------------------------

    def embed(
        self, inputs: Sequence[Any] | np.ndarray | torch.Tensor, precomputed: bool | None = None,
        side: Side = QUERY_SIDE,
    ) -> np.ndarray:  # fmt: skip
        """Embeddings of ``inputs`` through the model's ``side`` (templates: :data:`TEMPLATE_SIDE`,
        queries: :data:`QUERY_SIDE`), or taken as they are when ``precomputed`` (``None``:
        precomputed if the gallery has no model, or if ``inputs`` is a float ``(n, dim)`` array and
        the model does not itself take ``dim``-vectors on that side)."""
        model = self.model
        if precomputed is None:
            precomputed = model is None or (
                isinstance(inputs, np.ndarray) and inputs.ndim == 2 and inputs.shape[1] == self.dim
                and inputs.dtype != np.uint8 and not self._model_takes_vectors_of_dim(side)
            )  # fmt: skip
        if precomputed or model is None:
            array = np.asarray(inputs, dtype=np.float32)
            if array.ndim != 2 or array.shape[1] != self.dim:
                raise DataError(f"this gallery holds {self.dim}-d vectors; got shape {array.shape}")
            return np.ascontiguousarray(array)
        return _model_embeddings(model, inputs, side)

    def _model_takes_vectors_of_dim(self, side: Side) -> bool:
        if self.model is None:
            return False
        try:
            spec = self.model.input_spec(side)
        except DataError:  # a hand-built model: nothing says what it takes
            return False
        return spec.kind == "vector" and spec.features == self.dim

    # -- writes -------------------------------------------------------------------------------------

    def enroll(
        self, identity: str, inputs: Sequence[Any] | np.ndarray | torch.Tensor, metadata: dict[str, Any] | None = None,
        *, replace: bool = False, sources: list[str] | None = None, precomputed: bool | None = None,
        hashes: Sequence[str | None] | None = None, template: Template = "all",
    ) -> int:  # fmt: skip
        """Add templates for ``identity`` (created if new; ``replace`` drops its old templates).

        ``template``: ``all`` (one template per input) or ``mean`` (one template, the
        :meth:`mean_template` of the inputs' embeddings: several clips or impressions averaged
        into one voice print). ``hashes``: a content hash per input
        (:func:`twinnet.gallery.store.content_hash` of the input's bytes); an input whose hash the
        identity already has is not enrolled again (a mean template: the same set of inputs).
        When this returns, the enrolment is committed to disk. Returns the number of templates added.
        """
        return self.enroll_detailed(identity, inputs, metadata, replace=replace, sources=sources,
                                    precomputed=precomputed, hashes=hashes, template=template).added  # fmt: skip

    def mean_template(self, vectors: np.ndarray) -> np.ndarray:
        """One template for several embeddings of an identity: their mean, made unit length again
        where the model normalises its embeddings (its comparator expects them so)."""
        mean = np.asarray(vectors, dtype=np.float32).mean(0)
        if self.model is not None and self.model.normalize:
            mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return mean.astype(np.float32)

    def enroll_detailed(
        self, identity: str, inputs: Sequence[Any] | np.ndarray | torch.Tensor, metadata: dict[str, Any] | None = None,
        *, replace: bool = False, sources: Sequence[str] | None = None, precomputed: bool | None = None,
        hashes: Sequence[str | None] | None = None, template: Template = "all",
    ) -> Enrolment:  # fmt: skip
        """:meth:`enroll`, saying also how many inputs were already enrolled (same content hash).
        Inputs already enrolled are not embedded again."""
        if not isinstance(identity, str) or not identity.strip():
            raise DataError("identity must be a non-empty string")
        if template not in ("all", "mean"):
            raise DataError(f"template must be 'all' or 'mean', not {template!r}")
        n = len(inputs)
        if n == 0:
            raise DataError(f"enrolling {identity!r}: no inputs")
        for name, values in (("sources", sources), ("hashes", hashes)):
            if values is not None and len(values) != n:
                raise DataError(f"enrolling {identity!r}: {len(values)} {name} for {n} inputs")
        if template == "mean":
            return self._enroll_mean(identity, inputs, metadata, replace, sources, precomputed, hashes)
        keep = list(range(n))
        if hashes is not None and not replace:
            known = self.store.known_hashes(identity, hashes)
            keep = [i for i in keep if hashes[i] is None or hashes[i] not in known]
        if not keep and not metadata:
            return Enrolment(identity, 0, n)  # nothing to write: every input is already there
        vectors = self.embed(_take(inputs, keep), precomputed, side=TEMPLATE_SIDE) if keep else np.zeros((0, self.dim))
        with self._lock:
            written = self.store.add(identity, vectors, metadata, replace,
                                     [sources[i] for i in keep] if sources else None,
                                     [hashes[i] for i in keep] if hashes is not None else None)  # fmt: skip
            skipped = set(written.skipped)  # raced: another writer enrolled the same content meanwhile
            added = vectors[[i for i in range(len(vectors)) if i not in skipped]]
            self._after_write(written, added)
        return Enrolment(identity, len(written.added), n - len(written.added), written.added)

    def _enroll_mean(
        self, identity: str, inputs: Any, metadata: dict[str, Any] | None, replace: bool,
        sources: Sequence[str] | None, precomputed: bool | None, hashes: Sequence[str | None] | None,
    ) -> Enrolment:  # fmt: skip
        """One template, the mean of the inputs' embeddings; its content hash is that of the set
        of the inputs' hashes, so enrolling the same inputs again (in any order) adds nothing."""
        n = len(inputs)
        combined = None
        if hashes is not None and all(h is not None for h in hashes):
            combined = content_hash(("mean:" + ",".join(sorted(str(h) for h in hashes))).encode())
        if combined is not None and not replace and self.store.known_hashes(identity, [combined]):
            if not metadata:
                return Enrolment(identity, 0, n)
            vector, source, stored_hash = np.zeros((0, self.dim), np.float32), None, None  # metadata merges only
        else:
            vector = self.mean_template(self.embed(inputs, precomputed, side=TEMPLATE_SIDE))[None]
            source = [(f"mean of {n}: " + ", ".join(sources))[:1000]] if sources else None
            stored_hash = [combined] if combined is not None else None
        with self._lock:
            written = self.store.add(identity, vector, metadata, replace, source, stored_hash)
            skipped = set(written.skipped)  # raced: another writer enrolled the same mean meanwhile
            self._after_write(written, vector[[i for i in range(len(vector)) if i not in skipped]])
        return Enrolment(identity, len(written.added), n if not written.added else 0, written.added)

    def enroll_many(self, identities: Sequence[str], vectors: np.ndarray) -> int:
        """Bulk enrolment of precomputed vectors, one template per row, in one transaction (no
        content hashes: enrolling a vector twice gives two templates)."""
        vectors = self.embed(np.asarray(vectors, dtype=np.float32), precomputed=True)
        if len(identities) != len(vectors):
            raise DataError(f"{len(identities)} identities for {len(vectors)} vectors")
        with self._lock:
            written = self.store.add_many(list(identities), vectors)
            self._after_write(written, vectors)
        return len(written.added)

    def remove(self, identity: str) -> int:
        """Remove an identity and its templates; raises NotFoundError if unknown."""
        with self._lock:
            try:
                written = self.store.remove(identity)
            except KeyError:
                raise NotFoundError(f"unknown identity {identity!r}") from None
            self._after_write(written, np.zeros((0, self.dim), np.float32))
        return len(written.removed)

    # -- reads --------------------------------------------------------------------------------------

    def list(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        return self.store.list(offset, limit)

    def get(self, identity: str) -> dict[str, Any]:
        found = self.store.identity(identity)
        if found is None:
            raise NotFoundError(f"unknown identity {identity!r}")
        return found

    def __contains__(self, identity: str) -> bool:
        return self.store.identity(identity) is not None

    def count(self) -> dict[str, int]:
        identities, templates = self.store.count()
        return {"identities": identities, "templates": templates}

    # -- scoring ------------------------------------------------------------------------------------

    @property
    def _calibration(self) -> Any:
        """The model's calibration, where it is in this gallery's scale (not for a gallery of codes
        of a float model: its thresholds are distances of another comparator)."""
        if self.model is None or self.comparator is not self.model.comparator:
            return None
        return getattr(self.model, "calibration", None)

    def default_threshold(self, operating_point: str | None = None) -> float | None:
        """The threshold of the model's ``operating_point`` (None: its default); None when the model
        has no calibration. An unknown name is a ConfigError listing the known ones."""
        calibration = self._calibration
        return None if calibration is None else calibration.threshold(operating_point)

    def _operating_point_name(self, operating_point: str | None) -> str | None:
        calibration = self._calibration
        if calibration is None:
            if operating_point is not None:
                raise ConfigError(f"operating point {operating_point!r}: the model has no calibration; "
                                  "calibrate it first (twinnet calibrate)")  # fmt: skip
            return None
        return calibration.resolve(operating_point)

    def _threshold(
        self, threshold: float | None, operating_point: str | None = None
    ) -> tuple[float | None, str | None]:
        """The threshold to decide with and the operating point it came from: the given threshold
        (no operating point), else the model's ``operating_point`` (None: its default); a non-finite
        one is refused (NaN would make every decision False and ±inf every one the same, silently)."""
        given = threshold is not None
        name = None
        if not given:
            name = self._operating_point_name(operating_point)
            threshold = None if name is None else self.default_threshold(name)
        if threshold is None:
            return None, None
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
            raise DataError(f"threshold must be a number, not {threshold!r}")
        value = float(threshold)
        if not math.isfinite(value):
            where = "threshold" if given else "the model's calibrated threshold"
            raise DataError(f"{where} must be a finite number, not {value}")
        return value, name

    def _decide(self, value: float, threshold: float | None) -> bool | None:
        return None if threshold is None else bool(self.orientation.matches(value, threshold))

    def native_values(self, queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """The comparator's native values of every query against every template (embeddings),
        computed the way the index plan says: exactly by the comparator for re-scored plans, else
        from the index metric on transformed vectors (what a flat index would return)."""
        plan = self.plan
        if plan.rescore:
            return self.comparator.score_matrix(queries, templates)
        similarity = index_similarity(plan.metric, plan.transform(queries), plan.transform(templates))
        return np.asarray(plan.to_native(similarity))

    def identify_batch(
        self, inputs: Sequence[Any] | np.ndarray | torch.Tensor, k: int = 5, threshold: float | None = None,
        candidates: int | None = None, precomputed: bool | None = None, operating_point: str | None = None,
    ) -> builtins.list[Identification]:  # fmt: skip
        """Top-``k`` identities per query (best template per identity) with open-set rejection.

        The index is first brought in step with the database (other processes' enrolments count).
        Re-scored plans fetch ``candidates`` templates per query from the index (None: the
        gallery's :attr:`rescore_candidates`) and score them exactly with the comparator. Decisions
        are at ``threshold`` (native scale), else at the model's ``operating_point`` (None: its default)."""
        if candidates is None:
            candidates = self.rescore_candidates
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DataError(f"k must be a positive integer, not {k!r}")
        threshold, point = self._threshold(threshold, operating_point)
        # a point fitted on cohort-normalised scores ranks and decides on them (twinnet.inference)
        normalizer = None if point is None or self.model is None else point_normalizer(self.model, point)
        queries = self.embed(inputs, precomputed, side=QUERY_SIDE)
        plan, orientation = self.plan, self.orientation
        with self._lock:
            self._sync()
            n_templates = len(self._index)  # the index knows its size; COUNT(*) in SQLite costs ~10 ms at 1M
            # several templates per identity: fetch more than k so k distinct identities usually remain
            fetch = min(max(4 * k, candidates if plan.rescore else 4 * k), max(1, n_templates))
            sims, ids = self._index.search(plan.transform(queries), fetch)
        if plan.rescore or normalizer:
            # the candidates' templates and owners in one query, as one matrix (rows by sorted
            # rowid): thousands of candidates a query (a re-scored gallery of codes) cost tens of
            # ms more as two queries and a dict of one array per row
            stored_ids, stored_owners, stored = self.store.templates_matrix(ids, self.dim)
            owners = dict(zip(stored_ids.tolist(), stored_owners))
        else:
            owners = self.store.identities_of(ids)
            stored_ids, stored = np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        results = []
        for q in range(len(queries)):
            valid = ids[q] >= 0
            row_ids = ids[q][valid]
            templates = stored[:0]
            if plan.rescore or normalizer:  # only candidates still in the store (one may be removed since the search)
                row_ids = row_ids[np.isin(row_ids, stored_ids)]
                templates = stored[np.searchsorted(stored_ids, row_ids)]
            if plan.rescore and len(row_ids):
                native = self.comparator.score_matrix(queries[q : q + 1], templates)[0]
            else:
                native = np.asarray(plan.to_native(sims[q][valid]))
            if normalizer is not None:
                if not plan.rescore:
                    native = native[np.isin(ids[q][valid], row_ids)]
                found = templates if len(row_ids) else None
                matches = self._normalized_matches(normalizer, queries[q], row_ids, native, found, owners, k,
                                                   threshold)  # fmt: skip
                results.append(Identification(matches, threshold, orientation, point))
                continue
            names, best = best_per_identity(row_ids, native, owners, orientation)
            order = orientation.rank(best)[:k]
            matches = [Match(names[i], float(best[i]), self._decide(best[i], threshold)) for i in order]
            results.append(Identification(matches, threshold, orientation, point))
        return results

    @staticmethod
    def _normalized_matches(
        normalizer: Any, query: np.ndarray, row_ids: np.ndarray, native: np.ndarray, templates: np.ndarray | None,
        owners: dict[int, str], k: int, threshold: float | None,
    ) -> builtins.list[Match]:  # fmt: skip
        """Top-``k`` identities by their best cohort-normalised score (a similarity), decided on it."""
        if templates is None or not len(row_ids):
            return []
        normalized = normalizer.normalize_matrix(native[None], query[None], templates)[0]
        best: dict[str, tuple[float, float]] = {}
        for rowid, value, norm in zip(row_ids.tolist(), native.tolist(), normalized.tolist()):
            identity = owners.get(int(rowid))
            if identity is not None and (identity not in best or SCORE.better(norm, best[identity][1])):
                best[identity] = (value, norm)
        names = list(best)
        ranked = [names[i] for i in SCORE.rank(np.array([best[n][1] for n in names], np.float64))[:k]]
        return [Match(n, best[n][0], None if threshold is None else bool(SCORE.matches(best[n][1], threshold)),
                      best[n][1]) for n in ranked]  # fmt: skip

    def identify(
        self, x: Any, k: int = 5, threshold: float | None = None, operating_point: str | None = None
    ) -> Identification:
        return self.identify_batch(_as_batch(x), k, threshold, operating_point=operating_point)[0]

    def verify_batch(
        self, inputs: Any, identities: Sequence[str], threshold: float | None = None, precomputed: bool | None = None,
        aggregate: Literal["best", "mean"] = "best", operating_point: str | None = None,
    ) -> builtins.list[GalleryVerification]:  # fmt: skip
        """Score each input against its claimed identity's templates: the best template counts, or
        with ``aggregate="mean"`` the mean over them."""
        if aggregate not in ("best", "mean"):
            raise DataError(f"aggregate must be 'best' or 'mean', not {aggregate!r}")
        threshold, point = self._threshold(threshold, operating_point)
        normalizer = None if point is None or self.model is None else point_normalizer(self.model, point)
        queries = self.embed(inputs, precomputed, side=QUERY_SIDE)
        if len(identities) != len(queries):
            raise DataError(f"{len(identities)} identities for {len(queries)} inputs")
        out = []
        for q, identity in zip(queries, identities):
            templates = self.store.templates_of(identity, self.dim)
            if len(templates) == 0:
                raise NotFoundError(f"unknown identity {identity!r}")
            # a copy: the store's arrays are read-only views of SQLite blobs, which torch warns about
            values = self.native_values(q[None], np.array(templates, dtype=np.float32))[0]
            value = float(values.mean() if aggregate == "mean" else self.orientation.best(values))
            if normalizer is not None:  # decided on the cohort-normalised score (a similarity)
                norm = normalizer.normalize_matrix(values[None], q[None], np.array(templates, dtype=np.float32))[0]
                decided = float(norm.mean() if aggregate == "mean" else SCORE.best(norm))
                same = None if threshold is None else bool(SCORE.matches(decided, threshold))
                extra = {"normalized_score": decided, "normalization": normalizer.scale}
                out.append(GalleryVerification(identity, value, threshold, same, self.orientation, len(templates),
                                               extra, operating_point=point))  # fmt: skip
                continue
            out.append(GalleryVerification(identity, value, threshold, self._decide(value, threshold),
                                           self.orientation, len(templates), operating_point=point))  # fmt: skip
        return out

    def verify(
        self, x: Any, identity: str, threshold: float | None = None, operating_point: str | None = None
    ) -> GalleryVerification:
        return self.verify_batch(_as_batch(x), [identity], threshold, operating_point=operating_point)[0]


def _write_info(path: Path, info: dict[str, Any]) -> None:
    """Write ``gallery.json`` atomically and durably (temporary file, fsync, rename)."""
    tmp = temporary_name(path / "gallery.json")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(info, indent=2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / "gallery.json")
    fsync_directory(path)


def _read_info(path: Path) -> dict[str, Any]:
    """``gallery.json``, checked field by field: a damaged file is named as such, rather than
    surfacing later as a misleading error (a missing fingerprint read as "precomputed vectors")."""
    file = path / "gallery.json"
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise DataError(f"gallery not found: {path} (create it with `twinnet gallery create`)") from None
    except OSError as err:
        raise DataError(f"{file}: cannot read it ({err.strerror or err})") from None

    def corrupted(why: str) -> DataError:
        return DataError(f"{file}: corrupted gallery file: {why}")

    try:
        info = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise corrupted(f"not valid JSON ({err})") from None
    if not isinstance(info, dict):
        raise corrupted(f"expected a JSON object, found {type(info).__name__}")
    if info.get("format") != GALLERY_FORMAT:
        raise corrupted(f"'format' is {info.get('format')!r}, not {GALLERY_FORMAT!r}")
    version = info.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise corrupted(f"'format_version' is {version!r}, not a positive integer")
    if version > GALLERY_VERSION:
        raise DataError(
            f"{path}: not a gallery this twinnet can read ({GALLERY_FORMAT} v{version}; this twinnet reads up to "
            f"v{GALLERY_VERSION}): upgrade twinnet"
        )
    dim = info.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise corrupted(f"'dim' is {dim!r}, not a positive integer")
    if not isinstance(info.get("comparator"), str):
        raise corrupted(f"'comparator' is {info.get('comparator')!r}, not a name")
    if "model_fingerprint" not in info:
        raise corrupted("'model_fingerprint' is missing")
    if info["model_fingerprint"] is not None and not isinstance(info["model_fingerprint"], str):
        raise corrupted(f"'model_fingerprint' is {info['model_fingerprint']!r}, not a string or null")
    if info.get("index") not in _INDEX_KINDS:
        raise corrupted(f"'index' is {info.get('index')!r}, not one of {', '.join(_INDEX_KINDS)}")
    if info.get("backend") not in _BACKENDS:
        raise corrupted(f"'backend' is {info.get('backend')!r}, not one of {', '.join(_BACKENDS)}")
    if info.get("qdrant_url") is not None and not isinstance(info["qdrant_url"], str):
        raise corrupted(f"'qdrant_url' is {info['qdrant_url']!r}, not a string or null")
    if info.get("codes") is not None:
        _check_codes(info["codes"], file, info["dim"])
    if info.get("rescore") is not None:
        _check_rescore(info["rescore"], file)
    return info


def _check_rescore(rescore: Any, file: Path) -> None:
    if isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 0:
        raise DataError(f"{file}: 'rescore' is {rescore!r}, not a number of candidates (0: off)")


def _float_comparator(hashing: Comparator, over: Comparator, path: Path) -> Comparator:
    """The float comparator that re-scores a code gallery's candidates: the model's own when the
    gallery hashes its embeddings, else the one the model's codes say they stand in for."""
    if hashing is not over:
        return over
    name = hashing.rescore_with
    if name is None or name not in COMPARATORS:
        raise DataError(f"gallery {path}: the model's codes do not name the float comparator they stand in for "
                        "(rescore_with); make them with twinnet.codes.with_codes, or leave rescore out")  # fmt: skip
    return COMPARATORS.build(name)


_CODES_KEYS = {"bits", "method", "seed", "centre"}


def _check_codes(codes: Any, file: Path, dim: Any) -> None:
    bits = codes.get("bits") if isinstance(codes, dict) else None
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 8 or bits % 8:
        raise DataError(f"{file}: 'codes.bits' is {bits!r}, not a positive multiple of 8")
    assert isinstance(codes, dict)
    if codes.get("method") != "simhash" or not isinstance(codes.get("seed"), int) or set(codes) - _CODES_KEYS:
        raise DataError(f"{file}: 'codes' must be {{bits, method: simhash, seed[, centre]}}, not {codes!r}")
    centre = codes.get("centre")
    if centre is not None and (
        not isinstance(centre, list) or len(centre) != dim
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in centre)
    ):  # fmt: skip
        raise DataError(f"{file}: 'codes.centre' must be {dim} finite numbers (the mean embedding)")


def _model_embeddings(model: AnyTwin, inputs: Any, side: Side) -> np.ndarray:
    """``inputs`` (files, texts, arrays, tensors) embedded through the model's ``side``."""
    from twinnet.inference import embed

    batch = torch.as_tensor(inputs).float() if isinstance(inputs, np.ndarray) else inputs
    return embed(model, batch, side=side).numpy().astype(np.float32)


def _mean_embedding(model: AnyTwin | None, inputs: Any, dim: int) -> list[float]:
    """The mean template-side embedding of ``inputs`` (embeddings themselves without a model)."""
    if model is None or (isinstance(inputs, np.ndarray) and inputs.ndim == 2 and inputs.shape[1] == dim):
        vectors = np.asarray(inputs, dtype=np.float32)
    else:
        vectors = _model_embeddings(model, inputs, TEMPLATE_SIDE)
    if vectors.ndim != 2 or vectors.shape[1] != dim or not len(vectors) or not np.isfinite(vectors).all():
        raise DataError(f"codes_fit: expected finite embeddings of shape (n, {dim}), got {vectors.shape}")
    return [float(v) for v in vectors.mean(0)]


def _codes_comparator(info: dict[str, Any], path: Path, over: Comparator) -> HammingDistance:
    """The SimHash comparator of a gallery created with ``codes`` (deterministic from its seed,
    through the centre it was created with)."""
    if over.index_plan(int(info["dim"])).metric == "hamming":
        raise DataError(f"gallery {path}: the model already compares binary codes; create the gallery without codes")
    codes = info["codes"]
    comparator = HammingDistance(int(info["dim"]), codes["bits"], "simhash", codes["seed"]).eval()
    if codes.get("centre") is not None:
        assert comparator.centre is not None
        comparator.centre.copy_(torch.tensor(codes["centre"], dtype=torch.float32))
    return comparator


def _take(inputs: Any, keep: builtins.list[int]) -> Any:
    """The inputs at positions ``keep`` (a list, array or tensor, as given)."""
    if len(keep) == len(inputs):
        return inputs
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        return inputs[keep]
    return [inputs[i] for i in keep]


def _named_comparator(info: dict[str, Any], path: Path) -> Comparator:
    """The comparator of a gallery opened without a model: the one its ``comparator`` names."""
    name = info.get("comparator")
    if not isinstance(name, str) or name not in COMPARATORS:
        raise DataError(f"{path}/gallery.json: unknown comparator {name!r}")
    comparator = build_comparator(name, {}, int(info["dim"]))
    if comparator.has_weights:
        # a learned comparator rebuilt from its name has untrained weights: its values would be wrong
        raise DataError(f"gallery {path} compares with the learned comparator {name!r}: open it with its model")
    return comparator


def _registered_name(model: AnyTwin) -> str:
    """The registry name of the model's comparator (what ``gallery.json`` records)."""
    if model.config is not None:
        return model.config.comparator.name
    for name, factory in COMPARATORS.items():
        if factory is type(model.comparator):
            return name
    return type(model.comparator).__name__


def best_per_identity(
    row_ids: np.ndarray, values: np.ndarray, owners: dict[int, str], orientation: Orientation
) -> tuple[builtins.list[str], np.ndarray]:
    """Each identity's best value among its candidate templates (``orientation`` says which is
    best), identities in order of first appearance among ``row_ids``; rows whose identity is gone
    (removed since the search) are skipped."""
    names: builtins.list[str] = []
    codes: dict[str, int] = {}
    per_row = np.empty(len(row_ids), np.int64)
    for i, rowid in enumerate(row_ids.tolist()):
        identity = owners.get(rowid)
        if identity is None:
            per_row[i] = -1
            continue
        code = codes.get(identity)
        if code is None:
            code = codes[identity] = len(names)
            names.append(identity)
        per_row[i] = code
    kept = per_row >= 0
    per_row, values = per_row[kept], np.asarray(values, dtype=np.float64)[kept]
    ranked = orientation.rank(values)  # stable: the first of equal values wins, as a scan would keep
    _, first = np.unique(per_row[ranked], return_index=True)  # codes 0..n-1, each one's best row
    return names, values[ranked[first]]


def _as_batch(x: Any) -> Any:
    if isinstance(x, (str, Path)):
        return [x]
    if isinstance(x, np.ndarray) and x.ndim == 1:
        return x[None]
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0)
    return [x]
