import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from twinnet.calibrate import calibrate, calibrate_threshold
from twinnet.compare import DISTANCE, SCORE
from twinnet.metrics import (
    calc_best_accuracy,
    calc_eer,
    calc_far_frr,
    calc_mean_ci95,
    calc_roc_auc,
    calc_tar_at_far,
)

rng = np.random.default_rng(0)
SAME = np.r_[np.ones(500, bool), np.zeros(500, bool)]
SCORES = np.r_[rng.normal(1.0, 1.0, 500), rng.normal(-1.0, 1.0, 500)]


def test_roc_auc_is_sklearns():
    assert calc_roc_auc(SCORES, SAME) == roc_auc_score(SAME, SCORES)


def test_eer_on_hand_example():
    # same: 0.9 0.8 0.4 ; different: 0.7 0.3 0.2  → at threshold 0.7..0.8 one error each side of 3
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    eer, t = calc_eer(scores, same)
    assert eer == pytest.approx(1 / 3)
    far, frr = calc_far_frr(scores, same, t)
    assert far == pytest.approx(1 / 3) and frr == pytest.approx(1 / 3)


def test_eer_for_gaussians_matches_theory():
    # two unit-variance gaussians 2 apart: EER = Φ(-1) ≈ 0.1587
    r = np.random.default_rng(1)
    same = np.r_[np.ones(200000, bool), np.zeros(200000, bool)]
    scores = np.r_[r.normal(1, 1, 200000), r.normal(-1, 1, 200000)]
    eer, t = calc_eer(scores, same)
    assert eer == pytest.approx(0.1587, abs=0.003) and t == pytest.approx(0.0, abs=0.02)


def test_best_accuracy_brute_force():
    acc, t = calc_best_accuracy(SCORES, SAME)
    brute = max(((s <= SCORES) == SAME).mean() for s in SCORES)
    assert acc == pytest.approx(brute)
    assert ((t <= SCORES) == SAME).mean() == pytest.approx(acc)


@pytest.mark.parametrize("far", [1e-1, 1e-2, 1e-3])
def test_tar_at_far_respects_the_far(far):
    tar, t = calc_tar_at_far(SCORES, SAME, far)
    measured_far, frr = calc_far_frr(SCORES, SAME, t)
    assert measured_far <= far
    assert tar == pytest.approx(1 - frr)
    # a slightly lower threshold would exceed the FAR (the threshold is the most lenient allowed)
    lower = np.max(SCORES[t > SCORES])
    assert calc_far_frr(SCORES, SAME, lower)[0] > far or (SCORES[~SAME] >= lower).mean() > far


def test_metrics_refuse_one_class():
    with pytest.raises(ValueError, match="both same and different"):
        calc_roc_auc([0.1, 0.2], [True, True])


def test_mean_ci95():
    mean, ci = calc_mean_ci95([0.0, 1.0] * 50)
    assert mean == 0.5 and ci == pytest.approx(1.96 * np.std([0.0, 1.0] * 50, ddof=1) / 10)


def test_calibration_round_trip_for_distances():
    distances = -SCORES  # a distance comparator: smaller = same
    cal = calibrate(distances, SAME, DISTANCE, far_targets=[1e-2])
    decisions = cal.decide(distances)
    assert (decisions == SAME).mean() == pytest.approx(cal.thresholds["best_accuracy"].accuracy)
    assert cal.native_threshold() == pytest.approx(cal.thresholds["best_accuracy"].value)
    strict = cal.decide(distances, "far=0.01")
    assert strict[~SAME].mean() <= 0.01
    again = type(cal).from_json(cal.to_json())
    assert again == cal


def test_calibrate_threshold_signature():
    t = calibrate_threshold(SCORES, SAME, SCORE, far=1e-3)
    assert t.criterion == "far" and t.far <= 1e-3
