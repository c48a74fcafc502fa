"""Verification accuracy by k-fold cross-validation of the threshold (LFW's protocol).

Each fold's pairs are scored at a threshold chosen, for best accuracy, on the *other* folds only —
never on the fold being scored — so the accuracy is what a deployment would see on new pairs. The
result is the mean and spread of the fold accuracies, with the threshold-free ROC AUC and
TAR@FAR over all pairs. :class:`~twinnet.protocols.text.PairClassificationProtocol` (``pairs``) runs
this when given ``folds``; folds are the file's own (LFW's ``pairs.txt`` of 10 sets) or, for files
without sets, a seeded split of the pairs stratified by label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from twinnet.compare import Orientation
from twinnet.data.pairs import Pairs
from twinnet.errors import DataError
from twinnet.metrics import calc_accuracy, calc_best_accuracy, calc_roc_auc, calc_tar_at_far
from twinnet.runtime import Stream, numpy_rng


def fold_ids(pairs: Pairs, folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0..folds-1) of every pair: the file's own sets when it has them (their number
    must be ``folds``), else each label's pairs dealt round-robin in a seeded order."""
    if folds < 2:
        raise DataError(f"--folds must be at least 2, not {folds}")
    if pairs.fold is not None:
        n = len(np.unique(pairs.fold))
        if n != folds:
            raise DataError(f"the pairs file has {n} set(s) of pairs (its header line); ask for --folds {n}")
        return np.asarray(pairs.fold)
    same = np.asarray(pairs.same, bool)
    if min(same.sum(), (~same).sum()) < folds:
        raise DataError(f"{folds} folds need at least {folds} same and {folds} different pairs; "
                        f"these have {int(same.sum())} and {int((~same).sum())}")  # fmt: skip
    rng = numpy_rng(seed, Stream.PAIR_FOLDS)
    fold = np.empty(len(same), np.int64)
    for kind in (True, False):
        members = np.nonzero(same == kind)[0]
        fold[members[rng.permutation(len(members))]] = np.arange(len(members)) % folds
    return fold


def kfold_verification(
    similarity: np.ndarray, same: np.ndarray, fold: np.ndarray, orientation: Orientation,
    far_targets: Sequence[float] = (1e-3,),
) -> dict[str, Any]:  # fmt: skip
    """Accuracy per fold at the best-accuracy threshold of the other folds; mean, sample standard
    deviation and standard error of the mean; thresholds in the native scale; ROC AUC and TAR at
    each FAR target over all pairs."""
    similarity, same, fold = np.asarray(similarity, float), np.asarray(same, bool), np.asarray(fold)
    names = np.unique(fold)
    accuracies, thresholds = [], []
    for k in names:
        scored, rest = fold == k, fold != k
        if same[rest].all() or not same[rest].any():
            raise DataError(f"fold {int(k) + 1}: the other folds hold pairs of one kind only")
        _, threshold = calc_best_accuracy(similarity[rest], same[rest])  # never from the fold scored
        accuracies.append(calc_accuracy(similarity[scored], same[scored], threshold))
        thresholds.append(float(orientation.from_similarity(threshold)))
    acc = np.asarray(accuracies)
    metrics: dict[str, Any] = {
        "accuracy": float(acc.mean()),
        "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "accuracy_sem": float(acc.std(ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else 0.0,
        "folds": len(names),
        "n_pairs": len(same),
        "roc_auc": calc_roc_auc(similarity, same),
    }
    for far in far_targets:
        metrics[f"tar@far={far:g}"] = calc_tar_at_far(similarity, same, far)[0]
    metrics["fold_accuracies"] = [float(a) for a in acc]
    metrics["fold_thresholds"] = thresholds
    return metrics
