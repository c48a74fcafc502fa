"""Operating points: targets, 95% Clopper–Pearson intervals, refusal of too little data, named
points with provenance, files old and new, re-calibration on a user's data, and drift."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import twinnet
from twinnet.calibrate import (
    DEFAULT,
    Calibration,
    OperatingPoint,
    Provenance,
    Target,
    calibrate,
    calibrate_threshold,
    data_fingerprint,
    fit_operating_point,
    parse_target,
)
from twinnet.compare import DISTANCE, SCORE, CosineSimilarity, EuclideanDistance
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.data.sources import Dataset
from twinnet.errors import ConfigError, DataError
from twinnet.metrics import calc_clopper_pearson, calc_error_rates, calc_min_trials, calc_threshold_at_frr
from twinnet.operating import drift_report, recalibrate

rng = np.random.default_rng(0)
SAME = np.r_[np.ones(600, bool), np.zeros(900, bool)]
SCORES = np.r_[rng.normal(1.0, 1.0, 600), rng.normal(-1.0, 1.0, 900)]


class Identity(nn.Module):
    output_dim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def clustered_items(n_classes: int = 8, per_class: int = 12, spread: float = 0.8, seed: int = 0,
                    names: str = "/data/set") -> ItemSet:  # fmt: skip
    r = np.random.default_rng(seed)
    centres = r.normal(size=(n_classes, 2)) * 3
    labels = np.repeat(np.arange(n_classes), per_class)
    points = centres[labels] + r.normal(scale=spread, size=(len(labels), 2))
    return ItemSet(torch.tensor(points, dtype=torch.float32), labels, [f"c{i}" for i in range(n_classes)],
                   names=[f"{names}/c{c}/{i:03d}.png" for i, c in enumerate(labels)])  # fmt: skip


def model(comparator: nn.Module | None = None) -> twinnet.TwinNetwork:
    return twinnet.TwinNetwork(Identity(), comparator or EuclideanDistance())


# -- targets -----------------------------------------------------------------------------------------


def test_targets_parse_from_strings_and_print_canonically():
    assert parse_target("eer") == Target("eer")
    assert parse_target(" BEST_ACCURACY ") == Target("best_accuracy")
    assert parse_target("far=1e-3") == Target("far", 1e-3) and str(parse_target("far=1e-3")) == "far=0.001"
    assert str(parse_target("frr = 0.05")) == "frr=0.05"
    for bad in ("", "far", "far=", "far=abc", "far=0", "far=1", "far=-0.1", "tar=0.1", "eer=0.1", "accuracy"):
        with pytest.raises(ValueError, match="target"):
            parse_target(bad)


def test_clopper_pearson_against_published_values():
    # two-sided 95%: 0 of 10 → [0, 0.3085]; 5 of 10 → [0.1871, 0.8129]; 10 of 10 → [0.6915, 1]
    assert calc_clopper_pearson(0, 10) == (0.0, pytest.approx(0.30850, abs=1e-4))
    lo, hi = calc_clopper_pearson(5, 10)
    assert lo == pytest.approx(0.18709, abs=1e-4) and hi == pytest.approx(0.81291, abs=1e-4)
    assert calc_clopper_pearson(10, 10) == (pytest.approx(0.69150, abs=1e-4), 1.0)
    # zero errors in n: the upper end is 1 − 0.025^(1/n), about 3.7/n
    assert calc_clopper_pearson(0, 1000)[1] == pytest.approx(1 - 0.025 ** (1 / 1000))
    with pytest.raises(ValueError):
        calc_clopper_pearson(3, 2)


def test_the_rule_of_three_sets_the_fewest_pairs():
    assert calc_min_trials(1e-4) == 30000 and calc_min_trials(1e-3) == 3000 and calc_min_trials(0.01) == 300
    assert calc_min_trials(0.05) == 60


def test_too_little_data_for_a_target_is_refused_with_the_numbers():
    native, same = np.r_[-SCORES[:300], -SCORES[600:1100]], np.r_[np.ones(300, bool), np.zeros(500, bool)]
    with pytest.raises(DataError, match=r"^far=1e-4 needs at least 30000 impostor pairs; these data have 500$"):
        fit_operating_point(native, same, DISTANCE, "far=1e-4")
    with pytest.raises(DataError, match=r"^frr=0.001 needs at least 3000 genuine pairs; these data have 300$"):
        fit_operating_point(native, same, DISTANCE, "frr=0.001")
    with pytest.raises(DataError, match="eer needs at least 10 genuine and 10 impostor pairs; these data have 3 and"):
        fit_operating_point(native[297:], same[297:], DISTANCE, "eer")
    with pytest.raises(DataError, match="both genuine and impostor"):
        fit_operating_point(native[:300], same[:300], DISTANCE, "eer")
    # far=1e-2 needs 300 impostor pairs: 500 are enough
    assert fit_operating_point(native, same, DISTANCE, "far=1e-2").far <= 0.01
    # not strict: fitted all the same, and the point says why it cannot be trusted
    loose = fit_operating_point(native, same, DISTANCE, "far=1e-4", strict=False)
    assert loose.warning == "far=1e-4 needs at least 30000 impostor pairs; these data have 500"
    assert loose.far_ci is not None and loose.far_ci[1] > 1e-4  # the interval shows it too


@pytest.mark.parametrize("orientation", [DISTANCE, SCORE], ids=["distance", "score"])
def test_each_target_picks_the_threshold_it_promises(orientation):
    native = orientation.from_similarity(SCORES)
    imp, gen = np.sort(SCORES[~SAME]), np.sort(SCORES[SAME])
    for rate in (0.01, 0.05, 0.2):
        p = fit_operating_point(native, SAME, orientation, Target("far", rate))
        assert p.far <= rate and orientation.matches(native, p.threshold)[~SAME].mean() == pytest.approx(p.far)
        # most lenient: one impostor score lower would accept too many
        s_t = orientation.to_similarity(p.threshold)
        below = imp[imp < s_t].max()
        assert (SCORES[~SAME] >= below).mean() > rate
        q = fit_operating_point(native, SAME, orientation, Target("frr", rate))
        assert q.frr <= rate
        s_q = orientation.to_similarity(q.threshold)
        above = gen[gen > s_q].min()  # strictest: any higher threshold rejects too many genuine pairs
        assert (SCORES[SAME] < above).mean() > rate
    eer = fit_operating_point(native, SAME, orientation, "eer")
    assert abs(eer.far - eer.frr) < 0.01 and eer.target == "eer"
    best = fit_operating_point(native, SAME, orientation, "best_accuracy")
    assert best.accuracy == pytest.approx(twinnet.metrics.calc_best_accuracy(SCORES, SAME)[0])


def test_an_operating_point_carries_exact_intervals_and_counts():
    p = fit_operating_point(-SCORES, SAME, DISTANCE, "eer")
    rates = calc_error_rates(SCORES, SAME, float(DISTANCE.to_similarity(p.threshold)))
    assert p.false_accepts == rates.false_accepts and p.false_rejects == rates.false_rejects
    assert p.far_ci == calc_clopper_pearson(rates.false_accepts, 900)
    assert p.frr_ci == calc_clopper_pearson(rates.false_rejects, 600)
    assert p.far_ci[0] <= p.far <= p.far_ci[1] and p.frr_ci[0] <= p.frr <= p.frr_ci[1]
    assert p.provenance.genuine_pairs == 600 and p.provenance.impostor_pairs == 900
    assert p.provenance.twinnet_version == twinnet.__version__ and p.provenance.date.endswith("Z")


def test_threshold_at_frr_on_a_hand_example():
    # genuine 0.9 0.8 0.6 0.4 ; impostor 0.7 0.3: FRR ≤ 0.25 allows one rejection → threshold 0.6
    scores, same = np.array([0.9, 0.8, 0.6, 0.4, 0.7, 0.3]), np.array([1, 1, 1, 1, 0, 0], bool)
    far, t = calc_threshold_at_frr(scores, same, 0.25)
    assert t == 0.6 and far == 0.5
    assert calc_threshold_at_frr(scores, same, 0.1)[1] == 0.4  # no rejection allowed


# -- the calibration ---------------------------------------------------------------------------------


def test_named_operating_points_decide_and_unknown_names_list_the_known_ones():
    cal = calibrate(-SCORES, SAME, DISTANCE, far_targets=(0.01,))
    assert cal.names() == ["default", "far=0.01"] and cal.default == DEFAULT
    strict = fit_operating_point(-SCORES, SAME, DISTANCE, "far=0.005")
    cal.add("strict", strict)
    assert cal.default == DEFAULT and cal.threshold() == cal.points["default"].threshold
    assert cal.threshold("strict") == strict.threshold == cal.native_threshold("strict")
    assert cal.native_threshold() == cal.threshold(None) == cal.threshold("default")
    decided = cal.decide(-SCORES, "strict")
    assert decided.dtype == bool and decided[~SAME].mean() <= 0.005
    assert (cal.decide(-SCORES) == DISTANCE.matches(-SCORES, cal.threshold())).all()
    with pytest.raises(ConfigError, match=r"unknown operating point 'lenient'; known: default \(the default\), "
                                          r"far=0.01, strict"):  # fmt: skip
        cal.threshold("lenient")
    # the former names of thresholds still find their points
    assert cal.point("best_accuracy") is cal.points["default"] and cal.point("far=1e-2") is cal.points["far=0.01"]
    assert cal.thresholds["best_accuracy"].accuracy == cal.points["default"].accuracy
    cal.add("strict", strict, make_default=True)
    assert cal.default == "strict" and cal.names()[0] == "strict" and cal.summary()[0]["default"] is True
    with pytest.raises(ConfigError, match="is the default"):
        cal.remove("strict")
    cal.set_default("default")
    assert cal.remove("strict") is strict and "strict" not in cal.names()
    with pytest.raises(ConfigError, match="operating point name"):
        cal.add("has space", strict)


def test_training_calibration_keeps_its_informational_points_with_a_warning():
    few = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    cal = calibrate(np.r_[-SCORES[:50], -SCORES[600:650]], few, DISTANCE, far_targets=(1e-2, 1e-3))
    assert cal.points["default"].warning is None and cal.points["default"].target == "best_accuracy"
    assert "needs at least 3000 impostor pairs; these data have 50" in cal.points["far=0.001"].warning
    assert cal.thresholds["far=0.01"].far <= 0.01 and cal.n_pairs == 100 and cal.source == "validation"
    assert cal.points["default"].provenance.protocol == "verification"
    # the former Threshold's fields
    t = calibrate_threshold(SCORES, SAME, SCORE, far=1e-3)
    assert t.criterion == "far" and t.target_far == 1e-3 and t.value == t.threshold and t.far <= 1e-3


def test_calibration_json_round_trips_exactly_and_says_what_it_holds(tmp_path):
    items = clustered_items()
    cal = calibrate(-SCORES, SAME, DISTANCE, data=Dataset(items))
    cal.add("strict", fit_operating_point(-SCORES, SAME, DISTANCE, "far=0.005"))
    cal.extra["signature"] = {"threshold": 0.5}
    text = json.dumps(cal.to_json())
    again = Calibration.from_json(json.loads(text))
    assert again == cal
    raw = json.loads(text)
    assert raw["format"] == 2 and raw["default"] == "default" and raw["orientation"] == "distance"
    point = raw["operating_points"]["default"]
    assert set(point) >= {"threshold", "target", "far", "frr", "far_ci95", "frr_ci95", "provenance"}
    prov = point["provenance"]
    assert prov["fingerprint"] == data_fingerprint(items) and prov["identities"] == 8
    assert prov["genuine_pairs"] == 600 and prov["impostor_pairs"] == 900
    assert set(prov) >= {"protocol", "settings", "date", "twinnet_version", "source"}


def test_calibration_files_of_the_previous_layout_still_load():
    old = {  # what twinnet wrote before operating points: thresholds by name, one of them the default
        "orientation": "distance", "rule": "same if distance <= threshold", "default": "best_accuracy",
        "n_pairs": 2000, "source": "validation", "extra": {"signature": {"threshold": 0.7, "references": 5}},
        "thresholds": {
            "best_accuracy": {"value": 0.8, "criterion": "best_accuracy", "target_far": None, "accuracy": 0.9,
                              "far": 0.08, "frr": 0.12},
            "far=0.01": {"value": 0.5, "criterion": "far", "target_far": 0.01, "accuracy": 0.7, "far": 0.009,
                         "frr": 0.5},
        },
    }  # fmt: skip
    cal = Calibration.from_json(old)
    assert cal.names() == ["default", "far=0.01"] and cal.native_threshold() == 0.8
    assert cal.points["default"].target == "best_accuracy" and cal.points["far=0.01"].target == "far=0.01"
    assert cal.threshold("best_accuracy") == 0.8 and cal.threshold("far=0.01") == 0.5
    assert cal.decide([0.6, 0.9]).tolist() == [True, False] and cal.decide([0.6], "far=0.01").tolist() == [False]
    assert cal.n_pairs == 2000 and cal.points["default"].far_ci is None and cal.extra["signature"]["threshold"] == 0.7
    # the first layout: thresholds on similarities, the native value beside them
    best = {"value": -0.8, "native_value": 0.8, "criterion": "best_accuracy", "target_far": None, "accuracy": 0.9,
            "far": 0.1, "frr": 0.1}  # fmt: skip
    first = {"is_distance": True, "default": "best_accuracy", "thresholds": {"best_accuracy": best}}
    assert Calibration.from_json(first).native_threshold() == 0.8
    # and a loaded old file saves in the new layout and loads again unchanged
    assert Calibration.from_json(json.loads(json.dumps(cal.to_json()))) == cal


def test_a_saved_model_keeps_its_operating_points(tmp_path):
    cfg = twinnet.ModelConfig.model_validate({
        "input": {"kind": "vector", "features": 2},
        "encoder": {"name": "mlp", "params": {"hidden": [4], "embedding_dim": 2}}, "comparator": {"name": "euclidean"},
    })  # fmt: skip
    m = twinnet.build_model(cfg)
    items = clustered_items()
    recalibrate(m, Dataset(items), target="eer", params={"n_pairs": 400})
    recalibrate(m, Dataset(items), target="far=0.01", name="strict", params={"n_pairs": 800})
    loaded = twinnet.load(twinnet.save(m, tmp_path / "model"))
    assert loaded.calibration == m.calibration and loaded.calibration.names() == ["default", "strict"]


# -- provenance --------------------------------------------------------------------------------------


def test_the_fingerprint_follows_names_and_labels_not_order_or_folder():
    items = clustered_items(names="/data/here")
    moved = clustered_items(names="/elsewhere/deeper/here")
    shuffled = items.subset(np.random.default_rng(1).permutation(len(items)))
    assert data_fingerprint(items) == data_fingerprint(moved) == data_fingerprint(shuffled)
    assert data_fingerprint(items).startswith("sha256:") and len(data_fingerprint(items)) == 7 + 64
    relabelled = clustered_items()
    relabelled.labels = relabelled.labels.copy()
    relabelled.labels[0] = 1
    assert data_fingerprint(relabelled) != data_fingerprint(items)
    pairs = Pairs(np.array([0, 1]), np.array([2, 50]), np.array([True, False]))
    assert data_fingerprint(Dataset(items, pairs)) != data_fingerprint(Dataset(items))


# -- re-calibration on a user's data -----------------------------------------------------------------


@pytest.mark.parametrize("comparator", [EuclideanDistance(), CosineSimilarity()], ids=["distance", "score"])
def test_recalibrate_scores_the_data_fits_the_target_and_stores_the_point(comparator):
    m = model(comparator)
    assert m.calibration is None
    data = Dataset(clustered_items(), source="/data/set")
    point = recalibrate(m, data, target="eer", params={"n_pairs": 1000, "seed": 3})
    assert m.calibration is not None and m.calibration.default == "default" and m.calibration.point() is point
    prov = point.provenance
    assert prov.protocol == "verification" and prov.settings == {"pairs": "balanced", "n_pairs": 1000, "seed": 3}
    assert prov.genuine_pairs == 500 and prov.impostor_pairs == 500 and prov.identities == 8
    assert prov.fingerprint == data_fingerprint(data) and prov.source == "/data/set"
    # the same pairs, scored by the protocol, give the same threshold by hand
    native = twinnet.protocols.build_protocol("verification", {"n_pairs": 1000, "seed": 3}).decision_scores(m, data)
    assert native is not None
    by_hand = fit_operating_point(native.native, native.genuine, comparator.orientation, "eer")
    assert point.threshold == pytest.approx(by_hand.threshold)
    strict = recalibrate(m, data, target="far=0.01", name="strict", params={"n_pairs": 2000})
    assert m.calibration.default == "default" and m.calibration.threshold("strict") == strict.threshold
    assert strict.far <= 0.01 and strict.provenance.impostor_pairs == 1000
    with pytest.raises(DataError, match="far=1e-3 needs at least 3000 impostor pairs; these data have 1000"):
        recalibrate(m, data, target="far=1e-3", name="stricter", params={"n_pairs": 2000})
    assert "stricter" not in m.calibration.names()


def test_recalibrate_on_given_pairs_and_with_the_signature_protocol():
    items = clustered_items()
    a = np.arange(0, 96, 2)
    b = np.where(np.arange(48) % 2 == 0, a + 1, (a + 24) % 96)  # neighbours share a class, 24 apart do not
    pairs = Pairs(a, b, items.labels[a] == items.labels[b])
    m = model()
    p = recalibrate(m, Dataset(items, pairs), target="best_accuracy", name="pairs")
    assert p.provenance.settings == {"pairs": "given"} and p.provenance.n_pairs == 48
    # signatures: writers with genuine signatures near their centre and forgeries a little off
    writers = np.repeat(np.arange(6), 14)
    genuine = np.tile(np.r_[np.ones(8, bool), np.zeros(6, bool)], 6)
    r = np.random.default_rng(0)
    centres = r.normal(size=(6, 2)) * 4
    points = centres[writers] + np.where(genuine[:, None], 0.3, 1.5) * r.normal(size=(84, 2))
    sig = ItemSet(torch.tensor(points, dtype=torch.float32), 2 * writers + ~genuine,
                  [f"w{i // 2}{'f' if i % 2 else ''}" for i in range(12)],
                  attributes={"writer": writers, "genuine": genuine})  # fmt: skip
    q = recalibrate(m, Dataset(sig), protocol="signature", target="eer", name="signature",
                    params={"references": 3, "aggregate": "mean"})  # fmt: skip
    assert q.provenance.protocol == "signature" and q.provenance.identities == 6
    assert q.provenance.settings == {"references": 3, "aggregate": "mean", "seed": 0}
    assert q.provenance.genuine_pairs == 6 * 5 and q.provenance.impostor_pairs == 6 * 6
    assert m.calibration.default == "pairs"  # not named default, not the first: the default stays
    with pytest.raises(ConfigError, match="the nway protocol makes no accept/reject decision.*verification"):
        recalibrate(m, Dataset(items), protocol="nway")


# -- drift -------------------------------------------------------------------------------------------


def test_drift_report_holds_on_the_same_population_and_flags_a_different_one():
    m = model()
    recalibrate(m, Dataset(clustered_items(seed=0)), target="eer", params={"n_pairs": 2000})
    m.calibration.add("pairs-of-signatures", replace_protocol(m.calibration.point(), "signature"))
    same_population = drift_report(m, Dataset(clustered_items(seed=0)), params={"n_pairs": 2000, "seed": 7})
    check = same_population.checks[0]
    assert check.name == "default" and check.drifted is False and not same_population.drifted
    assert check.far_ci[0] <= check.far <= check.far_ci[1] and "holds" in check.message
    skipped = same_population.checks[1]
    assert skipped.drifted is None and "not checked" in skipped.message and "signature protocol" in skipped.message
    # a population whose classes are far looser: the same threshold rejects many more genuine pairs
    other = drift_report(m, Dataset(clustered_items(seed=0, spread=2.5)), params={"n_pairs": 2000})
    assert other.drifted and other.checks[0].drifted is True
    assert "FRR" in other.checks[0].message and "re-calibrate" in other.checks[0].message
    assert other.checks[0].frr > other.checks[0].calibrated_frr_ci[1]
    report = other.to_json()
    assert report["drifted"] is True and report["checks"][0]["frr_ci95"] is not None
    assert report["genuine_pairs"] == 1000 and report["fingerprint"].startswith("sha256:")
    with pytest.raises(ConfigError, match="no operating points"):
        drift_report(model(), Dataset(clustered_items()))


def replace_protocol(point: OperatingPoint, protocol: str) -> OperatingPoint:
    from dataclasses import replace

    return replace(point, provenance=replace(point.provenance, protocol=protocol,
                                             settings={"references": 5, "aggregate": "min"}))  # fmt: skip


def test_provenance_reads_what_it_knows_and_ignores_the_rest():
    p = Provenance.from_json({"genuine_pairs": 3, "impostor_pairs": 4, "future_field": 1})
    assert p.n_pairs == 7 and p.fingerprint is None
