"""Speaker verification over trials, and open-set speaker identification through a gallery.

``speaker`` (verification): trials are the lines of a trial list (``label enrol.wav test.wav``, the
``trials`` data format) or are built from a folder of speakers: **text-independent** trials pair
every two clips; **text-dependent** trials only clips that say the same words (the item attribute
``utterance``, as with a wake word). For each: EER, the normalised minimum detection cost
minDCF at ``p_target`` 0.01 and 0.05 (``C_miss = C_fa = 1``, as NIST SRE and VoxSRC report it) and
the accuracy, FAR and FRR at the model's stored threshold. With ``cohort`` (a folder of other,
e.g. training, speakers) the scores are also given after adaptive s-norm: each side's statistics
are those of its ``top_n`` closest cohort utterances (Matejka et al. 2017), reusing
:class:`twinnet.normalize.ScoreNormalizer`.

``speaker_id`` (identification): ``enrol`` clips of a ``known`` share of the speakers go into a fresh
gallery, as one template per clip (``templates: all``) or as their normalised mean
(``templates: mean``); every other clip is a query. Rank-1 and DIR@FAR (primary DIR@FAR=1%).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from twinnet.calibrate import NATIVE
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.data.sources import Dataset, read_dataset
from twinnet.embedding import embed_batches
from twinnet.errors import DataError
from twinnet.metrics import calc_eer
from twinnet.model import AnyTwin
from twinnet.normalize import ScoreNormalizer, Stats
from twinnet.protocols.base import DecisionScores, EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.protocols.openset import OpenSetProtocol, open_set_rates
from twinnet.protocols.verification import calibrated_decisions, score_pairs

Mode = Literal["text_independent", "text_dependent"]
MODES: tuple[Mode, ...] = ("text_independent", "text_dependent")


def min_dcf(scores: Any, target: Any, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[float, float]:
    """The normalised minimum detection cost over all thresholds, and its threshold:
    ``min_t (C_miss·P_miss(t)·p + C_fa·P_fa(t)·(1 − p)) / min(C_miss·p, C_fa·(1 − p))``, accepting
    ``score ≥ t`` (larger scores = more alike). 1.0 is the cost of always rejecting (or accepting)."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(target, bool).ravel()
    if len(s) != len(y) or not y.any() or y.all():
        raise DataError("minDCF needs target and non-target trials, one label per score")
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), not {p_target}")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # accepting the first k scores, k = 0..n (only where the next score differs: ties go together)
    tp = np.r_[0, np.cumsum(y)]
    fp = np.r_[0, np.cumsum(~y)]
    cut = np.r_[True, s[1:] != s[:-1], True]  # k where a threshold can fall
    k = np.nonzero(cut)[0]
    p_miss = 1 - tp[k] / y.sum()
    p_fa = fp[k] / (~y).sum()
    cost = (c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)) / min(c_miss * p_target, c_fa * (1 - p_target))
    best = int(np.argmin(cost))
    kk = k[best]
    threshold = float(s[kk - 1]) if kk > 0 else float("inf")
    return float(cost[best]), threshold


def utterance_trials(items: ItemSet, mode: Mode, max_trials: int | None = None, seed: int = 0) -> Pairs:
    """Trials among labelled clips: every pair of two clips (``text_independent``) or of two clips
    of the same utterance (``text_dependent``); with ``max_trials``, every target trial and a seeded
    sample of the non-targets up to that total."""
    n = len(items)
    a, b = np.triu_indices(n, k=1)
    if mode == "text_dependent":
        words = items.attributes.get("utterance")
        if words is None:
            raise DataError("text-dependent trials need the utterance of every clip (the audio format gives it)")
        keep = words[a] == words[b]
        a, b = a[keep], b[keep]
    same = items.labels[a] == items.labels[b]
    if max_trials is not None and len(a) > max_trials:
        rng = np.random.default_rng(seed)
        non = np.nonzero(~same)[0]
        room = max(0, max_trials - int(same.sum()))
        picked = np.sort(np.r_[np.nonzero(same)[0], rng.choice(non, min(room, len(non)), replace=False)])
        a, b, same = a[picked], b[picked], same[picked]
    if not same.any() or same.all():
        raise DataError(f"{mode.replace('_', '-')} trials: need target and non-target trials (two or more "
                        "speakers with two or more clips each)")  # fmt: skip
    return Pairs(a.astype(np.int64), b.astype(np.int64), same)


