"""``Gallery``: enrol identities once, then identify (1:N, open set) and verify (1:1) against them."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from twinnet.errors import DataError
from twinnet.gallery.index import AUTO_APPROX_THRESHOLD, FaissIndex, Metric, QdrantIndex
from twinnet.gallery.store import TemplateStore
from twinnet.io import weights_fingerprint

GALLERY_FORMAT = "twinnet-gallery"
GALLERY_VERSION = 1


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
    is_distance: bool

    @property
    def identity(self) -> str | None:
        """The best match, or None ("unknown") when it does not pass the threshold."""
        if not self.matches or self.matches[0].same is False:
            return None
        return self.matches[0].identity

    def to_dict(self) -> dict[str, Any]:
        key = "distance" if self.is_distance else "score"
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
    is_distance: bool
    templates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        key = "distance" if self.is_distance else "score"
        return {"identity": self.identity, key: self.value, "threshold": self.threshold, "same": self.same,
                "templates": self.templates}  # fmt: skip


class Gallery:
    """A persistent gallery of identities: a directory with ``gallery.json``, the SQLite store
    (the source of truth) and a cached vector index (FAISS, or a Qdrant collection).

    The model that made the embeddings is part of a gallery's identity: opening it with another
    model (a different weight fingerprint) is refused. A gallery of precomputed vectors has no
    model; give ``dim`` and ``metric`` (``cosine`` or ``euclidean``) when creating it.
    """

    def __init__(self, path: Path, info: dict[str, Any], model: Any | None) -> None:
        self.path = path
        self.info = info
        self.model = model
        self.dim = int(info["dim"])
        self.comparator_name = info["comparator"]
        self.store = TemplateStore(path / "templates.sqlite")
        self._lock = threading.RLock()
        self._dirty_index = False
        self.metric: Metric = "ip" if self.comparator_name in ("cosine", "cosine_distance") else "l2"
        self._rescore = self.comparator_name in ("weighted_l1", "mlp")
        self._index = self._open_index()

    # -- creation and opening ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        model: Any | None = None,
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
            comparator = model.config.comparator.name if model.config is not None else "euclidean"
            emb_dim = _embedding_dim(model)
            fingerprint = model.fingerprint or weights_fingerprint(model)
        else:
            if dim is None or metric not in ("cosine", "euclidean"):
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
    def open(cls, path: str | Path, model: Any | None = None) -> Gallery:
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

    def _transform(self, vectors: np.ndarray) -> np.ndarray:
        """What the index stores: Mahalanobis embeddings are mapped through L (then L2 is exact)."""
        if self.comparator_name == "mahalanobis" and self.model is not None:
            L = self.model.comparator.L.detach().cpu().numpy()
            return np.ascontiguousarray(vectors @ L.T, dtype=np.float32)
        if self.metric == "ip":  # inner product of unit vectors = cosine, whether or not the model normalises
            return _unit_rows(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _open_index(self) -> Any:
        if self.info["backend"] == "qdrant":
            url = self.info.get("qdrant_url")
            index = QdrantIndex(
                self._index_dim(), self.metric, path=None if url else str(self.path / "qdrant"), url=url
            )
            if len(index) != self.store.count()[1]:
                index.reset()
                ids, vectors = self.store.all_templates(self.dim)
                index.add(ids, self._transform(vectors))
            return index
        cached = FaissIndex.load(self.path / "index.faiss", self._index_dim(), self.metric, self.index_kind,
                                 self.store.generation)  # fmt: skip
        return cached if cached is not None else self._rebuild()

    def _index_dim(self) -> int:
        if self.comparator_name == "mahalanobis" and self.model is not None:
            return int(self.model.comparator.L.shape[0])
        return self.dim

    def _rebuild(self) -> FaissIndex:
        index = FaissIndex(self._index_dim(), self.metric, self.index_kind)
        ids, vectors = self.store.all_templates(self.dim)
        if len(ids):
            index.add(ids, self._transform(vectors))
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
        self, inputs: Sequence[Any] | np.ndarray | torch.Tensor, precomputed: bool | None = None, side: str = "a"
    ) -> np.ndarray:
        """Embeddings of ``inputs``: embedded with the model, or taken as they are when
        ``precomputed`` (``None``: precomputed if the gallery has no model, or if ``inputs`` is a
        float ``(n, dim)`` array and the model does not itself take ``dim``-vectors).

        With a half-twin, templates (documents) are embedded by the second encoder (``side="b"``)
        and queries by the first: a query→document model searches a gallery of documents."""
        if precomputed is None:
            spec = self.model.config.input if self.model is not None and self.model.config is not None else None
            model_takes_same_shape = spec is not None and spec.kind == "vector" and spec.features == self.dim
            precomputed = self.model is None or (
                isinstance(inputs, np.ndarray) and inputs.ndim == 2 and inputs.shape[1] == self.dim
                and inputs.dtype != np.uint8 and not model_takes_same_shape
            )  # fmt: skip
        if precomputed:
            array = np.asarray(inputs, dtype=np.float32)
            if array.ndim != 2 or array.shape[1] != self.dim:
                raise DataError(f"this gallery holds {self.dim}-d vectors; got shape {array.shape}")
            return np.ascontiguousarray(array)
        from twinnet.inference import embed

        return embed(self.model, inputs, side=side).numpy().astype(np.float32)

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
        vectors = self.embed(inputs, precomputed, side="b" if hasattr(self.model, "encoder_b") else "a")
        if len(vectors) == 0:
            raise DataError(f"enrolling {identity!r}: no inputs")
        with self._lock:
            rowids, removed = self.store.add(identity, vectors, metadata, replace, sources)
            if removed and not self._index.remove(np.asarray(removed)):
                self._index = self._rebuild()
            else:
                self._index.add(np.asarray(rowids), self._transform(vectors))
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
                self._index.add(np.asarray(rowids), self._transform(vectors))
            self._dirty_index = True
        return len(rowids)

    def remove(self, identity: str) -> int:
        """Remove an identity and its templates; KeyError-free: raises DataError if unknown."""
        with self._lock:
            try:
                rowids = self.store.remove(identity)
            except KeyError:
                raise DataError(f"unknown identity {identity!r}") from None
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
            raise DataError(f"unknown identity {identity!r}")
        return found

    def __contains__(self, identity: str) -> bool:
        return self.store.identity(identity) is not None

    def count(self) -> dict[str, int]:
        identities, templates = self.store.count()
        return {"identities": identities, "templates": templates}

    # -- scoring ------------------------------------------------------------------------------------

    @property
    def is_distance(self) -> bool:
        return self.comparator_name not in ("cosine", "weighted_l1", "mlp")  # cosine_distance is a distance

    def default_threshold(self) -> float | None:
        calibration = getattr(self.model, "calibration", None)
        return None if calibration is None else calibration.native_threshold()

    def _native(self, similarity: np.ndarray) -> np.ndarray:
        """Index similarities → the comparator's native values."""
        if self.metric == "ip":
            return 1.0 - similarity if self.comparator_name == "cosine_distance" else similarity
        squared = np.maximum(-similarity, 0.0)
        return squared if self.comparator_name == "squared_euclidean" else np.sqrt(squared)

    def _decide(self, value: float, threshold: float | None) -> bool | None:
        if threshold is None:
            return None
        return value <= threshold if self.is_distance else value >= threshold

    def _comparator_scores(self, queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
        comparator = self.model.comparator
        device = next(comparator.parameters()).device
        with torch.no_grad():
            q = torch.tensor(queries, device=device)
            t = torch.tensor(templates, device=device)
            return comparator.pairwise(q, t).cpu().numpy()

    def identify_batch(
        self, inputs: Sequence[Any] | np.ndarray | torch.Tensor, k: int = 5, threshold: float | None = None,
        candidates: int = 100, precomputed: bool | None = None,
    ) -> list[Identification]:  # fmt: skip
        """Top-``k`` identities per query (best template per identity) with open-set rejection."""
        threshold = self.default_threshold() if threshold is None else threshold
        queries = self.embed(inputs, precomputed)
        n_templates = len(self._index)  # the index knows its size; COUNT(*) in SQLite costs ~10 ms at 1M
        fetch = min(max(4 * k, candidates if self._rescore else 4 * k), max(1, n_templates))
        with self._lock:
            sims, ids = self._index.search(self._transform(queries), fetch)
        owners = self.store.identities_of(ids)
        # learned comparators: the index proposes candidates by L2, the comparator scores them
        candidate_vectors = self.store.vectors_of(ids, self.dim) if self._rescore else {}
        results = []
        for q in range(len(queries)):
            valid = ids[q] >= 0
            row_ids = ids[q][valid]
            if self._rescore and len(row_ids):
                templates = np.stack([candidate_vectors[int(r)] for r in row_ids])
                native = self._comparator_scores(queries[q : q + 1], templates)[0]
            else:
                native = self._native(sims[q][valid])
            best: dict[str, float] = {}
            for rowid, value in zip(row_ids.tolist(), native.tolist()):
                identity = owners.get(int(rowid))
                if identity is None:
                    continue
                if identity not in best or (value < best[identity] if self.is_distance else value > best[identity]):
                    best[identity] = value
            ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=not self.is_distance)[:k]
            results.append(Identification(
                [Match(i, float(v), self._decide(v, threshold)) for i, v in ranked], threshold, self.is_distance
            ))  # fmt: skip
        return results

    def identify(self, x: Any, k: int = 5, threshold: float | None = None) -> Identification:
        return self.identify_batch(_as_batch(x), k, threshold)[0]

    def verify_batch(
        self, inputs: Any, identities: Sequence[str], threshold: float | None = None, precomputed: bool | None = None,
        aggregate: Literal["best", "mean"] = "best",
    ) -> list[GalleryVerification]:  # fmt: skip
        """Score each input against its claimed identity's templates: the best template counts, or
        with ``aggregate="mean"`` the mean over them."""
        threshold = self.default_threshold() if threshold is None else threshold
        queries = self.embed(inputs, precomputed)
        if len(identities) != len(queries):
            raise DataError(f"{len(identities)} identities for {len(queries)} inputs")
        out = []
        for q, identity in zip(queries, identities):
            templates = self.store.templates_of(identity, self.dim)
            if len(templates) == 0:
                raise DataError(f"unknown identity {identity!r}")
            if self._rescore or self.comparator_name == "mahalanobis":
                values = self._comparator_scores(q[None], np.ascontiguousarray(templates))[0]
            elif self.metric == "ip":
                values = self._native(_unit_rows(templates) @ _unit_rows(q[None])[0])
            else:
                squared = ((templates - q) ** 2).sum(1)
                values = squared if self.comparator_name == "squared_euclidean" else np.sqrt(squared)
            if aggregate == "mean":
                value = float(values.mean())
            else:
                value = float(values.min() if self.is_distance else values.max())
            out.append(GalleryVerification(identity, value, threshold, self._decide(value, threshold), self.is_distance,
                                           len(templates)))  # fmt: skip
        return out

    def verify(self, x: Any, identity: str, threshold: float | None = None) -> GalleryVerification:
        return self.verify_batch(_as_batch(x), [identity], threshold)[0]


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))


def _as_batch(x: Any) -> Any:
    if isinstance(x, (str, Path)):
        return [x]
    if isinstance(x, np.ndarray) and x.ndim == 1:
        return x[None]
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0)
    return [x]


def _embedding_dim(model: Any) -> int:
    dim = getattr(getattr(model, "encoder", None) or getattr(model, "encoder_a", None), "output_dim", None)
    if isinstance(dim, int):
        return dim
    spec = model.config.input
    with torch.no_grad():
        model.eval()
        device = next(model.parameters()).device
        return int(model.embed(torch.zeros(1, *spec.example_shape(), device=device)).shape[1])
