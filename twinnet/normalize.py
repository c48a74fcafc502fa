"""Cohort score normalisation: Z-norm, T-norm and symmetric S-norm.

Raw comparator values drift from one identity to another: some templates are close to everyone,
some queries are far from everything. Normalising a score by how the same template (Z-norm) or
the same query (T-norm) scores against a *cohort* of other identities' embeddings (e.g. the
enrolled templates of a gallery) makes one threshold fit all of them better:

- ``znorm``: ``(s − μ_b) / σ_b``, with ``μ_b, σ_b`` the mean and standard deviation of the
  template's (side b) similarities to the cohort; per template, so it can be computed once at
  enrolment (:meth:`ScoreNormalizer.add_templates`);
- ``tnorm``: ``(s − μ_a) / σ_a``, the same for the query (side a), at query time;
- ``snorm``: their average, ``((s − μ_b) / σ_b + (s − μ_a) / σ_a) / 2`` (symmetric).

``s`` is always a similarity (``comparator.to_similarity`` of the native value), so normalised
scores are similarities too, larger = more alike, whatever the comparator's orientation; decide
on them with a threshold fitted on normalised scores (orientation ``score``). Standard deviations
are the population ones (``ddof=0``), floored at ``eps``. A cohort member identical to the
embedding being normalised (a template that is itself in the cohort) is left out of its statistics.

**Writer-dependent (reference) normalisation** (:data:`REFERENCE_NORMALIZATIONS`): where each
identity enrols several references (a writer's genuine signatures), a questioned sample's score
against them is normalised by how that identity's references score against each other: each
reference is scored against the others, leaving itself out, with the same aggregation (nearest or
mean), and the mean ``μ_w`` and standard deviation ``σ_w`` (``ddof=0``, floored at ``eps``) of
those leave-one-out scores describe the writer. ``zscore``: ``(s − μ_w) / σ_w``; ``shift``:
``s − μ_w``; ``ratio``: ``s / |μ_w|``. Scores are similarities here too. Adding a kind is one class and one
``@REFERENCE_NORMALIZATIONS.register(name)``.

A normaliser saves as ``normalizer.safetensors`` (the cohort and any cached template statistics)
and ``normalizer.json`` (kind, settings, orientation, a SHA-256 of the cohort): :func:`save_normalizer`
and :func:`load_normalizer`.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from twinnet.compare import Comparator, Orientation
from twinnet.errors import ModelFormatError
from twinnet.registry import Registry

Kind = Literal["znorm", "tnorm", "snorm"]
KINDS: tuple[Kind, ...] = ("znorm", "tnorm", "snorm")
TENSORS = "normalizer.safetensors"
META = "normalizer.json"
FORMAT = 1

Stats = tuple[np.ndarray, np.ndarray]


def _array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def cohort_fingerprint(cohort: np.ndarray) -> str:
    """``sha256:<hex>`` of the cohort's float32 bytes and shape."""
    c = np.ascontiguousarray(cohort, dtype=np.float32)
    return "sha256:" + hashlib.sha256(str(c.shape).encode() + c.tobytes()).hexdigest()


def normalizer_of(model: Any) -> ScoreNormalizer | None:
    """The cohort normaliser a model carries (``model.normalizer``, set by :func:`twinnet.io.load`
    or by fitting one), or None."""
    found = getattr(model, "normalizer", None)
    return found if isinstance(found, ScoreNormalizer) else None