class AdaptiveSNorm(ScoreNormalizer):
    """S-norm whose statistics for each embedding are those of its ``top_n`` most similar cohort
    members (adaptive s-norm); ``top_n=None``: the whole cohort (plain s-norm)."""

    def __init__(self, comparator: Any, cohort: Any, top_n: int | None = 200, eps: float = 1e-6) -> None:
        super().__init__(comparator, cohort, "snorm", eps)
        if top_n is not None and top_n < 2:
            raise ValueError(f"top_n must be at least 2, not {top_n}")
        self.top_n = top_n

    def stats(self, embeddings: Any) -> Stats:
        if self.top_n is None or self.top_n >= len(self.cohort):
            return super().stats(embeddings)
        sim = self.cohort_similarities(embeddings)
        top = -np.partition(-sim, self.top_n - 1, axis=1)[:, : self.top_n]
        return top.mean(1), np.maximum(top.std(1), self.eps)


def trial_metrics(similarity: np.ndarray, same: np.ndarray, p_targets: Sequence[float]) -> dict[str, float]:
    """EER and minDCF of similarity scores (larger = same speaker)."""
    eer, _ = calc_eer(similarity, same)
    out = {"eer": float(eer), "n_trials": len(same), "n_targets": int(np.sum(same))}
    for p in p_targets:
        out[f"min_dcf_{_pkey(p)}"] = min_dcf(similarity, same, p)[0]
    return out


def _pkey(p: float) -> str:
    return f"{p:.2f}".replace("0.", "0").replace(".", "")  # 0.01 → 001, 0.05 → 005


