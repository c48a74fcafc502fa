"""Operating points on a user's own data: re-fitting a model's threshold with a protocol's own
pairing (:func:`recalibrate`) and checking the stored points against new labelled data
(:func:`drift_report`). The thresholds themselves live in :mod:`twinnet.calibrate`; this module
joins them with models and protocols, so the calibration stays below both."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from twinnet._version import __version__
from twinnet.calibrate import (
    BOOTSTRAP_IDENTITY,
    CLOPPER_PEARSON,
    DEFAULT,
    Calibration,
    Interval,
    OperatingPoint,
    Provenance,
    Target,
    data_fingerprint,
    fit_operating_point,
    measure,
    scale_orientation,
    utc_now,
)
from twinnet.data.sources import Dataset
from twinnet.embedding import embed_batches
from twinnet.errors import ConfigError, DataError
from twinnet.model import AnyTwin
from twinnet.normalize import KINDS, ScoreNormalizer
from twinnet.protocols.base import build_protocol, decision_protocol_names

# -- on a user's data ------------------------------------------------------------------------------


def fit_cohort_normalizer(model: AnyTwin, cohort: Dataset, kind: str = "snorm") -> ScoreNormalizer:
    """Give ``model`` a cohort normaliser (``znorm``, ``tnorm`` or ``snorm``) whose cohort is the
    embeddings (side b) of every item of ``cohort``: other identities than the ones decided on, e.g.
    the enrolled population. It is saved with the model; from then on :func:`twinnet.inference.score`
    normalises every pair, and thresholds fitted by :func:`recalibrate` are on the normalised scale
    (points fitted before stay on the native one, and still decide on native values)."""
    if kind not in KINDS:
        raise ConfigError(f"--normalize: {kind!r} is not one of {', '.join(KINDS)}")
    where = cohort.source or "the cohort"
    if len(cohort.items) < 2:
        raise DataError(f"{where}: a cohort needs at least two items, not {len(cohort.items)}")
    embeddings = embed_batches(model, cohort.items, side="b" if model.is_half_twin else "a")
    normalizer = ScoreNormalizer(model.comparator, embeddings.cpu().numpy(), kind)
    model.normalizer = normalizer  # type: ignore[assignment]
    return normalizer


def _decision_scores(model: AnyTwin, data: Dataset, protocol: str, params: dict[str, Any] | None) -> Any:
    proto = build_protocol(protocol, params, field="protocol")
    proto.check_data(data)
    scores = proto.decision_scores(model, data)
    if scores is None:
        raise ConfigError(f"the {protocol} protocol makes no accept/reject decision, so it has no threshold to "
                          f"calibrate; protocols that do: {', '.join(decision_protocol_names())}")  # fmt: skip
    return proto, scores


def recalibrate(
    model: AnyTwin,
    data: Dataset,
    protocol: str = "verification",
    target: str | Target = "eer",
    name: str = DEFAULT,
    params: dict[str, Any] | None = None,
    *,
    make_default: bool | None = None,
) -> OperatingPoint:
    """Fit an operating point on the user's labelled ``data`` and store it in ``model.calibration``.

    The data are scored with the protocol's own pairing (``verification``: the data's pairs, or
    balanced pairs drawn with its seed; ``signature``: ``references`` genuine signatures per writer
    against every other signature of that writer, aggregated), then the threshold is fitted at
    ``target`` (``eer``, ``far=1e-3``, ``frr=0.05``, ``best_accuracy``; DataError when the data are
    too few to show it). ``params`` are the protocol's options. Scores the protocol normalises
    (a signature ``normalization``, a model's cohort normaliser) give a threshold on their scale
    (the point's ``scale``). Where the protocol knows each trial's identity, the point's intervals
    resample identities (``interval: bootstrap-identity``), else they are Clopper–Pearson. The
    model gets a calibration if it has none. The point becomes the default when ``make_default``
    says so, or by default when it is named ``default`` or is the first. Returns the point
    (FAR/FRR with 95% intervals, provenance).
    """
    proto, scores = _decision_scores(model, data, protocol, params)
    prov = Provenance(
        fingerprint=data_fingerprint(data), identities=scores.identities, protocol=proto.name,
        settings=dict(scores.settings), source=data.source or "recalibration", date=utc_now(),
        twinnet_version=__version__,
    )  # fmt: skip
    native = model.comparator.orientation
    point = fit_operating_point(scores.native, scores.genuine, scale_orientation(native, scores.scale), target,
                                provenance=prov, scale=scores.scale, identities=scores.groups)  # fmt: skip
    if model.calibration is None:
        model.calibration = Calibration(native)
    model.calibration.add(name, point, make_default=name == DEFAULT if make_default is None else make_default)
    return point


@dataclass(frozen=True)
class DriftCheck:
    """One operating point measured on new labelled data, against what it measured at calibration."""

    name: str
    target: str
    threshold: float
    far: float | None
    far_ci: Interval | None
    frr: float | None
    frr_ci: Interval | None
    calibrated_far: float
    calibrated_far_ci: Interval | None
    calibrated_frr: float
    calibrated_frr_ci: Interval | None
    drifted: bool | None
    """True when a measured 95% interval does not overlap the calibration's; None when not checked
    (the point was fitted with another protocol or other settings)."""
    message: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("far_ci", "frr_ci", "calibrated_far_ci", "calibrated_frr_ci"):
            ci = out.pop(k)
            out[k + "95"] = None if ci is None else list(ci)
        return out


@dataclass(frozen=True)
class DriftReport:
    """:func:`drift_report`'s answer: the data measured, and one check per stored operating point."""

    protocol: str
    settings: dict[str, Any]
    fingerprint: str
    genuine_pairs: int
    impostor_pairs: int
    checks: list[DriftCheck]
    interval: str = CLOPPER_PEARSON
    """How the measured intervals were computed (``bootstrap-identity`` where the data carry identities)."""

    @property
    def drifted(self) -> bool:
        return any(c.drifted for c in self.checks)

    @property
    def message(self) -> str:
        return "\n".join(c.message for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "settings": self.settings, "fingerprint": self.fingerprint,
                "genuine_pairs": self.genuine_pairs, "impostor_pairs": self.impostor_pairs, "drifted": self.drifted,
                "interval": self.interval, "checks": [c.to_json() for c in self.checks]}  # fmt: skip


def _drift_check(
    name: str, p: OperatingPoint, measured: tuple[float, Interval, float, Interval] | None, message: str,
    drifted: bool | None = None,
) -> DriftCheck:  # fmt: skip
    far, far_ci, frr, frr_ci = measured if measured is not None else (None, None, None, None)
    return DriftCheck(name=name, target=p.target, threshold=p.threshold, far=far, far_ci=far_ci, frr=frr,
                      frr_ci=frr_ci, calibrated_far=p.far, calibrated_far_ci=p.far_ci, calibrated_frr=p.frr,
                      calibrated_frr_ci=p.frr_ci, drifted=drifted, message=message)  # fmt: skip


def _overlap(a: Interval, b: Interval) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _fmt(rate: float, ci: Interval | None) -> str:
    return f"{rate:.4f}" if ci is None else f"{rate:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def drift_report(
    model: AnyTwin, data: Dataset, protocol: str = "verification", params: dict[str, Any] | None = None
) -> DriftReport:
    """FAR and FRR (with 95% intervals: resampling identities where the protocol knows them, else
    Clopper–Pearson) of every stored operating point on the
    labelled ``data``, scored with ``protocol``'s pairing, and whether each has *drifted*: a measured
    interval that does not overlap the one measured at calibration (or, for points of older files
    without intervals, that does not hold the calibrated rate) means the population differs from
    the calibration data, so re-calibrate on it (:func:`recalibrate`). Points fitted with another
    protocol or other settings (``references``, ``aggregate``) are listed but not checked."""
    if model.calibration is None or not model.calibration.points:
        raise ConfigError("this model has no operating points to check; calibrate it first (twinnet.recalibrate)")
    proto, scores = _decision_scores(model, data, protocol, params)
    keys = tuple(getattr(proto, "decision_keys", ()))
    genuine = np.asarray(scores.genuine, bool)
    checks = []
    for name, p in model.calibration:
        fitted_with = p.provenance.protocol or "verification"
        mismatch = [k for k in keys if p.provenance.settings.get(k) != scores.settings.get(k)]
        values = scores.on(p.scale)
        if values is None and "scale" not in mismatch:
            mismatch.append("scale")
        if fitted_with != proto.name or mismatch:
            why = f"was fitted with the {fitted_with} protocol" if fitted_with != proto.name else \
                "was fitted with " + ", ".join(
                    f"{k}={p.scale if k == 'scale' else p.provenance.settings.get(k)!r}" for k in mismatch)  # fmt: skip
            checks.append(_drift_check(name, p, None, f"{name}: not checked: it {why}"))
            continue
        orientation = scale_orientation(model.comparator.orientation, p.scale)
        m = measure(values, genuine, orientation, p.threshold, identities=scores.groups)
        far_ci, frr_ci = (m["far_ci95"][0], m["far_ci95"][1]), (m["frr_ci95"][0], m["frr_ci95"][1])
        off = [what for what, measured, calibrated in (("FAR", far_ci, p.far_ci or (p.far, p.far)),
                                                       ("FRR", frr_ci, p.frr_ci or (p.frr, p.frr)))
               if not _overlap(measured, calibrated)]  # fmt: skip
        rates = (f"FAR {_fmt(m['far'], far_ci)} (calibrated {_fmt(p.far, p.far_ci)}), "
                 f"FRR {_fmt(m['frr'], frr_ci)} (calibrated {_fmt(p.frr, p.frr_ci)})")  # fmt: skip
        if off:
            message = (f"{name} ({p.target}): drifted: {rates}; the {' and '.join(off)} interval(s) do not "
                       "overlap the calibration's, so this population differs from the calibration data: "
                       "re-calibrate on it")  # fmt: skip
        else:
            message = f"{name} ({p.target}): holds: {rates}"
        checks.append(_drift_check(name, p, (m["far"], far_ci, m["frr"], frr_ci), message, drifted=bool(off)))
    return DriftReport(proto.name, dict(scores.settings), data_fingerprint(data), int(genuine.sum()),
                       int((~genuine).sum()), checks,
                       CLOPPER_PEARSON if scores.groups is None else BOOTSTRAP_IDENTITY)  # fmt: skip