class ScoreNormalizer:
    """Z-, T- or S-norm of comparator values against a cohort of embeddings.

    Args:
        comparator: the model's comparator (it scores embeddings against the cohort).
        cohort: ``(n, d)`` embeddings of other identities (e.g. one template per enrolled identity),
            as side b embeds them; at least two.
        kind: ``znorm``, ``tnorm`` or ``snorm``.
        eps: the smallest standard deviation divided by (a cohort that scores one embedding all
            alike would otherwise divide by zero).
    """

    def __init__(self, comparator: Comparator, cohort: Any, kind: Kind = "snorm", eps: float = 1e-6) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        c = _array(cohort)
        if c.ndim != 2 or len(c) < 2:
            raise ValueError(f"the cohort must be (n, d) embeddings with n ≥ 2, not shape {tuple(c.shape)}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, not {eps}")
        self.comparator, self.cohort, self.kind, self.eps = comparator, np.ascontiguousarray(c), kind, float(eps)
        self._rows_by_bytes: dict[bytes, list[int]] = {}
        for j, row in enumerate(self.cohort):
            self._rows_by_bytes.setdefault(row.tobytes(), []).append(j)
        self.template_ids: list[str] = []
        self._template_mean = np.zeros(0, np.float64)
        self._template_std = np.zeros(0, np.float64)

    @property
    def orientation(self) -> Orientation:
        return self.comparator.orientation

    @property
    def scale(self) -> str:
        """The name of the scale its scores are on (an operating point fitted on them records it)."""
        return self.kind

    @property
    def fingerprint(self) -> str:
        return cohort_fingerprint(self.cohort)

    # -- statistics ---------------------------------------------------------------------------------

    def cohort_similarities(self, embeddings: Any) -> np.ndarray:
        """``(m, n)`` similarities (larger = more alike) of each embedding to each cohort member."""
        e = _array(embeddings)
        if e.ndim == 1:
            e = e[None]
        return np.asarray(self.comparator.to_similarity(self.comparator.score_matrix(e, self.cohort)), np.float64)

    def stats(self, embeddings: Any) -> Stats:
        """Mean and standard deviation (``ddof=0``, floored at ``eps``) of each embedding's
        similarities to the cohort, leaving out cohort members identical to it."""
        e = _array(embeddings)
        if e.ndim == 1:
            e = e[None]
        sim = self.cohort_similarities(e)
        # a template that is itself in the cohort would count its perfect self-match: leave out
        # cohort rows equal to it, found by their bytes (no (m, n, d) comparison)
        keep = np.ones(sim.shape, bool)
        for i, row in enumerate(np.ascontiguousarray(e, np.float32)):
            for j in self._rows_by_bytes.get(row.tobytes(), ()):
                keep[i, j] = False
        counts = keep.sum(1)
        if (counts < 2).any():
            raise ValueError("an embedding has fewer than two cohort members besides itself: enlarge the cohort")
        mean = np.where(keep, sim, 0.0).sum(1) / counts
        var = np.where(keep, (sim - mean[:, None]) ** 2, 0.0).sum(1) / counts
        return mean, np.maximum(np.sqrt(var), self.eps)

    def add_templates(self, ids: Sequence[str], templates: Any) -> None:
        """Compute and keep the Z-norm statistics of enrolled templates under ``ids`` (they are
        saved with the normaliser, so queries against them need no cohort pass for side b)."""
        rows = _array(templates)
        rows = rows[None] if rows.ndim == 1 else rows
        if len(ids) != len(rows):
            raise ValueError(f"{len(ids)} ids for {len(rows)} templates")
        mean, std = self.stats(rows)
        index = {t: i for i, t in enumerate(self.template_ids)}
        m, s = list(self._template_mean), list(self._template_std)
        for t, mu, sd in zip(ids, mean.tolist(), std.tolist()):
            if t in index:
                m[index[t]], s[index[t]] = mu, sd
            else:
                index[t] = len(self.template_ids)
                self.template_ids.append(t)
                m.append(mu)
                s.append(sd)
        self._template_mean, self._template_std = np.asarray(m, np.float64), np.asarray(s, np.float64)

    def template_stats(self, ids: Sequence[str]) -> Stats:
        """The kept statistics of templates ``ids`` (KeyError for one never added)."""
        index = {t: i for i, t in enumerate(self.template_ids)}
        rows = [index[t] for t in ids]
        return self._template_mean[rows], self._template_std[rows]

    # -- normalising --------------------------------------------------------------------------------

    def normalize(
        self, native: Any, queries: Any | None = None, templates: Any | None = None, *,
        query_stats: Stats | None = None, template_stats: Stats | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Normalised similarities of row pairs: ``native[i]`` compares ``queries[i]`` (side a) with
        ``templates[i]`` (side b). Give the embeddings the kind needs (T-norm: queries; Z-norm:
        templates; S-norm: both), or their statistics (``template_stats`` from :meth:`template_stats`)."""
        s = np.asarray(self.orientation.to_similarity(np.asarray(_array(native), np.float64)), np.float64).ravel()
        return self._combine(s, lambda: self._side(queries, query_stats, "queries"),
                             lambda: self._side(templates, template_stats, "templates"))  # fmt: skip

    def normalize_matrix(
        self, native: Any, queries: Any | None = None, templates: Any | None = None, *,
        query_stats: Stats | None = None, template_stats: Stats | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Normalised similarities of a ``(queries, templates)`` matrix of native values (a
        gallery's scores): rows take the queries' statistics, columns the templates'."""
        s = np.asarray(self.orientation.to_similarity(np.asarray(_array(native), np.float64)), np.float64)
        if s.ndim != 2:
            raise ValueError(f"expected a (queries, templates) matrix, not shape {s.shape}")

        def rows() -> Stats:
            m, sd = self._side(queries, query_stats, "queries")
            return m[:, None], sd[:, None]

        def columns() -> Stats:
            m, sd = self._side(templates, template_stats, "templates")
            return m[None, :], sd[None, :]

        return self._combine(s, rows, columns)

    def score(self, queries: Any, templates: Any) -> np.ndarray:
        """Normalised similarities of row pairs of embeddings (the comparator scores them first)."""
        q, t = _array(queries), _array(templates)
        device = next(iter(self.comparator.parameters()), torch.empty(0)).device
        with torch.no_grad():
            native = self.comparator(torch.tensor(q, device=device), torch.tensor(t, device=device))
        return self.normalize(native.float().cpu().numpy(), q, t)

    def _side(self, embeddings: Any | None, stats: Stats | None, what: str) -> Stats:
        if stats is not None:
            return np.asarray(stats[0], np.float64), np.maximum(np.asarray(stats[1], np.float64), self.eps)
        if embeddings is None:
            raise ValueError(f"{self.kind} needs the {what} (or their statistics)")
        return self.stats(embeddings)

    def _combine(self, s: np.ndarray, query_side: Any, template_side: Any) -> np.ndarray:
        if self.kind == "tnorm":
            mean, std = query_side()
            return (s - mean) / std
        if self.kind == "znorm":
            mean, std = template_side()
            return (s - mean) / std
        (qm, qs), (tm, ts) = query_side(), template_side()
        return ((s - tm) / ts + (s - qm) / qs) / 2.0

    # -- files --------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "kind": self.kind, "eps": self.eps, "orientation": self.orientation.to_json(),
            "cohort_size": int(self.cohort.shape[0]), "dim": int(self.cohort.shape[1]),
            "cohort_sha256": cohort_fingerprint(self.cohort), "template_ids": list(self.template_ids),
            "std_ddof": 0,
        }  # fmt: skip

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "cohort": torch.from_numpy(np.ascontiguousarray(self.cohort, np.float32)),
            "template_mean": torch.from_numpy(np.ascontiguousarray(self._template_mean, np.float64)),
            "template_std": torch.from_numpy(np.ascontiguousarray(self._template_std, np.float64)),
        }