@register_protocol("speaker")
class SpeakerVerificationProtocol(EvaluationProtocol):
    """Speaker verification: EER and minDCF on text-independent and text-dependent trials (or on the
    trials of a trial list), calibrated accuracy, optional adaptive s-norm; primary: text-independent EER."""

    primary_metric = "text_independent.eer"
    greater_is_better = False
    needs = "labels_or_pairs"
    summary = "speaker verification: EER, minDCF(0.01, 0.05) on text-independent and text-dependent trials"

    def __init__(self, modes: Sequence[str] = MODES, p_targets: Sequence[float] = (0.01, 0.05),
                 max_trials: int | None = 200_000, seed: int = 0, cohort: str | None = None,
                 top_n: int | None = 200) -> None:  # fmt: skip
        for m in modes:
            if m not in MODES:
                raise ValueError(f"modes: {m!r} is not one of {', '.join(MODES)}")
        self.modes_: tuple[Mode, ...] = tuple(m for m in MODES if m in modes)
        self.p_targets = tuple(float(p) for p in p_targets)
        self.max_trials, self.seed, self.cohort, self.top_n = max_trials, seed, cohort, top_n

    def trials(self, data: Dataset) -> dict[str, Pairs]:
        if data.pairs is not None:
            return {"trials": data.pairs}
        return {m: utterance_trials(data.items, m, self.max_trials, self.seed) for m in self.modes_
                if m == "text_independent" or "utterance" in data.items.attributes}  # fmt: skip

    def normalizer(self, model: AnyTwin) -> AdaptiveSNorm | None:
        if self.cohort is None:
            return None
        cohort = read_dataset(self.cohort, model.input_spec("a"), "audio", field="cohort")
        return AdaptiveSNorm(model.comparator, embed_batches(model, cohort.items).numpy(), self.top_n)

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        return self.evaluate_embeddings(model, data, embed_batches(model, data.items), self.normalizer(model))

    def evaluate_embeddings(
        self, model: AnyTwin, data: Dataset, embeddings: torch.Tensor, normalizer: ScoreNormalizer | None = None
    ) -> ProtocolResult:
        """The protocol on precomputed ``embeddings`` of ``data.items`` (with an s-norm ``normalizer``)."""
        orientation = model.comparator.orientation
        metrics: dict[str, Any] = {}
        details: dict[str, Any] = {}
        stats: tuple[np.ndarray, np.ndarray] | None = None
        for mode, pairs in self.trials(data).items():
            native = score_pairs(model, embeddings, embeddings, pairs)
            figures: dict[str, Any] = trial_metrics(np.asarray(orientation.to_similarity(native)), pairs.same,
                                                    self.p_targets)  # fmt: skip
            if normalizer is not None:
                if stats is None:  # each clip's cohort statistics once, not once per trial
                    stats = normalizer.stats(embeddings.cpu().numpy())
                mean, std = stats
                normed = normalizer.normalize(native, query_stats=(mean[pairs.a], std[pairs.a]),
                                              template_stats=(mean[pairs.b], std[pairs.b]))  # fmt: skip
                figures["snorm"] = trial_metrics(normed, pairs.same, self.p_targets)
            if model.calibration is not None and model.calibration.points:
                decided = calibrated_decisions(model.calibration, native, pairs.same)
                figures["calibrated_accuracy"] = decided.get("accuracy")
                details[f"{mode}.calibrated"] = decided
            metrics[mode] = figures
        flat = {f"{mode}.{k}": v for mode, fig in metrics.items() for k, v in _flatten(fig).items()}
        primary = "text_independent.eer" if "text_independent.eer" in flat else "trials.eer"
        return self.result(flat, primary, **details)

    def decision_scores(self, model: AnyTwin, data: Dataset) -> DecisionScores:
        """Native values of the text-independent trials (or the trial list's), for calibration."""
        trials = self.trials(data)
        pairs = trials.get("trials", trials.get("text_independent"))
        assert pairs is not None
        z = embed_batches(model, data.items)
        native = score_pairs(model, z, z, pairs)
        groups = np.asarray(data.items.labels)[pairs.a]
        return DecisionScores(native, np.asarray(pairs.same, bool), len(np.unique(data.items.labels)),
                              {"trials": "given" if data.pairs is not None else "text_independent"}, NATIVE,
                              groups)  # fmt: skip


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@register_protocol("speaker_id")
class SpeakerIdentificationProtocol(OpenSetProtocol):
    """Open-set speaker identification: ``enrol`` clips per enrolled speaker (all as templates, or
    their mean), every other clip a query; rank-1 and DIR@FAR (primary DIR@FAR=1%)."""

    summary = "open-set speaker identification through a gallery: rank-1, DIR@FAR (5 clips enrolled, all or mean)"

    def __init__(self, known: float = 0.5, enrol: int = 5, seed: int = 0, far_targets: Sequence[float] = (0.01, 0.1),
                 templates: Literal["all", "mean"] = "mean", index: str = "flat") -> None:  # fmt: skip
        super().__init__(known, enrol, seed, far_targets, None, index)
        if templates not in ("all", "mean"):
            raise ValueError(f"templates must be 'all' or 'mean', not {templates!r}")
        self.templates = templates

    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        return self.evaluate_embeddings(model, data, embed_batches(model, data.items))

    def evaluate_embeddings(self, model: AnyTwin, data: Dataset, embeddings: torch.Tensor) -> ProtocolResult:
        from twinnet.gallery import Gallery

        items = data.items
        z = embeddings.cpu().numpy().astype(np.float32)
        enrolled, known_q, unknown_q = self.split(items.labels)
        with tempfile.TemporaryDirectory(prefix="twinnet-speaker-id-") as tmp, \
                Gallery.create(Path(tmp) / "gallery", model, index=self.index) as g:  # fmt: skip
            for c in np.unique(items.labels[enrolled]):
                rows = z[enrolled[items.labels[enrolled] == c]]
                g.enroll(items.class_names[int(c)], rows, precomputed=True, template=self.templates)
            best = {name: g.identify_batch(z[q], k=1, precomputed=True) if len(q) else [] for name, q in
                    (("known", known_q), ("unknown", unknown_q))}  # fmt: skip
        orientation = model.comparator.orientation
        known_sim = orientation.to_similarity(np.array([r.matches[0].value for r in best["known"]]))
        unknown_sim = orientation.to_similarity(np.array([r.matches[0].value for r in best["unknown"]]))
        correct = np.array([r.matches[0].identity == items.class_names[int(items.labels[i])]
                            for r, i in zip(best["known"], known_q)])  # fmt: skip
        metrics: dict[str, Any] = {
            "enrolled_speakers": len(np.unique(items.labels[enrolled])), "templates": self.templates,
            "enrol_clips": self.enrol, "unknown_speakers": len(np.unique(items.labels[unknown_q])),
            "known_queries": len(known_q), "unknown_queries": len(unknown_q),
            **open_set_rates(known_sim, correct, unknown_sim, self.far_targets),
        }  # fmt: skip
        return self.result(metrics)
