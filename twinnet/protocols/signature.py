"""Writer-independent signature verification (``twinnet evaluate --protocol signature``).

For each test writer, ``references`` genuine signatures (drawn with a seed) are that writer's
references; every other genuine signature and every skilled forgery of that writer is compared
with them: the nearest reference (``min``; the most similar, whatever the comparator's
orientation) or the ``mean`` value. Reported: EER pooled over writers and the mean of per-writer
EERs, ROC AUC, and FAR/FRR (with 95% intervals that resample writers, ``bootstrap-identity``) at
the model's stored operating point for this protocol and these ``references``, ``aggregate`` and
``normalization`` (training fits one, named ``signature``, at the EER of the validation writers;
:func:`twinnet.operating.recalibrate` fits others). No threshold is ever chosen on the writers being
evaluated, except the figures named ``oracle_…``, which say so.

**Writer-dependent normalisation** (``normalization``: ``zscore`` or ``shift``, from
:data:`twinnet.normalize.REFERENCE_NORMALIZATIONS`): each questioned signature's similarity to its
writer's references is normalised by how those references score against each other (leave-one-out,
same aggregation), so that one threshold fits writers whose signatures vary much and writers whose
signatures hardly vary. The scores are then similarities (whatever the comparator's orientation),
and an operating point fitted on them records the normalisation in its settings (``normalization``)
and its scale (``writer-zscore``), so evaluate, ``calibrate --check`` and ``calibrate`` decide on the
same scale. ``normalization=None`` (the default) means: as the model's stored signature point was
fitted (``none`` when it has none); ``none`` means raw comparator values.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from twinnet._version import __version__
from twinnet.calibrate import (
    NATIVE,
    OperatingPoint,
    Provenance,
    data_fingerprint,
    fit_operating_point,
    measure,
    scale_orientation,
    utc_now,
)
from twinnet.data.items import ItemSet
from twinnet.data.sources import Dataset
from twinnet.embedding import embed_batches
from twinnet.errors import DataError
from twinnet.metrics import calc_best_accuracy, calc_eer, calc_roc_auc
from twinnet.model import AnyTwin
from twinnet.normalize import REFERENCE_NORMALIZATIONS, ReferenceNormalization
from twinnet.protocols.base import DecisionScores, EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.runtime import Stream, numpy_rng

Aggregate = Literal["min", "mean"]
#: ``normalization`` for raw comparator values.
NO_NORMALIZATION = "none"


def signature_scores(
    model: AnyTwin,
    items: ItemSet,
    references: int = 5,
    aggregate: Aggregate = "min",
    seed: int = 0,
    normalization: ReferenceNormalization | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, genuine flags and writer ids of every questioned (non-reference) signature: native
    comparator values, or with a ``normalization`` the writer-normalised similarities."""
    if "writer" not in items.attributes or "genuine" not in items.attributes:
        raise DataError("signature evaluation needs items with writer and genuine attributes (a signature reader)")
    writers, genuine = items.attributes["writer"], items.attributes["genuine"]
    emb = embed_batches(model, items)
    comparator, orientation = model.comparator, model.comparator.orientation
    rng = numpy_rng(seed, Stream.SIGNATURE_REFERENCES)
    values: list[float] = []
    flags: list[bool] = []
    owner: list[int] = []
    with torch.no_grad():
        for w in np.unique(writers):
            mine = np.nonzero(writers == w)[0]
            real, fakes = mine[genuine[mine]], mine[~genuine[mine]]
            if len(real) <= references:
                continue  # not enough genuine signatures for references and questioned ones
            chosen = rng.permutation(real)
            refs, questioned = chosen[:references], np.r_[chosen[references:], fakes]
            matrix = comparator.pairwise(emb[questioned].to(model.device), emb[refs].to(model.device)).float().cpu()
            per_question = orientation.best(matrix, 1) if aggregate == "min" else matrix.mean(1)
            if normalization is None:
                values += per_question.tolist()
            else:  # similarities, normalised by the writer's references scored against each other
                among = comparator.pairwise(emb[refs].to(model.device), emb[refs].to(model.device)).float().cpu()
                stats = normalization.statistics(orientation.to_similarity(among.numpy()), aggregate)
                values += normalization.apply(orientation.to_similarity(per_question.numpy()), stats).tolist()
            flags += genuine[questioned].tolist()
            owner += [int(w)] * len(questioned)
    if not values:
        raise DataError(f"no writer has more than {references} genuine signatures")
    return np.asarray(values), np.asarray(flags, bool), np.asarray(owner)


