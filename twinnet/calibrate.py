"""Decisions a deployer can trust: operating points chosen on labelled data and carried inside a model.

A :class:`Calibration` holds named :class:`OperatingPoint`\\ s (``default``, ``strict``, …), each a
threshold in the comparator's *native* scale (a distance, or a probability of "same"), the target it
was fitted for (``eer``, ``far=1e-3``, ``frr=0.05``, ``best_accuracy``), the FAR and FRR it measured
with 95% Clopper–Pearson intervals, and where it came from (:class:`Provenance`: a fingerprint of the
data, how many genuine and impostor pairs and identities, the protocol and its settings, the UTC
date and the twinnet version). With the comparator's :class:`Orientation` it needs nothing else to
decide: ``calibration.decide(values, "strict")``.

Fitting refuses data too small for its target: with ``n`` impostor pairs and no false accepts the
one-sided 95% upper bound of the FAR is about ``3/n`` (the rule of three), so a FAR below ``3/n``
cannot be shown; ``far=1e-4`` needs at least 30,000 impostor pairs (likewise FRR and genuine pairs).

- :func:`calibrate`: what training does on its validation pairs (``default`` at best accuracy, and
  informational points at each target FAR);
- :func:`recalibrate`: fit a point on a user's own labelled data, scored by a protocol's own pairing;
- :func:`drift_report`: whether a model's stored points still hold on new labelled data.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from twinnet._version import __version__
from twinnet.compare import SCORE, Orientation
from twinnet.errors import ConfigError, DataError
from twinnet.metrics import (
    ArrayLike,
    _np,
    calc_best_accuracy,
    calc_clopper_pearson,
    calc_eer,
    calc_error_rates,
    calc_min_trials,
    calc_tar_at_far,
    calc_threshold_at_frr,
)

if TYPE_CHECKING:
    from twinnet.data.items import ItemSet
    from twinnet.data.sources import Dataset

TargetKind = Literal["eer", "far", "frr", "best_accuracy"]
Interval = tuple[float, float]

#: The name of the operating point training creates, and the one decisions use unless told otherwise.
DEFAULT = "default"
#: The JSON layout this module writes (``calibration.json``); layouts without ``format`` still load.
FORMAT = 2
#: Targets without a rate (``eer``, ``best_accuracy``) still need this many pairs of each kind: with
#: fewer, one pair moves a rate by more than ten points.
MIN_PAIRS_PER_KIND = 10

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")

#: The scale of a threshold on the comparator's own values. Any other scale names a score
#: normalisation (``snorm``, ``writer-zscore``, …): its values are similarities (larger = more
#: alike, :mod:`twinnet.normalize`'s convention), whatever the comparator's orientation.
NATIVE = "native"
#: How an interval was computed: exact binomial over pairs taken as independent, or a bootstrap
#: that resamples identities (pairs of one identity are correlated).
CLOPPER_PEARSON = "clopper-pearson"
BOOTSTRAP_IDENTITY = "bootstrap-identity"
#: Bootstrap resamples and seed of :func:`bootstrap_identity_intervals` (seeded: same data, same interval).
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def scale_orientation(native: Orientation, scale: str) -> Orientation:
    """The orientation of values on ``scale``: the comparator's (``native``) for its own values;
    a normalised score is a similarity (orientation ``score``)."""
    return native if scale == NATIVE else SCORE


# -- targets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a threshold is fitted for: ``eer`` (FAR = FRR), ``far`` (the most lenient threshold with
    FAR ≤ ``rate``), ``frr`` (the strictest with FRR ≤ ``rate``) or ``best_accuracy``."""

    kind: TargetKind
    rate: float | None = None

    def __str__(self) -> str:
        return self.kind if self.rate is None else f"{self.kind}={self.rate:g}"

    @classmethod
    def parse(cls, text: str | Target) -> Target:
        """``"eer"``, ``"best_accuracy"``, ``"far=1e-3"`` or ``"frr=0.05"`` (case and spaces ignored);
        a ValueError names what is accepted."""
        if isinstance(text, Target):
            return text
        spec = str(text).strip().lower().replace(" ", "")
        if spec in ("eer", "best_accuracy"):
            return cls(spec)  # type: ignore[arg-type]
        kind, sep, value = spec.partition("=")
        if sep and kind in ("far", "frr"):
            try:
                rate = float(value)
            except ValueError:
                rate = math.nan
            if 0.0 < rate < 1.0:
                return cls(kind, rate)  # type: ignore[arg-type]
            raise ValueError(f"target {text!r}: the {kind.upper()} must be a number strictly between 0 and 1")
        raise ValueError(f"target {text!r}: expected eer, best_accuracy, far=<rate> or frr=<rate> (e.g. far=1e-3)")

    def data_problem(self, genuine: int, impostors: int, label: str | None = None) -> str | None:
        """Why ``genuine`` and ``impostors`` pairs cannot show this target, or None when they can."""
        label = label or str(self)
        if self.kind == "far":
            assert self.rate is not None
            need = calc_min_trials(self.rate)
            if impostors < need:
                return f"{label} needs at least {need} impostor pairs; these data have {impostors}"
        elif self.kind == "frr":
            assert self.rate is not None
            need = calc_min_trials(self.rate)
            if genuine < need:
                return f"{label} needs at least {need} genuine pairs; these data have {genuine}"
        elif genuine < MIN_PAIRS_PER_KIND or impostors < MIN_PAIRS_PER_KIND:
            return (f"{label} needs at least {MIN_PAIRS_PER_KIND} genuine and {MIN_PAIRS_PER_KIND} impostor pairs; "
                    f"these data have {genuine} and {impostors}")  # fmt: skip
        return None


