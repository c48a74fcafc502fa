"""``Gallery``: enrol identities once, then identify (1:N, open set) and verify (1:1) against them.

The gallery decides nothing about orientation itself: its :class:`~twinnet.compare.Comparator`
(the model's, or for precomputed vectors the one named by the gallery's metric) says how the
vector index searches it (:meth:`~twinnet.compare.Comparator.index_plan`) and which values are
better, best and matching (:attr:`~twinnet.compare.Comparator.orientation`). Templates are
side-``b`` embeddings (documents) and queries side-``a`` ones: for a plain twin both sides are the
same encoder.
"""

from __future__ import annotations

import builtins
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from twinnet.compare import COMPARATORS, Comparator, IndexPlan, Orientation, build_comparator
from twinnet.errors import DataError, NotFoundError
from twinnet.gallery.index import AUTO_APPROX_THRESHOLD, FaissIndex, QdrantIndex, index_similarity
from twinnet.gallery.store import TemplateStore
from twinnet.io import weights_fingerprint
from twinnet.model import AnyTwin, Side

GALLERY_FORMAT = "twinnet-gallery"
GALLERY_VERSION = 1

TEMPLATE_SIDE: Side = "b"
"""The side templates (documents) are embedded with."""
QUERY_SIDE: Side = "a"
"""The side queries are embedded with."""

#: Comparators a gallery of precomputed vectors (no model) may be created with: both have no
#: learned parameters, so the name alone rebuilds them.
VECTOR_METRICS = ("cosine", "euclidean")


@dataclass
class Match:
    identity: str
    value: float
    """The comparator's native value: a distance (smaller = closer) or a score (larger = closer)."""
    same: bool | None
    """Whether ``value`` passes the threshold (None without a threshold)."""


@dataclass
class Identification:
    matches: list[Match]
    threshold: float | None
    orientation: Orientation

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
            "matches": [{"identity": m.identity, key: m.value, "same": m.same} for m in self.matches],
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

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, self.orientation.value_name: self.value, "threshold": self.threshold,
                "same": self.same, "templates": self.templates}  # fmt: skip