@register_protocol("signature")
class SignatureProtocol(EvaluationProtocol):
    """Writer-independent verification of the writers in the data (all of them test writers: point
    it at writers the model never saw). Primary metric the pooled EER (smaller is better)."""

    primary_metric = "eer"
    greater_is_better = False
    summary = "writer-independent signature verification: EER, per-writer EER (--references, --aggregate)"

    def __init__(self, references: int = 5, aggregate: Aggregate = "min", seed: int = 0,
                 pairs_file: str | None = None, normalization: str | None = None) -> None:  # fmt: skip
        if aggregate not in ("min", "mean"):
            raise ValueError(f"aggregate: {aggregate!r} is not one of min, mean")
        if references < 1:
            raise ValueError(f"references must be at least 1, not {references}")
        if normalization is not None and normalization != NO_NORMALIZATION:
            kind = REFERENCE_NORMALIZATIONS.get(normalization, field="normalization")
            if references < kind.min_references:  # type: ignore[attr-defined]
                raise ValueError(f"normalization {normalization} needs at least "
                                 f"{kind.min_references} references, not {references}")  # type: ignore[attr-defined]  # fmt: skip
        self.references, self.aggregate, self.seed, self.pairs_file = references, aggregate, seed, pairs_file
        self.normalization = normalization

    decision_keys = ("references", "aggregate", "normalization")

    def normalization_for(self, model: AnyTwin) -> str:
        """The normalisation this protocol scores ``model`` with: the one asked for, else the one the
        model's stored signature point (for these references and aggregate) was fitted with, else
        ``none``."""
        if self.normalization is not None:
            return self.normalization
        found = None if model.calibration is None else \
            model.calibration.find(self.name, {"references": self.references, "aggregate": self.aggregate},
                                   ("references", "aggregate"))  # fmt: skip
        return str((found[1].provenance.settings.get("normalization") if found else None) or NO_NORMALIZATION)

    def _normalizer(self, model: AnyTwin) -> ReferenceNormalization | None:
        name = self.normalization_for(model)
        return None if name == NO_NORMALIZATION else REFERENCE_NORMALIZATIONS.build(name, field="normalization")

    def _settings(self, model: AnyTwin) -> dict[str, Any]:
        """What a stored point is matched on and records: ``normalization`` only when there is one
        (points of raw values, and those of files older than normalisation, have none)."""
        name = self.normalization_for(model)
        settings: dict[str, Any] = {"references": self.references, "aggregate": self.aggregate, "seed": self.seed}
        if name != NO_NORMALIZATION:
            settings["normalization"] = name
        return settings

    def stored_operating_point(self, model: AnyTwin) -> tuple[str, OperatingPoint] | None:
        """The model's point for this protocol, these references and aggregate and this normalisation."""
        if model.calibration is None:
            return None
        return model.calibration.find(self.name, self._settings(model), self.decision_keys)

    def stored_decision(self, model: AnyTwin) -> tuple[float, str] | None:
        """The threshold for these settings and where it comes from: the model's operating point for
        this protocol (``operating point <name>``), else the threshold older training runs kept in
        ``calibration.extra`` (``training calibration``, raw values only); None when the model has
        neither."""
        found = self.stored_operating_point(model)
        if found is not None:
            return found[1].threshold, f"operating point {found[0]}"
        if self.normalization_for(model) != NO_NORMALIZATION:
            return None
        stored = (model.calibration.extra.get(self.name) if model.calibration else None) or {}
        same_setting = stored.get("references") == self.references and stored.get("aggregate") == self.aggregate \
            and stored.get("normalization", NO_NORMALIZATION) == NO_NORMALIZATION  # fmt: skip
        if same_setting and stored.get("threshold") is not None:
            return float(stored["threshold"]), "training calibration"
        return None

    def stored_threshold(self, model: AnyTwin) -> float | None:
        """The threshold stored for this protocol and these settings (:meth:`stored_decision`)."""
        found = self.stored_decision(model)
        return None if found is None else found[0]

    def decision_scores(self, model: AnyTwin, data: Dataset) -> DecisionScores:
        """Every questioned signature against its writer's ``references`` (aggregated; normalised
        by the writer's references when a normalisation applies), grouped by writer."""
        normalization = self._normalizer(model)
        values, genuine, owner = signature_scores(model, data.items, self.references, self.aggregate, self.seed,
                                                  normalization)  # fmt: skip
        scale = NATIVE if normalization is None else normalization.scale
        return DecisionScores(values, genuine, len(np.unique(owner)), self._settings(model), scale, owner)

    def run(
        self, model: AnyTwin, items: ItemSet, threshold: float | None = None, threshold_source: str = "given"
    ) -> ProtocolResult:
        """The figures at ``threshold``, on the scale this protocol scores on (native values, or the
        writer-normalised similarities)."""
        normalization = self._normalizer(model)
        native, genuine, owner = signature_scores(model, items, self.references, self.aggregate, self.seed,
                                                  normalization)  # fmt: skip
        scale = NATIVE if normalization is None else normalization.scale
        orientation = scale_orientation(model.comparator.orientation, scale)
        scores = orientation.to_similarity(native)
        eer, eer_t = calc_eer(scores, genuine)
        per_writer = [calc_eer(scores[owner == w], genuine[owner == w])[0] for w in np.unique(owner)
                      if genuine[owner == w].any() and (~genuine[owner == w]).any()]  # fmt: skip
        metrics: dict[str, Any] = {
            "eer": eer, "eer_threshold": float(orientation.from_similarity(eer_t)),
            "mean_writer_eer": float(np.mean(per_writer)), "roc_auc": calc_roc_auc(scores, genuine),
            "test_writers": len(np.unique(owner)), "genuine": int(genuine.sum()), "forgeries": int((~genuine).sum()),
            "references": self.references, "aggregate": self.aggregate, "normalization": self.normalization_for(model),
            "scale": scale, "far": None, "frr": None, "threshold": None, "threshold_source": None,
        }  # fmt: skip
        if threshold is not None:
            m = measure(native, genuine, orientation, threshold, identities=owner)
            metrics.update(far=m["far"], far_ci95=m["far_ci95"], frr=m["frr"], frr_ci95=m["frr_ci95"],
                           interval=m["interval"], threshold=float(threshold),
                           threshold_source=threshold_source)  # fmt: skip
        return self.result(metrics)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        """The protocol at the model's stored threshold for it (never one chosen on these writers).
        With ``pairs_file``, the pairs' accuracy at the model's operating point for pairs, and, named
        as such, the oracle best accuracy any threshold gives on those very pairs."""
        stored = self.stored_decision(model)
        result = self.run(model, data.items, *(stored or (None,)))
        if self.pairs_file is not None:
            pair_point = model.calibration.find("verification") if model.calibration is not None else None
            if pair_point is not None and pair_point[1].scale != NATIVE:  # these pairs are scored natively
                pair_point = None
            threshold, source = (None, "") if pair_point is None else \
                (pair_point[1].threshold, f"operating point {pair_point[0]}")  # fmt: skip
            result.details["pairs"] = signature_pair_figures(model, data.items, self.pairs_file, threshold, source)
        return result

    def calibrate(self, model: AnyTwin, data: Dataset) -> dict[str, Any]:
        """The protocol's EER threshold on validation writers, for these references and aggregate:
        stored as the operating point ``signature`` of ``model.calibration`` (with its FAR/FRR,
        intervals and provenance) when the model has a calibration, and returned for
        ``calibration.extra``."""
        scores = self.decision_scores(model, data)
        prov = Provenance(fingerprint=data_fingerprint(data), identities=scores.identities, protocol=self.name,
                          settings=scores.settings, source="validation", date=utc_now(),
                          twinnet_version=__version__)  # fmt: skip
        point = fit_operating_point(scores.native, scores.genuine,
                                    scale_orientation(model.comparator.orientation, scores.scale), "eer",
                                    provenance=prov, strict=False, scale=scores.scale,
                                    identities=scores.groups)  # fmt: skip
        if model.calibration is not None:
            model.calibration.add(self.name, point)
        return {"threshold": point.threshold, "references": self.references, "aggregate": self.aggregate,
                "normalization": self.normalization_for(model), "scale": scores.scale,
                "criterion": "EER on validation writers", "operating_point": self.name}  # fmt: skip