def save_normalizer(normalizer: ScoreNormalizer, directory: str | Path) -> Path:
    """Write ``normalizer.safetensors`` and ``normalizer.json`` into ``directory`` (e.g. the
    temporary directory :func:`twinnet.io.save` fills before it renames it into place)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(normalizer.tensors(), str(directory / TENSORS), metadata={"format": str(FORMAT)})
    (directory / META).write_text(json.dumps(normalizer.to_json(), indent=2) + "\n", encoding="utf-8")
    return directory


def load_normalizer(directory: str | Path, comparator: Comparator) -> ScoreNormalizer:
    """Read what :func:`save_normalizer` wrote; ModelFormatError names what is missing or does not
    fit (another comparator orientation, a cohort whose checksum differs, a wrong size)."""
    directory = Path(directory)
    for name in (META, TENSORS):
        if not (directory / name).is_file():
            raise ModelFormatError(f"{directory}: incomplete normaliser ({name} is missing)")
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / TENSORS))
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{directory}: unreadable normaliser ({err})") from None
    if meta.get("orientation") != comparator.orientation.to_json():
        raise ModelFormatError(f"{directory / META}: saved for a {meta.get('orientation')} comparator, "
                               f"not this {comparator.orientation.to_json()} one")  # fmt: skip
    cohort = tensors.get("cohort")
    if cohort is None or cohort_fingerprint(cohort.numpy()) != meta.get("cohort_sha256"):
        raise ModelFormatError(f"{directory / TENSORS}: the cohort is missing or does not match its checksum")
    normalizer = ScoreNormalizer(comparator, cohort.numpy(), meta.get("kind", "snorm"), float(meta.get("eps", 1e-6)))
    ids = list(meta.get("template_ids", []))
    mean, std = tensors.get("template_mean"), tensors.get("template_std")
    if ids:
        if mean is None or std is None or len(mean) != len(ids) or len(std) != len(ids):
            raise ModelFormatError(f"{directory / TENSORS}: template statistics do not match template_ids")
        normalizer.template_ids = ids
        normalizer._template_mean, normalizer._template_std = mean.numpy(), std.numpy()
    return normalizer


# -- writer-dependent normalisation from enrolled references ----------------------------------------


class ReferenceNormalization(ABC):
    """Normalises a questioned sample's similarity to one identity's references by statistics of
    those references' leave-one-out similarities to each other (see the module's docstring)."""

    name: ClassVar[str] = ""
    #: References an identity needs for the statistics to exist.
    min_references: ClassVar[int] = 2

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = float(eps)

    @property
    def scale(self) -> str:
        """The scale name an operating point fitted on these scores records (``writer-<name>``)."""
        return f"writer-{self.name}"

    @staticmethod
    def leave_one_out(reference_similarities: np.ndarray, aggregate: Literal["min", "mean"]) -> np.ndarray:
        """Each reference's similarity to the other references of its identity, aggregated as the
        questioned samples are (``min``: the nearest, i.e. the largest similarity; ``mean``), from
        the ``(k, k)`` similarity matrix of the references (the diagonal is left out)."""
        s = np.asarray(reference_similarities, np.float64)
        k = len(s)
        off = ~np.eye(k, dtype=bool)
        others = s[off].reshape(k, k - 1)
        return others.max(1) if aggregate == "min" else others.mean(1)

    def statistics(self, reference_similarities: np.ndarray, aggregate: Literal["min", "mean"]) -> Stats:
        """``(μ_w, σ_w)`` of the leave-one-out scores (arrays of one element)."""
        k = len(reference_similarities)
        if k < self.min_references:
            raise ValueError(f"{self.name} normalisation needs at least {self.min_references} references, not {k}")
        loo = self.leave_one_out(reference_similarities, aggregate)
        return np.array([loo.mean()]), np.array([max(float(loo.std()), self.eps)])

    @abstractmethod
    def apply(self, similarities: np.ndarray, stats: Stats) -> np.ndarray:
        """Normalised similarities of one identity's questioned samples."""


