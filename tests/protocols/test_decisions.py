"""The audit of issue 23: every protocol that decides does so at the model's stored threshold, never
at one chosen on the data it scores; shuffling the evaluated labels cannot change the threshold it
uses; figures that do choose a threshold on the scored data say so (``oracle_…``); protocols
without a decision report no threshold and do not depend on the calibration."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import twinnet
from twinnet.calibrate import Calibration, OperatingPoint, Provenance, calibrate
from twinnet.compare import DISTANCE, EuclideanDistance
from twinnet.data.items import ItemSet
from twinnet.data.omniglot import OneShotRun
from twinnet.data.pairs import Pairs
from twinnet.data.sources import Dataset
from twinnet.protocols import build_protocol, protocol_names, signature_pair_accuracy
from twinnet.protocols.base import DecisionScores, decision_protocol_names

SHUFFLES = (1, 2, 3)


class Identity(nn.Module):
    output_dim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def point(threshold: float, protocol: str = "verification", **settings: object) -> OperatingPoint:
    return OperatingPoint(threshold, "eer", 0.1, 0.1, 0.9, (0.05, 0.15), (0.05, 0.15), 10, 10,
                          Provenance(genuine_pairs=100, impostor_pairs=100, protocol=protocol,
                                     settings=dict(settings)))  # fmt: skip


def model_with(points: dict[str, OperatingPoint], default: str = "default") -> twinnet.TwinNetwork:
    m = twinnet.TwinNetwork(Identity(), EuclideanDistance())
    m.calibration = Calibration(DISTANCE, dict(points), default)
    return m


def clustered(seed: int = 0, n_classes: int = 6, per_class: int = 10) -> ItemSet:
    r = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    points = r.normal(size=(n_classes, 2))[labels] * 3 + r.normal(scale=0.8, size=(len(labels), 2))
    return ItemSet(torch.tensor(points, dtype=torch.float32), labels, [f"c{i}" for i in range(n_classes)],
                   names=[f"c{c}/{i:03d}.png" for i, c in enumerate(labels)])  # fmt: skip


def shuffled_labels(items: ItemSet, seed: int) -> ItemSet:
    out = copy.copy(items)
    out.labels = np.random.default_rng(seed).permutation(items.labels)
    return out


def signatures(seed: int = 0, writers: int = 5, real: int = 8, fakes: int = 6) -> ItemSet:
    r = np.random.default_rng(seed)
    writer = np.repeat(np.arange(writers), real + fakes)
    genuine = np.tile(np.r_[np.ones(real, bool), np.zeros(fakes, bool)], writers)
    points = r.normal(size=(writers, 2))[writer] * 4 + np.where(genuine[:, None], 0.3, 1.2) * r.normal(
        size=(len(writer), 2))  # fmt: skip
    names = [f"/sig/{w:03d}{'' if g else '_forg'}/{i:03d}.png" for i, (w, g) in enumerate(zip(writer, genuine))]
    return ItemSet(torch.tensor(points, dtype=torch.float32), 2 * writer + ~genuine,
                   [f"w{i // 2}{'_forg' if i % 2 else ''}" for i in range(2 * writers)], names=names,
                   attributes={"writer": writer, "genuine": genuine})  # fmt: skip


def with_genuine(items: ItemSet, genuine: np.ndarray) -> ItemSet:
    out = copy.copy(items)
    out.attributes = {**items.attributes, "genuine": genuine}
    return out


# -- verification ------------------------------------------------------------------------------------


def test_verification_decides_at_the_stored_threshold_whatever_the_labels():
    m = model_with({"default": point(1.234), "strict": point(0.5)})
    items = clustered()
    result = build_protocol("verification", {"n_pairs": 400}).evaluate(m, Dataset(items))
    calibrated = result.details["calibrated"]
    assert calibrated["threshold"] == 1.234 and calibrated["operating_point"] == "default"
    assert calibrated["far_ci95"][0] <= calibrated["far"] <= calibrated["far_ci95"][1]
    for seed in SHUFFLES:  # other labels, other pairs: the same threshold
        again = build_protocol("verification", {"n_pairs": 400}).evaluate(m, Dataset(shuffled_labels(items, seed)))
        assert again.details["calibrated"]["threshold"] == 1.234
    # given pairs with shuffled labels: the same threshold too
    a, b = np.arange(0, 60, 2), np.arange(1, 60, 2)
    pairs = Pairs(a, b, np.arange(30) % 2 == 0)
    shuffled = Pairs(a, b, np.random.default_rng(5).permutation(pairs.same))
    for p in (pairs, shuffled):
        assert build_protocol("verification").evaluate(m, Dataset(items, p)).details["calibrated"]["threshold"] == 1.234
    # a default fitted with another protocol does not decide pairs: the first point for pairs does
    other = model_with({"default": point(9.0, "signature", references=5, aggregate="min"), "pairs": point(0.7)})
    assert build_protocol("verification").evaluate(other, Dataset(items, pairs)).details["calibrated"]["threshold"] \
        == 0.7  # fmt: skip


def test_verification_labels_its_oracle_figures():
    m = model_with({"default": point(1.0)})
    metrics = build_protocol("verification", {"n_pairs": 400}).evaluate(m, Dataset(clustered())).metrics
    assert "oracle_best_accuracy" in metrics and "oracle_best_accuracy_threshold" in metrics
    assert metrics["oracle_best_accuracy"] == metrics["best_accuracy"]  # the former key, same oracle figure


# -- signature ---------------------------------------------------------------------------------------


def test_signature_decides_at_the_stored_operating_point_whatever_the_labels():
    sig = point(0.8, "signature", references=3, aggregate="min", seed=0)
    m = model_with({"default": point(2.0), "signature": sig})
    items = signatures()
    protocol = build_protocol("signature", {"references": 3})
    metrics = protocol.evaluate(m, Dataset(items)).metrics
    assert metrics["threshold"] == 0.8 and metrics["threshold_source"] == "operating point signature"
    assert metrics["far_ci95"][0] <= metrics["far"] <= metrics["far_ci95"][1]
    for seed in SHUFFLES:
        flipped = with_genuine(items, np.random.default_rng(seed).permutation(items.attributes["genuine"]))
        assert protocol.evaluate(m, Dataset(flipped)).metrics["threshold"] == 0.8
    # other settings than the stored point's: no stored threshold, so no FAR/FRR at all
    other = build_protocol("signature", {"references": 4}).evaluate(m, Dataset(items)).metrics
    assert other["threshold"] is None and other["far"] is None and other["threshold_source"] is None
    # the threshold training runs kept in calibration.extra before operating points
    old = model_with({"default": point(2.0)})
    old.calibration.extra["signature"] = {"threshold": 0.6, "references": 3, "aggregate": "min"}
    assert protocol.evaluate(old, Dataset(items)).metrics["threshold_source"] == "training calibration"


def test_signature_training_hook_stores_an_operating_point():
    m = model_with({"default": point(2.0)})
    extra = build_protocol("signature", {"references": 3}).calibrate(m, Dataset(signatures(seed=1)))
    stored = m.calibration.points["signature"]
    assert extra["threshold"] == stored.threshold and extra["operating_point"] == "signature"
    assert stored.target == "eer" and stored.provenance.protocol == "signature" and stored.provenance.identities == 5
    assert stored.provenance.settings == {"references": 3, "aggregate": "min", "seed": 0}
    assert m.calibration.default == "default"  # the hook adds a point, it does not take over the default


def write_pairs(path: Path, items: ItemSet, flip: np.ndarray | None = None) -> Path:
    """SigComp2011-style pairs: genuine-genuine (target 0) and genuine-forgery (target 1) of one writer."""
    rows = ["img1,img2,target"]
    short = [Path(n).parent.name + "/" + Path(n).name for n in items.names]
    writer, genuine = items.attributes["writer"], items.attributes["genuine"]
    k = 0
    for w in np.unique(writer):
        real, fake = np.nonzero((writer == w) & genuine)[0], np.nonzero((writer == w) & ~genuine)[0]
        for i, j in [(real[0], real[1]), (real[2], real[3]), (real[0], fake[0]), (real[1], fake[1])]:
            target = int(not genuine[j])
            if flip is not None and flip[k]:
                target = 1 - target
            rows.append(f"{short[i]},{short[j]},{target}")
            k += 1
    path.write_text("\n".join(rows) + "\n")
    return path


def test_signature_pairs_use_the_stored_pair_threshold_and_name_the_oracle(tmp_path):
    items = signatures()
    csv = write_pairs(tmp_path / "pairs.csv", items)
    m = model_with({"default": point(1.1), "signature": point(0.8, "signature", references=3, aggregate="min")})
    protocol = build_protocol("signature", {"references": 3, "pairs_file": str(csv)})
    pairs = protocol.evaluate(m, Dataset(items)).details["pairs"]
    assert pairs["threshold"] == 1.1 and pairs["threshold_source"] == "operating point default"
    assert {"accuracy", "oracle_best_accuracy", "oracle_threshold", "far", "frr"} <= set(pairs)
    for seed in SHUFFLES:
        flip = np.random.default_rng(seed).random(20) < 0.5
        shuffled = write_pairs(tmp_path / f"shuffled{seed}.csv", items, flip)
        again = build_protocol("signature", {"references": 3, "pairs_file": str(shuffled)}).evaluate(m, Dataset(items))
        assert again.details["pairs"]["threshold"] == 1.1
    # without a stored threshold for pairs there is no accuracy, only the oracle figure, named as such
    bare = twinnet.TwinNetwork(Identity(), EuclideanDistance())
    figures = protocol.evaluate(bare, Dataset(items)).details["pairs"]
    assert "accuracy" not in figures and "oracle_best_accuracy" in figures
    direct = signature_pair_accuracy(bare, items, csv)
    assert direct["threshold_source"] == "oracle" and "accuracy" not in direct and "oracle_best_accuracy" in direct
    given = signature_pair_accuracy(bare, items, csv, threshold=1.1)
    assert given["threshold_source"] == "given" and "accuracy" in given


# -- pair classification (text pairs) ----------------------------------------------------------------


def test_pair_classification_decides_at_the_stored_threshold_whatever_the_labels():
    m = model_with({"default": point(1.5)})
    items = clustered()
    a, b = np.arange(0, 60, 2), np.r_[np.arange(1, 30, 2), np.arange(31, 60, 2)[::-1]].copy()
    pairs = Pairs(a, b, items.labels[a] == items.labels[b])
    protocol = build_protocol("pairs")
    metrics = protocol.evaluate(m, Dataset(items, pairs)).metrics
    assert metrics["threshold"] == 1.5 and "oracle_best_f1" in metrics and "oracle_best_accuracy" in metrics
    for seed in SHUFFLES:
        shuffled = replace(pairs, same=np.random.default_rng(seed).permutation(pairs.same))
        assert protocol.evaluate(m, Dataset(items, shuffled)).metrics["threshold"] == 1.5


# -- protocols without a decision --------------------------------------------------------------------


def runs(items: ItemSet) -> list[OneShotRun]:
    x = items.load(np.arange(len(items)))
    return [OneShotRun("run01", x[[0, 10, 20]], x[[1, 11, 21]], [0, 1, 2])]


def graded(items: ItemSet) -> Pairs:
    a = np.arange(0, 40, 2)
    b = np.where(np.arange(20) % 2 == 0, a + 1, (a + 25) % 60)  # neighbours share a class, 25 apart do not
    same = items.labels[a] == items.labels[b]
    return Pairs(a, b, same, np.linspace(0, 1, 20))


NO_DECISION = {
    "nway": ({"ways": 3, "episodes": 20}, lambda items: Dataset(items)),
    "oneshot": ({"ways": 3, "episodes": 20}, lambda items: Dataset(items)),
    "within-alphabet": ({"ways": 3, "episodes": 10}, lambda items: Dataset(with_drawers(items))),
    "omniglot-runs": ({}, lambda items: Dataset(items, runs=runs(items))),
    "sts": ({}, lambda items: Dataset(items, graded(items))),
    "retrieval": ({}, lambda items: Dataset(items, graded(items))),
    # fingerprints: EER/FMR100/FMR1000/ZeroFMR are points of the error curves, no stored threshold
    "fvc": ({"impostors": "all"}, lambda items: Dataset(items)),
    # self-supervised read-outs: classification accuracies, no accept/reject threshold
    "knn": ({"k": 3}, lambda items: Dataset(items)),
    "linear_probe": ({}, lambda items: Dataset(items)),
}


def with_drawers(items: ItemSet) -> ItemSet:
    out = copy.copy(items)
    out.groups = np.zeros(len(items), np.int64)
    out.attributes = {"drawer": np.tile(np.arange(10), len(items) // 10)}
    return out


# Protocols over data other than items (tracking: sequences of frames) have their own tests; here
# they only have to say they make no pair decisions.
OTHER_DATA = {"tracking"}


def test_every_protocol_is_covered_here():
    # speaker (calibrated accuracy via verification's calibrated_decisions) and speaker_id (an openset
    # subclass) are covered in tests/protocols/test_speaker.py
    covered = {"verification", "signature", "pairs", "openset", "speaker", "speaker_id", *NO_DECISION, *OTHER_DATA}
    assert {n for n in protocol_names() if not n.startswith("test")} <= covered
    assert set(decision_protocol_names()) >= {"verification", "signature"}


def test_openset_reports_rate_curve_points_that_ignore_the_calibration():
    # DIR@FAR is a point of a curve over the scored data (as TAR@FAR is), named with its false-alarm
    # rate; a stored operating point must not change it. The stored point only adds its own rates.
    protocol = build_protocol("openset", {"seed": 0})
    assert not protocol.makes_decisions()
    items = clustered()
    bare = twinnet.TwinNetwork(Identity(), EuclideanDistance())
    plain = protocol.evaluate(bare, Dataset(items)).metrics
    with_cal = protocol.evaluate(model_with({"default": point(0.01)}), Dataset(items)).metrics
    at_point = {k: with_cal.pop(k) for k in list(with_cal) if k.startswith("operating_point_")}
    assert set(at_point) == {"operating_point_dir", "operating_point_far"} and not any(k in plain for k in at_point)
    assert json.dumps(plain, sort_keys=True) == json.dumps(with_cal, sort_keys=True)
    assert all(k.startswith("dir@far=") for k in plain if "threshold" in k), plain


@pytest.mark.parametrize("name", sorted(OTHER_DATA))
def test_protocols_over_other_data_make_no_pair_decisions(name):
    protocol = build_protocol(name, {})
    assert not protocol.makes_decisions()
    assert name not in decision_protocol_names()


@pytest.mark.parametrize("name", sorted(NO_DECISION))
def test_protocols_without_a_decision_report_no_threshold_and_ignore_the_calibration(name):
    params, data_of = NO_DECISION[name]
    items = clustered()
    data = data_of(items)
    protocol = build_protocol(name, params)
    assert protocol.decision_scores(twinnet.TwinNetwork(Identity(), EuclideanDistance()), data) is None
    assert not protocol.makes_decisions()
    bare = twinnet.TwinNetwork(Identity(), EuclideanDistance())
    calibrated = model_with({"default": point(0.01)})
    plain, with_cal = protocol.evaluate(bare, data).metrics, protocol.evaluate(calibrated, data).metrics
    assert json.dumps(plain, sort_keys=True) == json.dumps(with_cal, sort_keys=True)  # NaN-safe equality
    assert not any("threshold" in k for k in plain), plain


def test_decision_scores_are_what_the_protocols_decide_on():
    m = twinnet.TwinNetwork(Identity(), EuclideanDistance())
    items = clustered()
    scores = build_protocol("verification", {"n_pairs": 200, "seed": 4}).decision_scores(m, Dataset(items))
    assert isinstance(scores, DecisionScores) and len(scores.native) == 200 and scores.genuine.sum() == 100
    _, native, same = twinnet.protocols.evaluate_verification(m, items, n_pairs=200, seed=4)
    np.testing.assert_allclose(scores.native, native)
    np.testing.assert_array_equal(scores.genuine, same)
    sig = build_protocol("signature", {"references": 3}).decision_scores(m, Dataset(signatures()))
    assert sig is not None and sig.identities == 5 and len(sig.native) == 5 * (5 + 6)
    # training's calibration on those scores decides at the threshold it stores
    cal = calibrate(scores.native, scores.genuine, DISTANCE)
    assert cal.decide(scores.native).tolist() == DISTANCE.matches(scores.native, cal.threshold()).tolist()