def evaluate_signatures(
    model: AnyTwin, items: ItemSet, references: int = 5, aggregate: Aggregate = "min", seed: int = 0,
    threshold: float | None = None,
) -> ProtocolResult:  # fmt: skip
    """The writer-independent protocol on ``items`` (test writers only); FAR/FRR at ``threshold``."""
    return SignatureProtocol(references, aggregate, seed).run(model, items, threshold)


def calibrate_signature_threshold(
    model: AnyTwin, val_items: ItemSet, references: int = 5, aggregate: Aggregate = "min", seed: int = 0
) -> float:
    """The EER threshold of the protocol on validation writers (native scale)."""
    return SignatureProtocol(references, aggregate, seed).calibrate(model, Dataset(val_items))["threshold"]


def _pair_values(model: AnyTwin, items: ItemSet, pairs_csv: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Native values, ``same`` flags and writers of the pairs of a SigComp2011 pairs file that name
    images of ``items``."""
    path = Path(pairs_csv)
    by_name = {Path(n).parent.name + "/" + Path(n).name: i for i, n in enumerate(items.names)}
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if line_no == 1 and row and row[0] == "img1":
                continue
            if len(row) != 3 or row[2] not in ("0", "1"):
                raise DataError(f"{path}:{line_no}: expected img1,img2,target with target 0 or 1")
            first, second = by_name.get(row[0]), by_name.get(row[1])
            if first is not None and second is not None:
                rows.append((first, second, row[2] == "0"))  # target 0 = two genuine = same writer's signature
    if not rows:
        raise DataError(f"{path}: none of its pairs name images of these items")
    a, b, same = (np.asarray(column) for column in zip(*rows))
    emb = embed_batches(model, items)
    with torch.no_grad():
        native = model.comparator(emb[torch.from_numpy(a)].to(model.device),
                                  emb[torch.from_numpy(b)].to(model.device)).float().cpu().numpy()  # fmt: skip
    return native, same.astype(bool), items.attributes["writer"][a]


def signature_pair_figures(
    model: AnyTwin, items: ItemSet, pairs_csv: str | Path, threshold: float | None = None,
    threshold_source: str = "given",
) -> dict[str, Any]:  # fmt: skip
    """Figures of SigComp2011's pairs: ``accuracy`` (and FAR/FRR with 95% intervals) at a
    ``threshold`` chosen elsewhere, when one is given, and ``oracle_best_accuracy``: the best any
    threshold gives on these very pairs (chosen on their labels, so optimistic), with its threshold."""
    native, same, _ = _pair_values(model, items, pairs_csv)
    orientation = model.comparator.orientation
    oracle, t = calc_best_accuracy(orientation.to_similarity(native), same)
    out: dict[str, Any] = {"pairs": len(native), "oracle_best_accuracy": oracle,
                           "oracle_threshold": float(orientation.from_similarity(t))}  # fmt: skip
    if threshold is not None:
        m = measure(native, same, orientation, threshold)
        out.update(accuracy=m["accuracy"], far=m["far"], far_ci95=m["far_ci95"], frr=m["frr"], frr_ci95=m["frr_ci95"],
                   threshold=float(threshold), threshold_source=threshold_source)  # fmt: skip
    return out


def signature_pair_accuracy(
    model: AnyTwin, items: ItemSet, pairs_csv: str | Path, writers: set[int] | None = None,
    threshold: float | None = None, calibration_writers: set[int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Accuracy on SigComp2011's ``train_data.csv`` pairs (``target`` 1 = a genuine signature and a
    forgery, 0 = two genuine signatures of one writer), restricted to pairs of ``writers``. The
    threshold is ``threshold`` (native scale) if given; otherwise it is chosen for best accuracy on
    the pairs of ``calibration_writers``. With neither, the threshold is chosen on the scored pairs
    themselves: an optimistic figure, so it is reported as ``oracle_best_accuracy`` (with
    ``threshold_source: oracle``), never as ``accuracy``."""
    native, same, pair_writer = _pair_values(model, items, pairs_csv)
    orientation = model.comparator.orientation
    scores = orientation.to_similarity(native)

    def select(ws: set[int] | None) -> np.ndarray:
        return np.ones(len(native), bool) if ws is None else np.isin(pair_writer, sorted(ws))

    if threshold is None:
        cal = select(calibration_writers)
        _, t = calc_best_accuracy(scores[cal], same[cal])
        source = "oracle" if calibration_writers is None else "calibration writers"
    else:
        t = orientation.to_similarity(threshold)
        source = "given"
    test = select(writers)
    key = "oracle_best_accuracy" if source == "oracle" else "accuracy"
    return {
        key: float(((scores[test] >= t) == same[test]).mean()),
        "pairs": int(test.sum()),
        "threshold": float(orientation.from_similarity(t)),
        "threshold_source": source,
    }