def parse_target(text: str | Target) -> Target:
    """:meth:`Target.parse`."""
    return Target.parse(text)


# -- provenance ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """Where an operating point came from. Fields are None where unknown (points loaded from
    calibration files written before provenance was kept)."""

    fingerprint: str | None = None
    """``sha256:<hex>`` over the sorted item names with their labels (and the pairs, if given):
    :func:`data_fingerprint`."""
    genuine_pairs: int | None = None
    impostor_pairs: int | None = None
    identities: int | None = None
    protocol: str | None = None
    """The protocol whose pairing produced the scores (``verification``, ``signature``)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """That protocol's settings (for ``signature``: ``references``, ``aggregate``, ``seed``)."""
    source: str = ""
    """What the data was: ``validation`` (training's held-out data) or a path."""
    date: str | None = None
    """UTC, ISO 8601 (``2025-01-31T12:00:00Z``)."""
    twinnet_version: str | None = None
    pairs: int | None = None
    """All pairs (genuine + impostor); known alone for points of older files."""

    @property
    def n_pairs(self) -> int:
        if self.genuine_pairs is not None and self.impostor_pairs is not None:
            return self.genuine_pairs + self.impostor_pairs
        return int(self.pairs or 0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Provenance:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _portable_names(names: Sequence[str]) -> list[str]:
    """Item names with their common folder removed, so that moving a data folder keeps its fingerprint."""
    if len(names) > 1 and all(os.path.isabs(n) for n in names):
        try:
            root = os.path.commonpath(names)
        except ValueError:  # paths on different drives
            return list(names)
        return [os.path.relpath(n, root) for n in names]
    return list(names)


def data_fingerprint(data: Dataset | ItemSet) -> str:
    """``sha256:<hex>`` over the sorted ``name<TAB>label`` lines of the items (names relative to
    their common folder; labels by class name), then, for data with given pairs, the sorted
    ``name<TAB>name<TAB>same`` lines of the pairs. Same data, same fingerprint, wherever it lies."""
    items: ItemSet = data.items if hasattr(data, "pairs") else data  # type: ignore[union-attr]
    pairs = getattr(data, "pairs", None)
    names = _portable_names(items.names)
    labels = [items.class_names[c] if 0 <= c < len(items.class_names) else str(c) for c in items.labels.tolist()]
    h = hashlib.sha256()
    for line in sorted(f"{n}\t{label}" for n, label in zip(names, labels)):
        h.update(line.encode("utf-8") + b"\n")
    if pairs is not None:
        h.update(b"pairs\n")
        rows = (f"{names[a]}\t{names[b]}\t{int(s)}" for a, b, s in zip(pairs.a.tolist(), pairs.b.tolist(),
                                                                        pairs.same.tolist()))  # fmt: skip
        for line in sorted(rows):
            h.update(line.encode("utf-8") + b"\n")
    return "sha256:" + h.hexdigest()


# -- operating points ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold in the comparator's native scale, the target it was fitted for, what
    it measured on the data it was fitted on (FAR, FRR and accuracy; FAR and FRR with exact
    two-sided 95% Clopper–Pearson intervals, from the beta distribution), and its provenance."""

    threshold: float
    target: str
    """The canonical target: ``eer``, ``best_accuracy``, ``far=0.001``, ``frr=0.05``."""
    far: float
    frr: float
    accuracy: float
    far_ci: Interval | None = None
    """95% Clopper–Pearson interval of the FAR over the impostor pairs (None: unknown, older files)."""
    frr_ci: Interval | None = None
    """95% Clopper–Pearson interval of the FRR over the genuine pairs."""
    false_accepts: int | None = None
    false_rejects: int | None = None
    provenance: Provenance = field(default_factory=Provenance)
    warning: str | None = None
    """Set when the data were too few to show the target (points training fits for information,
    e.g. ``far=0.001`` on 1,000 impostor pairs): the point exists, its intervals say how loose it is."""
    scale: str = NATIVE
    """What the threshold is on: ``native`` (the comparator's values, in its orientation), or the
    name of the score normalisation it was fitted after (a similarity scale)."""
    interval: str = CLOPPER_PEARSON
    """How ``far_ci`` and ``frr_ci`` were computed: ``clopper-pearson`` or ``bootstrap-identity``."""

    # -- the former ``Threshold``'s fields ----------------------------------------------------------

    @property
    def value(self) -> float:
        """The threshold (native scale), as the former ``Threshold.value``."""
        return self.threshold

    @property
    def criterion(self) -> str:
        """The target's kind: ``best_accuracy``, ``eer``, ``far`` or ``frr``."""
        return Target.parse(self.target).kind

    @property
    def target_far(self) -> float | None:
        t = Target.parse(self.target)
        return t.rate if t.kind == "far" else None

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold, "target": self.target, "far": self.far, "frr": self.frr,
            "accuracy": self.accuracy, "far_ci95": None if self.far_ci is None else list(self.far_ci),
            "frr_ci95": None if self.frr_ci is None else list(self.frr_ci), "false_accepts": self.false_accepts,
            "false_rejects": self.false_rejects, "warning": self.warning, "provenance": self.provenance.to_json(),
            "scale": self.scale, "interval": self.interval,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperatingPoint:
        def interval(v: Any) -> Interval | None:
            return None if v is None else (float(v[0]), float(v[1]))

        return cls(
            threshold=float(data["threshold"]), target=str(Target.parse(data["target"])), far=float(data["far"]),
            frr=float(data["frr"]), accuracy=float(data["accuracy"]), far_ci=interval(data.get("far_ci95")),
            frr_ci=interval(data.get("frr_ci95")), false_accepts=data.get("false_accepts"),
            false_rejects=data.get("false_rejects"), warning=data.get("warning"),
            provenance=Provenance.from_json(data.get("provenance") or {}), scale=str(data.get("scale", NATIVE)),
            interval=str(data.get("interval", CLOPPER_PEARSON)),
        )  # fmt: skip


#: The former name of :class:`OperatingPoint` (a threshold and what it achieved).
Threshold = OperatingPoint


def bootstrap_identity_intervals(
    accept: ArrayLike, genuine: ArrayLike, identities: ArrayLike, *, resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED, confidence: float = 0.95,
) -> tuple[Interval, Interval]:  # fmt: skip
    """95% intervals of the FAR and FRR of ``accept`` decisions that are honest about identities:
    trials of one identity are correlated (one writer's forgeries are all easy, or all hard), so
    the identities are resampled with replacement (``resamples`` times, seeded), each resample
    taking every trial of the identities it draws, and the rates' percentile interval is taken. A
    rate that is 0 in every resample would get the interval [0, 0]; so the interval returned is the
    hull of the bootstrap's and the Clopper–Pearson one: never narrower than the binomial interval,
    wider when identities cluster. ``identities``: one identity label per trial."""
    a, y = _np(accept).astype(bool).ravel(), _np(genuine).astype(bool).ravel()
    ids = np.asarray(identities).ravel()
    if not len(a) == len(y) == len(ids):
        raise ValueError(f"{len(a)} decisions, {len(y)} labels and {len(ids)} identities")
    _, owner = np.unique(ids, return_inverse=True)
    n = int(owner.max()) + 1 if len(owner) else 0
    # per identity: false accepts, impostor trials, false rejects, genuine trials
    fa = np.bincount(owner, a & ~y, n)
    imp = np.bincount(owner, ~y, n)
    fr = np.bincount(owner, ~a & y, n)
    gen = np.bincount(owner, y, n)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    tail = 100 * (1 - confidence) / 2

    def interval(errors: np.ndarray, trials: np.ndarray) -> Interval:
        total = weights @ trials
        rate = (weights @ errors)[total > 0] / total[total > 0]
        exact = calc_clopper_pearson(int(errors.sum()), int(trials.sum()), confidence)
        if len(rate) == 0:
            return exact
        lo, hi = np.percentile(rate, [tail, 100 - tail])
        return float(min(lo, exact[0])), float(max(hi, exact[1]))

    return interval(fa, imp), interval(fr, gen)


def measure(
    native: ArrayLike, genuine: ArrayLike, orientation: Orientation, threshold: float,
    identities: ArrayLike | None = None,
) -> dict[str, Any]:  # fmt: skip
    """FAR, FRR (with 95% intervals) and accuracy of deciding values of ``orientation`` at
    ``threshold`` (on the same scale); counts of pairs and errors. The intervals are Clopper–Pearson,
    or with ``identities`` (one label per trial) :func:`bootstrap_identity_intervals`; ``interval``
    says which."""
    scores = orientation.to_similarity(_np(native).astype(np.float64))
    t = float(orientation.to_similarity(threshold))
    r = calc_error_rates(scores, genuine, t)
    far_ci, frr_ci, kind = r.far_ci, r.frr_ci, CLOPPER_PEARSON
    if identities is not None:
        far_ci, frr_ci = bootstrap_identity_intervals(scores >= t, genuine, identities)
        kind = BOOTSTRAP_IDENTITY
    return {"threshold": float(threshold), "far": r.far, "far_ci95": list(far_ci), "frr": r.frr,
            "frr_ci95": list(frr_ci), "interval": kind, "accuracy": r.accuracy, "false_accepts": r.false_accepts,
            "impostor_pairs": r.impostors, "false_rejects": r.false_rejects, "genuine_pairs": r.genuine}  # fmt: skip


def fit_operating_point(
    native: ArrayLike,
    genuine: ArrayLike,
    orientation: Orientation,
    target: str | Target = "eer",
    *,
    provenance: Provenance | None = None,
    strict: bool = True,
    scale: str = NATIVE,
    identities: ArrayLike | None = None,
) -> OperatingPoint:
    """Fit a threshold on native values for ``genuine`` (bool, True for same-identity pairs).
    ``orientation`` is that of the values: the comparator's for ``scale="native"``, ``score`` for
    normalised scores (``scale`` names the normalisation; :func:`scale_orientation`).

    Targets: ``eer`` (where FAR = FRR, interpolated on the ROC), ``far=<x>`` (the most lenient
    threshold whose FAR on these pairs is at most x), ``frr=<x>`` (the strictest whose FRR is at most
    x), ``best_accuracy``. The point's FAR and FRR come with 95% Clopper–Pearson intervals,
    or, given ``identities`` (one label per trial), :func:`bootstrap_identity_intervals`.

    Raises DataError when the pairs are too few to show the target (see :meth:`Target.data_problem`;
    a FAR below 3/n needs more than n impostor pairs); ``strict=False`` fits anyway and records the
    problem in ``warning``. ``provenance`` gets the pair counts filled in.
    """
    t = Target.parse(target)
    label = target.strip() if isinstance(target, str) else str(t)
    v = _np(native).astype(np.float64).ravel()
    y = _np(genuine).astype(bool).ravel()
    if len(v) != len(y):
        raise ValueError(f"{len(v)} values but {len(y)} labels")
    n_gen, n_imp = int(y.sum()), int((~y).sum())
    if n_gen == 0 or n_imp == 0:
        raise DataError(f"{label}: calibration needs both genuine and impostor pairs; these data have "
                        f"{n_gen} genuine and {n_imp} impostor pairs")  # fmt: skip
    problem = t.data_problem(n_gen, n_imp, label)
    if problem and strict:
        raise DataError(problem)
    scores = orientation.to_similarity(v)
    if t.kind == "eer":
        _, s_threshold = calc_eer(scores, y)
    elif t.kind == "best_accuracy":
        _, s_threshold = calc_best_accuracy(scores, y)
    elif t.kind == "far":
        assert t.rate is not None
        _, s_threshold = calc_tar_at_far(scores, y, t.rate)
    else:
        assert t.rate is not None
        _, s_threshold = calc_threshold_at_frr(scores, y, t.rate)
    r = calc_error_rates(scores, y, s_threshold)
    far_ci, frr_ci, interval = r.far_ci, r.frr_ci, CLOPPER_PEARSON
    if identities is not None:
        far_ci, frr_ci = bootstrap_identity_intervals(scores >= s_threshold, y, identities)
        interval = BOOTSTRAP_IDENTITY
    base = provenance or Provenance(date=utc_now(), twinnet_version=__version__)
    prov = replace(base, genuine_pairs=n_gen, impostor_pairs=n_imp, pairs=n_gen + n_imp)
    return OperatingPoint(
        threshold=float(orientation.from_similarity(s_threshold)), target=str(t), far=r.far, frr=r.frr,
        accuracy=r.accuracy, far_ci=far_ci, frr_ci=frr_ci, false_accepts=r.false_accepts,
        false_rejects=r.false_rejects, provenance=prov, warning=problem, scale=scale, interval=interval,
    )  # fmt: skip


def calibrate_threshold(
    native: ArrayLike, same: ArrayLike, orientation: Orientation, far: float | None = None
) -> OperatingPoint:
    """Choose a threshold on native values for ``same`` (bool): for best accuracy with ``far=None``,
    else the most lenient one whose false-accept rate on these pairs is at most ``far``. Fits even
    on too few pairs (see ``warning``); :func:`fit_operating_point` refuses them."""
    return fit_operating_point(native, same, orientation, "best_accuracy" if far is None else Target("far", far),
                               strict=False)  # fmt: skip


# -- the calibration -------------------------------------------------------------------------------


@dataclass
class Calibration:
    """A model's named operating points (``default``, ``far=0.01``, ``strict``, …) in the native
    scale of its comparator, which one decides by default, and protocol-specific figures
    (``extra``, keyed by the calibration hook that made them)."""

    orientation: Orientation
    points: dict[str, OperatingPoint] = field(default_factory=dict)
    default: str = DEFAULT
    extra: dict[str, Any] = field(default_factory=dict)

    # -- lookup -------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The operating points' names, the default first."""
        return sorted(self.points, key=lambda n: n != self.default)

    def __iter__(self) -> Iterator[tuple[str, OperatingPoint]]:
        return ((n, self.points[n]) for n in self.names())

    def resolve(self, operating_point: str | None = None) -> str:
        """The stored name ``operating_point`` means: None and ``default`` mean the default; a target
        (``best_accuracy``, ``far=1e-2``) means the point fitted for it (how older files named their
        thresholds). Anything else is a ConfigError listing the known names."""
        if not self.points:
            raise ConfigError("this calibration has no operating points; fit one with twinnet.recalibrate")
        name = self.default if operating_point is None or (operating_point == DEFAULT and DEFAULT not in self.points) \
            else operating_point  # fmt: skip
        if name in self.points:
            return name
        try:
            wanted = str(Target.parse(name))
        except ValueError:
            wanted = None
        for n, p in self:
            if p.target == wanted:
                return n
        known = ", ".join(f"{n} (the default)" if n == self.default else n for n in self.names())
        raise ConfigError(f"unknown operating point {operating_point!r}; known: {known}")

    def point(self, operating_point: str | None = None) -> OperatingPoint:
        return self.points[self.resolve(operating_point)]

    def threshold(self, operating_point: str | None = None) -> float:
        """The threshold (native scale) of ``operating_point`` (None: the default)."""
        return self.point(operating_point).threshold

    def native_threshold(self, name: str | None = None) -> float:
        """:meth:`threshold` (its former name)."""
        return self.threshold(name)

    def orientation_of(self, operating_point: str | None = None) -> Orientation:
        """The orientation of the values ``operating_point`` decides on (its :attr:`OperatingPoint.scale`)."""
        return scale_orientation(self.orientation, self.point(operating_point).scale)

    def decide(self, values: ArrayLike, operating_point: str | None = None) -> np.ndarray:
        """Boolean "same" decisions at ``operating_point`` for values on its scale (native
        comparator values, or normalised scores for a point fitted on them)."""
        point = self.point(operating_point)
        orientation = scale_orientation(self.orientation, point.scale)
        return np.asarray(orientation.matches(_np(values).astype(np.float64), point.threshold))

    def find(
        self, protocol: str, settings: dict[str, Any] | None = None, keys: Sequence[str] = ()
    ) -> tuple[str, OperatingPoint] | None:
        """The first point (the default first) fitted with ``protocol`` whose ``settings`` agree on
        ``keys``, or None. Points of older files (no protocol) were fitted on validation pairs, so
        they count as ``verification``."""
        settings = settings or {}
        for name, p in self:
            if (p.provenance.protocol or "verification") != protocol:
                continue
            if all(p.provenance.settings.get(k) == settings.get(k) for k in keys):
                return name, p
        return None

    @property
    def rule(self) -> str:
        return self.orientation.rule

    # -- changes ------------------------------------------------------------------------------------

    def add(self, name: str, point: OperatingPoint, make_default: bool = False) -> None:
        """Store ``point`` as ``name`` (replacing a point of that name); the first point, or one
        added with ``make_default``, becomes the default."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"operating point name {name!r}: use letters, digits and _ . = + - "
                              "(starting with a letter or digit)")  # fmt: skip
        self.points[name] = point
        if make_default or len(self.points) == 1 or self.default not in self.points:
            self.default = name

    def remove(self, name: str) -> OperatingPoint:
        """Remove and return the point ``name`` (not the default: make another the default first)."""
        stored = self.resolve(name)
        if stored == self.default:
            raise ConfigError(f"operating point {stored!r} is the default; make another the default before removing it")
        return self.points.pop(stored)

    def set_default(self, name: str) -> None:
        self.default = self.resolve(name)

    # -- figures ------------------------------------------------------------------------------------

    def summary(self) -> list[dict[str, Any]]:
        """One row per operating point, the default first: name, default, target, threshold, FAR and
        FRR with their 95% intervals, pairs, protocol, date (for listings)."""
        rows = []
        for name, p in self:
            rows.append({
                "name": name, "default": name == self.default, "target": p.target, "threshold": p.threshold,
                "far": p.far, "far_ci95": None if p.far_ci is None else list(p.far_ci), "frr": p.frr,
                "frr_ci95": None if p.frr_ci is None else list(p.frr_ci),
                "genuine_pairs": p.provenance.genuine_pairs, "impostor_pairs": p.provenance.impostor_pairs,
                "protocol": p.provenance.protocol, "date": p.provenance.date, "warning": p.warning,
                "scale": p.scale, "interval": p.interval,
            })  # fmt: skip
        return rows

    @property
    def thresholds(self) -> dict[str, OperatingPoint]:
        """The points by name, and also by target where no point has that name (``best_accuracy``
        for the default of training): the former ``thresholds`` mapping."""
        out = dict(self.points)
        for _, p in self:
            out.setdefault(p.target, p)
        return out

    @property
    def n_pairs(self) -> int:
        """Pairs the default point was fitted on."""
        return self.point().provenance.n_pairs if self.points else 0

    @property
    def source(self) -> str:
        return self.point().provenance.source if self.points else ""

    # -- files --------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """``calibration.json``: ``format``, ``orientation``, ``rule``, ``default`` (a point's name),
        ``operating_points`` (name → point), ``extra``."""
        return {
            "format": FORMAT,
            "orientation": self.orientation.to_json(),
            "rule": self.rule,
            "default": self.default,
            "operating_points": {n: p.to_json() for n, p in self.points.items()},
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        """Read :meth:`to_json`'s layout, or the earlier ones: ``thresholds`` keyed by name with
        ``default`` naming one (its point becomes ``default``, the others keep their names), and the
        first one, whose thresholds were on similarities with the orientation as a flag."""
        if "operating_points" in data:
            stored = {n: OperatingPoint.from_json(p) for n, p in data["operating_points"].items()}
            return cls(Orientation.from_json(data["orientation"]), stored, data.get("default", DEFAULT),
                       dict(data.get("extra") or {}))  # fmt: skip
        orientation = Orientation.from_stored(data)
        legacy = "orientation" not in data  # the first layout: thresholds on similarities, native value beside
        old_default = data.get("default", "best_accuracy")
        prov = Provenance(pairs=int(data.get("n_pairs", 0)) or None, source=data.get("source", "validation"))
        points: dict[str, OperatingPoint] = {}
        for k, t in data["thresholds"].items():
            native = t.get("native_value")
            value = native if legacy and native is not None else t["value"]
            criterion = t.get("criterion", "best_accuracy")
            target = Target("far", float(t["target_far"])) if criterion == "far" and t.get("target_far") else \
                Target.parse(criterion if criterion in ("eer", "best_accuracy") else "best_accuracy")  # fmt: skip
            points[DEFAULT if k == old_default else k] = OperatingPoint(
                threshold=float(value), target=str(target), far=float(t["far"]), frr=float(t["frr"]),
                accuracy=float(t["accuracy"]), provenance=prov,
            )  # fmt: skip
        return cls(orientation, points, DEFAULT if old_default in data["thresholds"] else next(iter(points), DEFAULT),
                   dict(data.get("extra") or {}))  # fmt: skip


def calibrate(
    native: ArrayLike,
    same: ArrayLike,
    orientation: Orientation,
    far_targets: Sequence[float] = (1e-2, 1e-3),
    source: str = "validation",
    *,
    data: Dataset | None = None,
    protocol: str = "verification",
    settings: dict[str, Any] | None = None,
) -> Calibration:
    """What training calibrates on its validation pairs: ``default`` at best accuracy, and a point
    ``far=<x>`` at each target FAR. Those are fitted even where the pairs are too few to show the
    FAR (the point's ``warning`` says so). ``data`` (the validation data) adds its fingerprint and
    number of identities to the provenance."""
    v = _np(native).astype(np.float64)
    prov = Provenance(
        fingerprint=None if data is None else data_fingerprint(data),
        identities=None if data is None else len(np.unique(data.items.labels)),
        protocol=protocol, settings=dict(settings or {}), source=source, date=utc_now(), twinnet_version=__version__,
    )  # fmt: skip
    points = {DEFAULT: fit_operating_point(v, same, orientation, "best_accuracy", provenance=prov, strict=False)}
    for far in far_targets:
        target = Target("far", far)
        points[str(target)] = fit_operating_point(v, same, orientation, target, provenance=prov, strict=False)
    return Calibration(orientation, points, DEFAULT)
