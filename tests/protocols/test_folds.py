"""LFW's k-fold protocol: a fold's threshold comes from the other folds, never from the fold scored."""

from __future__ import annotations

import numpy as np
import pytest

from twinnet.compare import Orientation
from twinnet.data.pairs import Pairs
from twinnet.errors import DataError
from twinnet.protocols.folds import fold_ids, kfold_verification


def _scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same = np.arange(n) % 2 == 0
    return np.where(same, rng.normal(1.0, 0.6, n), rng.normal(0.0, 0.6, n)), same


def _orientation() -> Orientation:
    from twinnet.compare import CosineSimilarity

    return CosineSimilarity().orientation


def test_a_folds_threshold_ignores_that_folds_own_labels() -> None:
    sim, same = _scores()
    fold = fold_ids(Pairs(np.arange(400), np.arange(400), same), 10, seed=0)
    base = kfold_verification(sim, same, fold, _orientation())
    flipped = same.copy()
    flipped[fold == 3] = ~flipped[fold == 3]  # corrupt fold 3's labels only
    after = kfold_verification(sim, flipped, fold, _orientation())
    # fold 3's threshold is chosen on folds ≠ 3, so it does not move; its accuracy collapses
    assert after["fold_thresholds"][3] == pytest.approx(base["fold_thresholds"][3])
    assert after["fold_accuracies"][3] == pytest.approx(1 - base["fold_accuracies"][3])
    # every other fold's threshold sees the corrupted fold, and moves
    assert any(abs(a - b) > 1e-9 for k, (a, b) in enumerate(zip(after["fold_thresholds"], base["fold_thresholds"]))
               if k != 3)  # fmt: skip


def test_fold_accuracy_is_below_the_oracle_on_noisy_scores() -> None:
    from twinnet.metrics import calc_best_accuracy

    sim, same = _scores(seed=1)
    fold = fold_ids(Pairs(np.arange(400), np.arange(400), same), 10, seed=0)
    m = kfold_verification(sim, same, fold, _orientation())
    assert m["folds"] == 10 and len(m["fold_accuracies"]) == 10
    assert m["accuracy"] == pytest.approx(np.mean(m["fold_accuracies"]))
    assert m["accuracy_std"] == pytest.approx(np.std(m["fold_accuracies"], ddof=1))
    assert m["accuracy"] <= calc_best_accuracy(sim, same)[0]  # the oracle picks its threshold on the scored pairs
    assert 0.5 < m["roc_auc"] <= 1 and "tar@far=0.001" in m


def test_fold_ids_stratified_or_from_the_file() -> None:
    same = np.arange(100) % 4 == 0
    fold = fold_ids(Pairs(np.arange(100), np.arange(100), same), 5, seed=2)
    assert sorted(np.bincount(fold[same]).tolist()) == [5] * 5  # each fold gets its share of same pairs
    assert (fold_ids(Pairs(np.arange(100), np.arange(100), same), 5, seed=2) == fold).all()  # seeded
    given = Pairs(np.arange(4), np.arange(4), np.array([1, 0, 1, 0], bool), fold=np.array([0, 0, 1, 1]))
    assert fold_ids(given, 2).tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match="has 2 set"):
        fold_ids(given, 10)