class Gallery:
    """A persistent gallery of identities: a directory with ``gallery.json``, the SQLite store
    (the source of truth) and a cached vector index (FAISS, or a Qdrant collection).

    The model that made the embeddings is part of a gallery's identity: opening it with another
    model (a different weight fingerprint) is refused. A gallery of precomputed vectors has no
    model; give ``dim`` and ``metric`` (``cosine`` or ``euclidean``) when creating it.
    """

    def __init__(self, path: Path, info: dict[str, Any], model: AnyTwin | None) -> None:
        self.path = path
        self.info = info
        self.model = model
        self.dim = int(info["dim"])
        self.comparator: Comparator = model.comparator if model is not None else _named_comparator(info, path)
        self.orientation: Orientation = self.comparator.orientation
        self.plan: IndexPlan = self.comparator.index_plan(self.dim)
        self.store = TemplateStore(path / "templates.sqlite")
        self._lock = threading.RLock()
        self._dirty_index = False
        self._index = self._open_index()

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
    ) -> Gallery:
        path = Path(path)
        if (path / "gallery.json").exists():
            if exist_ok:
                return cls.open(path, model)
            raise DataError(f"gallery already exists: {path}")
        if index not in ("auto", "flat", "hnsw", "ivf"):
            raise DataError(f"index {index!r} is not one of auto, flat, hnsw, ivf")
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
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "gallery.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, path / "gallery.json")
        return cls(path, info, model)

    @classmethod
    def open(cls, path: str | Path, model: AnyTwin | None = None) -> Gallery:
        path = Path(path)
        try:
            info = json.loads((path / "gallery.json").read_text())
        except FileNotFoundError:
            raise DataError(f"gallery not found: {path} (create it with `twinnet gallery create`)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{path}/gallery.json: not valid JSON ({err})") from None
        if info.get("format") != GALLERY_FORMAT or int(info.get("format_version", 99)) > GALLERY_VERSION:
            raise DataError(
                f"{path}: not a gallery this twinnet can read ({info.get('format')} v{info.get('format_version')})"
            )
        expected = info.get("model_fingerprint")
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
        kind = self.info["index"]
        if kind == "auto":
            return "ivf" if self.store.count()[1] >= AUTO_APPROX_THRESHOLD else "flat"
        return kind

    def _open_index(self) -> Any:
        plan = self.plan
        if self.info["backend"] == "qdrant":
            url = self.info.get("qdrant_url")
            index = QdrantIndex(plan.dim, plan.metric, path=None if url else str(self.path / "qdrant"), url=url)
            if len(index) != self.store.count()[1]:
                index.reset()
                ids, vectors = self.store.all_templates(self.dim)
                index.add(ids, plan.transform(vectors))
            return index
        cached = FaissIndex.load(self.path / "index.faiss", plan.dim, plan.metric, self.index_kind,
                                 self.store.generation)  # fmt: skip
        return cached if cached is not None else self._rebuild()

    def _rebuild(self) -> FaissIndex:
        index = FaissIndex(self.plan.dim, self.plan.metric, self.index_kind)
        ids, vectors = self.store.all_templates(self.dim)
        if len(ids):
            index.add(ids, self.plan.transform(vectors))
        self._dirty_index = True
        return index

    def flush(self) -> None:
        """Save the FAISS index cache (derived data: a stale or missing cache is rebuilt on open)."""
        with self._lock:
            if isinstance(self._index, FaissIndex) and self._dirty_index:
                self._index.save(self.path / "index.faiss", self.store.generation)
                self._dirty_index = False

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
        from twinnet.inference import embed

        batch = torch.as_tensor(inputs).float() if isinstance(inputs, np.ndarray) else inputs
        return embed(model, batch, side=side).numpy().astype(np.float32)

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
    ) -> int:  # fmt: skip
        """Add templates for ``identity`` (created if new; ``replace`` drops its old templates).

        When this returns, the enrolment is committed to disk. Returns the number of templates added.
        """
        if not isinstance(identity, str) or not identity.strip():
            raise DataError("identity must be a non-empty string")
        vectors = self.embed(inputs, precomputed, side=TEMPLATE_SIDE)
        if len(vectors) == 0:
            raise DataError(f"enrolling {identity!r}: no inputs")
        with self._lock:
            rowids, removed = self.store.add(identity, vectors, metadata, replace, sources)
            if removed and not self._index.remove(np.asarray(removed)):
                self._index = self._rebuild()
            else:
                self._index.add(np.asarray(rowids), self.plan.transform(vectors))
            self._dirty_index = True
        return len(rowids)

    def enroll_many(self, identities: Sequence[str], vectors: np.ndarray) -> int:
        """Bulk enrolment of precomputed vectors, one template per row, in one transaction."""
        vectors = self.embed(np.asarray(vectors, dtype=np.float32), precomputed=True)
        if len(identities) != len(vectors):
            raise DataError(f"{len(identities)} identities for {len(vectors)} vectors")
        with self._lock:
            rowids = self.store.add_many(list(identities), vectors)
            if (
                self.info["index"] == "auto"
                and isinstance(self._index, FaissIndex)
                and self._index.kind != self.index_kind
            ):
                self._index = self._rebuild()
            else:
                self._index.add(np.asarray(rowids), self.plan.transform(vectors))
            self._dirty_index = True
        return len(rowids)

    def remove(self, identity: str) -> int:
        """Remove an identity and its templates; raises NotFoundError if unknown."""
        with self._lock:
            try:
                rowids = self.store.remove(identity)
            except KeyError:
                raise NotFoundError(f"unknown identity {identity!r}") from None
            if rowids and not self._index.remove(np.asarray(rowids)):
                self._index = self._rebuild()
            self._dirty_index = True
        return len(rowids)

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

    def default_threshold(self) -> float | None:
        calibration = getattr(self.model, "calibration", None)
        return None if calibration is None else calibration.native_threshold()

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
        candidates: int = 100, precomputed: bool | None = None,
    ) -> builtins.list[Identification]:  # fmt: skip
        """Top-``k`` identities per query (best template per identity) with open-set rejection.

        Re-scored plans fetch ``candidates`` templates per query from the index and score them
        exactly with the comparator."""
        threshold = self.default_threshold() if threshold is None else threshold
        queries = self.embed(inputs, precomputed, side=QUERY_SIDE)
        plan, orientation = self.plan, self.orientation
        n_templates = len(self._index)  # the index knows its size; COUNT(*) in SQLite costs ~10 ms at 1M
        # several templates per identity: fetch more than k so k distinct identities usually remain
        fetch = min(max(4 * k, candidates if plan.rescore else 4 * k), max(1, n_templates))
        with self._lock:
            sims, ids = self._index.search(plan.transform(queries), fetch)
        owners = self.store.identities_of(ids)
        candidate_vectors = self.store.vectors_of(ids, self.dim) if plan.rescore else {}
        results = []
        for q in range(len(queries)):
            valid = ids[q] >= 0
            row_ids = ids[q][valid]
            if plan.rescore and len(row_ids):
                templates = np.stack([candidate_vectors[int(r)] for r in row_ids])
                native = self.comparator.score_matrix(queries[q : q + 1], templates)[0]
            else:
                native = np.asarray(plan.to_native(sims[q][valid]))
            best: dict[str, float] = {}
            for rowid, value in zip(row_ids.tolist(), native.tolist()):
                identity = owners.get(int(rowid))
                if identity is None:  # removed since the search
                    continue
                if identity not in best or orientation.better(value, best[identity]):
                    best[identity] = value
            names = list(best)
            order = orientation.rank(np.array([best[n] for n in names], dtype=np.float64))[:k]
            matches = [Match(names[i], float(best[names[i]]), self._decide(best[names[i]], threshold)) for i in order]
            results.append(Identification(matches, threshold, orientation))
        return results

    def identify(self, x: Any, k: int = 5, threshold: float | None = None) -> Identification:
        return self.identify_batch(_as_batch(x), k, threshold)[0]

    def verify_batch(
        self, inputs: Any, identities: Sequence[str], threshold: float | None = None, precomputed: bool | None = None,
        aggregate: Literal["best", "mean"] = "best",
    ) -> builtins.list[GalleryVerification]:  # fmt: skip
        """Score each input against its claimed identity's templates: the best template counts, or
        with ``aggregate="mean"`` the mean over them."""
        if aggregate not in ("best", "mean"):
            raise DataError(f"aggregate must be 'best' or 'mean', not {aggregate!r}")
        threshold = self.default_threshold() if threshold is None else threshold
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
            out.append(GalleryVerification(identity, value, threshold, self._decide(value, threshold),
                                           self.orientation, len(templates)))  # fmt: skip
        return out

    def verify(self, x: Any, identity: str, threshold: float | None = None) -> GalleryVerification:
        return self.verify_batch(_as_batch(x), [identity], threshold)[0]


def _named_comparator(info: dict[str, Any], path: Path) -> Comparator:
    """The comparator of a gallery opened without a model: the one its ``comparator`` names."""
    name = info.get("comparator")
    if not isinstance(name, str) or name not in COMPARATORS:
        raise DataError(f"{path}/gallery.json: unknown comparator {name!r}")
    comparator = build_comparator(name, {}, int(info["dim"]))
    if any(True for _ in comparator.parameters()):
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


def _as_batch(x: Any) -> Any:
    if isinstance(x, (str, Path)):
        return [x]
    if isinstance(x, np.ndarray) and x.ndim == 1:
        return x[None]
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0)
    return [x]
