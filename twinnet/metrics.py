"""Evaluation metrics as pure functions.

Scores follow one convention: **larger means more alike** (negate distances first, e.g. with
``comparator.to_similarity``). ``same`` is a boolean array, True for same-class pairs. Thresholds
returned here are in that score scale, and a pair is accepted as "same" when ``score >= threshold``.
ROC curves come from scikit-learn; Clopper–Pearson intervals from SciPy's beta distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta, pearsonr, spearmanr
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check(scores: ArrayLike, same: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = _np(scores).astype(np.float64).ravel()
    y = _np(same).astype(bool).ravel()
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if y.all() or not y.any():
        raise ValueError("metrics need both same and different pairs")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return s, y


def calc_roc(scores: ArrayLike, same: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(far, tar, thresholds)``: false-accept and true-accept rates at each threshold (all of them)."""
    s, y = _check(scores, same)
    far, tar, thresholds = roc_curve(y, s, drop_intermediate=False)
    return far, tar, thresholds


def calc_roc_auc(scores: ArrayLike, same: ArrayLike) -> float:
    s, y = _check(scores, same)
    return float(roc_auc_score(y, s))


def calc_eer(scores: ArrayLike, same: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold: where the false-accept rate equals the false-reject rate
    (linearly interpolated between the two ROC points that bracket the crossing)."""
    far, tar, thresholds = calc_roc(scores, same)
    frr = 1.0 - tar
    i = int(np.argmax(far >= frr))  # first point where FAR has caught up with FRR
    if i == 0:
        return float(far[0]), float(thresholds[min(1, len(thresholds) - 1)])
    # Interpolate between point i-1 (far < frr) and point i (far >= frr).
    d0, d1 = frr[i - 1] - far[i - 1], frr[i] - far[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    eer = far[i - 1] + w * (far[i] - far[i - 1])
    threshold = (
        thresholds[i] if np.isinf(thresholds[i - 1]) else thresholds[i - 1] + w * (thresholds[i] - thresholds[i - 1])
    )
    return float(eer), float(threshold)


def calc_best_accuracy(scores: ArrayLike, same: ArrayLike) -> tuple[float, float]:
    """The highest accuracy of any threshold, and that threshold (midway to the next score)."""
    far, tar, thresholds = calc_roc(scores, same)
    _, y = _check(scores, same)
    n_pos, n_neg = y.sum(), (~y).sum()
    accuracy = (tar * n_pos + (1.0 - far) * n_neg) / (n_pos + n_neg)
    i = int(np.argmax(accuracy))
    t = thresholds[i]
    if np.isinf(t):  # "reject everything": sit just above the largest score
        t = float(_np(scores).max()) + 1e-6
    elif i + 1 < len(thresholds):
        t = (t + thresholds[i + 1]) / 2.0  # a margin on both sides for unseen data
    return float(accuracy[i]), float(t)


def calc_tar_at_far(scores: ArrayLike, same: ArrayLike, far: float) -> tuple[float, float]:
    """The true-accept rate at the largest false-accept rate not above ``far``, and its threshold."""
    fars, tars, thresholds = calc_roc(scores, same)
    ok = np.nonzero(fars <= far)[0]
    i = int(ok[-1])
    t = thresholds[i]
    if np.isinf(t):
        t = float(_np(scores).max()) + 1e-6
    return float(tars[i]), float(t)


def calc_far_frr(scores: ArrayLike, same: ArrayLike, threshold: float) -> tuple[float, float]:
    """False-accept and false-reject rates when ``score >= threshold`` is accepted as same."""
    s, y = _check(scores, same)
    accept = s >= threshold
    return float(accept[~y].mean()), float((~accept[y]).mean())


def calc_threshold_at_frr(scores: ArrayLike, same: ArrayLike, frr: float) -> tuple[float, float]:
    """The false-accept rate at the strictest threshold whose false-reject rate is at most ``frr``,
    and that threshold (a genuine score: accepting ``score >= threshold`` rejects at most
    ``floor(frr · n_genuine)`` genuine pairs, and any higher threshold rejects more)."""
    s, y = _check(scores, same)
    genuine = np.sort(s[y])
    allowed = math.floor(frr * len(genuine) + 1e-9)  # rejections allowed; the epsilon absorbs 0.1·30 = 2.9999…
    t = float(genuine[min(allowed, len(genuine) - 1)])
    return float((s[~y] >= t).mean()), t


def calc_clopper_pearson(errors: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) two-sided ``confidence`` interval of a rate of ``errors`` in
    ``trials``, from the beta distribution (SciPy): it never covers less than ``confidence``, and
    with 0 errors its upper end is ``1 − ((1 − confidence)/2)^(1/n)``, about 3.7/n at 95%."""
    if trials <= 0:
        raise ValueError("a rate needs at least one trial")
    if not 0 <= errors <= trials:
        raise ValueError(f"{errors} errors in {trials} trials")
    alpha = 1.0 - confidence
    lower = 0.0 if errors == 0 else float(beta.ppf(alpha / 2, errors, trials - errors + 1))
    upper = 1.0 if errors == trials else float(beta.ppf(1 - alpha / 2, errors + 1, trials - errors))
    return lower, upper


def calc_min_trials(rate: float) -> int:
    """The fewest trials that can show an error rate as low as ``rate`` at 95%: with ``n`` trials
    and no errors, the one-sided 95% upper bound is ``1 − 0.05^(1/n) ≈ 3/n`` (the "rule of
    three"), so a rate below ``3/n`` cannot be shown; this is ``ceil(3 / rate)``."""
    if not 0 < rate < 1:
        raise ValueError(f"a rate must lie strictly between 0 and 1, not {rate}")
    return math.ceil(3.0 / rate - 1e-9)  # 3 / 1e-4 is 29999.999…: it means 30000


@dataclass(frozen=True)
class ErrorRates:
    """FAR and FRR at one threshold, their counts, and 95% Clopper–Pearson intervals."""

    far: float
    frr: float
    accuracy: float
    false_accepts: int
    impostors: int
    false_rejects: int
    genuine: int
    far_ci: tuple[float, float]
    frr_ci: tuple[float, float]


def calc_error_rates(scores: ArrayLike, same: ArrayLike, threshold: float, confidence: float = 0.95) -> ErrorRates:
    """FAR, FRR and accuracy of accepting ``score >= threshold``, with exact (Clopper–Pearson)
    ``confidence`` intervals of FAR (over the impostor pairs) and FRR (over the genuine pairs)."""
    s, y = _check(scores, same)
    accept = s >= threshold
    fa, n_imp = int(accept[~y].sum()), int((~y).sum())
    fr, n_gen = int((~accept[y]).sum()), int(y.sum())
    return ErrorRates(
        far=fa / n_imp, frr=fr / n_gen, accuracy=float((accept == y).mean()), false_accepts=fa, impostors=n_imp,
        false_rejects=fr, genuine=n_gen, far_ci=calc_clopper_pearson(fa, n_imp, confidence),
        frr_ci=calc_clopper_pearson(fr, n_gen, confidence),
    )  # fmt: skip


def calc_accuracy(scores: ArrayLike, same: ArrayLike, threshold: float) -> float:
    s, y = _check(scores, same)
    return float(((s >= threshold) == y).mean())


def calc_mean_ci95(values: ArrayLike) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (normal approximation, 1.96·s/√n)."""
    v = _np(values).astype(np.float64).ravel()
    if len(v) == 0:
        raise ValueError("no values")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(len(v)))


def calc_average_precision(scores: ArrayLike, same: ArrayLike) -> float:
    """Area under the precision-recall curve, with "same" as the positive class (scikit-learn)."""
    s, y = _check(scores, same)
    return float(average_precision_score(y, s))


def calc_f1(scores: ArrayLike, same: ArrayLike, threshold: float) -> float:
    """F1 of "same" decisions ``score >= threshold``."""
    s, y = _check(scores, same)
    return float(f1_score(y, s >= threshold))


def calc_best_f1(scores: ArrayLike, same: ArrayLike) -> tuple[float, float]:
    """The highest F1 over all thresholds, and its threshold (an oracle figure: it looks at the labels)."""
    s, y = _check(scores, same)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]  # accept everything down to a distinct score
    f1 = 2 * tp[last] / (tp[last] + fp[last] + y.sum())
    best = int(np.argmax(f1))
    return float(f1[best]), float(s_sorted[last[best]])


def calc_correlations(similarity: ArrayLike, gold: ArrayLike) -> dict[str, float]:
    """Spearman and Pearson correlation of predicted similarities with gold scores (SciPy)."""
    s = _np(similarity).astype(np.float64).ravel()
    g = _np(gold).astype(np.float64).ravel()
    if len(s) != len(g):
        raise ValueError(f"{len(s)} similarities but {len(g)} gold scores")
    if len(s) < 3:
        raise ValueError("correlations need at least 3 pairs")
    return {"spearman": float(spearmanr(s, g).statistic), "pearson": float(pearsonr(s, g).statistic)}


def calc_retrieval(
    similarity: ArrayLike, relevant: Sequence[set[int]], ks: Sequence[int] = (1, 5, 10), mrr_at: int = 10
) -> dict[str, float]:
    """Recall@k (share of a query's relevant documents among its top k, averaged over queries) and
    MRR@``mrr_at`` (mean of 1 / rank of the first relevant document, 0 beyond ``mrr_at``).

    ``similarity`` is ``(queries, documents)``; ``relevant[q]`` holds query ``q``'s document indices.
    """
    sim = torch.as_tensor(_np(similarity))
    if sim.shape[0] != len(relevant):
        raise ValueError(f"{sim.shape[0]} queries but {len(relevant)} relevance sets")
    if any(not r for r in relevant):
        raise ValueError("every query needs at least one relevant document")
    depth = min(max(max(ks), mrr_at), sim.shape[1])
    top = sim.topk(depth, dim=1).indices.numpy()
    hits = np.array([[d in rel for d in row] for row, rel in zip(top, relevant)])
    n_rel = np.array([len(r) for r in relevant])
    out = {f"recall@{k}": float((hits[:, :k].sum(1) / n_rel).mean()) for k in ks}
    first = np.where(hits[:, :mrr_at].any(1), hits[:, :mrr_at].argmax(1) + 1, np.inf)
    out[f"mrr@{mrr_at}"] = float((1.0 / first).mean())
    return out


def calc_verification_metrics(
    scores: ArrayLike, same: ArrayLike, far_targets: Sequence[float] = (1e-1, 1e-2, 1e-3)
) -> dict[str, float]:
    """The usual verification report in one dict: ROC AUC, EER, TAR at each FAR (points of the
    ROC curve), and ``oracle_best_accuracy``: the best accuracy any threshold gives on these very
    pairs, with that threshold (an optimistic figure, since the threshold is chosen on the labels
    it is scored on; a decision's accuracy is the one at a threshold calibrated elsewhere).
    ``best_accuracy`` and ``best_accuracy_threshold`` are the same oracle figures under their
    former names, kept for callers that read them."""
    eer, eer_t = calc_eer(scores, same)
    acc, acc_t = calc_best_accuracy(scores, same)
    out = {
        "roc_auc": calc_roc_auc(scores, same),
        "eer": eer,
        "eer_threshold": eer_t,
        "oracle_best_accuracy": acc,
        "oracle_best_accuracy_threshold": acc_t,
        "best_accuracy": acc,
        "best_accuracy_threshold": acc_t,
    }
    for far in far_targets:
        out[f"tar@far={far:g}"] = calc_tar_at_far(scores, same, far)[0]
    return out