REFERENCE_NORMALIZATIONS: Registry[ReferenceNormalization] = Registry("reference normalisation")


def register_reference_normalization(name: str) -> Any:
    def decorator(cls: type[ReferenceNormalization]) -> type[ReferenceNormalization]:
        cls.name = name
        REFERENCE_NORMALIZATIONS.register(name)(cls)
        return cls

    return decorator


@register_reference_normalization("zscore")
class ReferenceZScore(ReferenceNormalization):
    """``(s − μ_w) / σ_w``: a writer whose references vary much gets a lenient threshold, one whose
    references are alike a strict one. Needs 3 references (2 give two equal leave-one-out scores)."""

    min_references = 3

    def apply(self, similarities: np.ndarray, stats: Stats) -> np.ndarray:
        return (np.asarray(similarities, np.float64) - stats[0]) / stats[1]


@register_reference_normalization("ratio")
class ReferenceRatio(ReferenceNormalization):
    """``s / |μ_w|``: the score relative to how alike the writer's references typically are
    (for a distance, ``−d / d̄_w``): scale-free, for similarities that keep one sign (distances,
    positive similarities)."""

    def apply(self, similarities: np.ndarray, stats: Stats) -> np.ndarray:
        return np.asarray(similarities, np.float64) / np.maximum(np.abs(stats[0]), self.eps)


@register_reference_normalization("shift")
class ReferenceShift(ReferenceNormalization):
    """``s − μ_w``: only the writer's location moves (steadier than ``zscore`` with few references)."""

    def apply(self, similarities: np.ndarray, stats: Stats) -> np.ndarray:
        return np.asarray(similarities, np.float64) - stats[0]
