"""The FVC protocol: trial lists, FMR100/FMR1000/ZeroFMR against hand-computed values, the
registered protocol on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import twinnet
from twinnet.compare import EuclideanDistance
from twinnet.data.items import ItemSet
from twinnet.data.sources import Dataset
from twinnet.errors import DataError
from twinnet.metrics import calc_eer
from twinnet.protocols import build_protocol
from twinnet.protocols.fvc import fnmr_at_fmr, fvc_metrics, fvc_pairs, fvc_report


def test_fvc_pair_counts_for_ten_fingers_of_eight_impressions():
    labels = np.repeat(np.arange(10), 8)
    impressions = np.tile(np.arange(1, 9), 10)
    pairs = fvc_pairs(labels, impressions, None, "fvc")
    assert pairs.same.sum() == 280 and (~pairs.same).sum() == 45
    assert (labels[pairs.a] == labels[pairs.b]).tolist() == pairs.same.tolist()
    imp = ~pairs.same
    assert (impressions[pairs.a[imp]] == 1).all() and (impressions[pairs.b[imp]] == 1).all()
    assert len({tuple(sorted(p)) for p in zip(labels[pairs.a[imp]], labels[pairs.b[imp]])}) == 45
    every = fvc_pairs(labels, impressions, None, "all")
    assert every.same.sum() == 280 and (~every.same).sum() == 80 * 79 // 2 - 280


def test_impostor_trials_stay_within_a_database_and_first_means_lowest_number():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    impressions = np.array([5, 3, 1, 7, 2, 4, 9, 8])
    databases = np.array(["a"] * 4 + ["b"] * 4)
    pairs = fvc_pairs(labels, impressions, databases, "fvc")
    impostor = list(zip(pairs.a[~pairs.same].tolist(), pairs.b[~pairs.same].tolist()))
    assert impostor == [(1, 2), (4, 7)]  # finger 0's first is impression 3 (item 1), finger 3's is 8 (item 7)
    every = fvc_pairs(labels, impressions, databases, "all")
    assert (databases[every.a] == databases[every.b]).all() and (~every.same).sum() == 8
    with pytest.raises(DataError):
        fvc_pairs(labels, impressions[:3], databases)


def test_fmr_points_against_hand_computed_values():
    # genuine 0.9, 0.8, 0.7, 0.4; 100 impostors: 98 at 0.1, one at 0.5, one at 0.75
    genuine = np.r_[np.ones(4, bool), np.zeros(100, bool)]
    scores = np.r_[[0.9, 0.8, 0.7, 0.4], [0.1] * 98, [0.5, 0.75]]
    # FMR100: one false match allowed → accept above 0.5 → 0.4 is rejected: FNMR 1/4
    assert fnmr_at_fmr(scores, genuine, 0.01) == 0.25
    # FMR1000 and ZeroFMR: none allowed → accept above 0.75 → 0.7 and 0.4 rejected: 2/4
    assert fnmr_at_fmr(scores, genuine, 0.001) == 0.5
    assert fnmr_at_fmr(scores, genuine, 0.0) == 0.5
    m = fvc_metrics(scores, genuine)
    assert (m["fmr100"], m["fmr1000"], m["zerofmr"], m["genuine"], m["impostors"]) == (0.25, 0.5, 0.5, 4, 100)
    assert m["eer"] == calc_eer(scores, genuine)[0]
    perfect = fvc_metrics(np.r_[[2.0, 3.0], [0.0, 1.0]], np.array([1, 1, 0, 0], bool))
    assert perfect["eer"] == perfect["zerofmr"] == 0.0
    with pytest.raises(DataError, match="genuine and impostor"):
        fvc_metrics(np.ones(3), np.ones(3, bool))
    with pytest.raises(DataError, match="finite"):
        fvc_metrics(np.array([np.nan, 1.0]), np.array([True, False]))


def test_report_per_database():
    labels = np.repeat(np.arange(4), 2)
    databases = np.repeat(["a", "b"], 4)
    pairs = fvc_pairs(labels, np.tile([1, 2], 4), databases, "all")
    scores = pairs.same.astype(float) + np.where(databases[pairs.a] == "b", 0.0, 0.1)
    report = fvc_report(scores, pairs, databases)
    assert set(report["per_database"]) == {"a", "b"} and report["per_database"]["a"]["genuine"] == 2


class Identity(nn.Module):
    output_dim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_the_registered_protocol_turns_distances_into_similarities():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 4)
    points = rng.normal(size=(5, 2))[labels] * 5 + rng.normal(scale=0.1, size=(20, 2))
    items = ItemSet(torch.tensor(points, dtype=torch.float32), labels, [f"f{i}" for i in range(5)],
                    attributes={"impression": np.tile([1, 2, 3, 4], 5), "database": np.array(["db"] * 20)})  # fmt: skip
    model = twinnet.TwinNetwork(Identity(), EuclideanDistance())
    protocol = build_protocol("fvc", {"impostors": "fvc"})
    assert protocol.primary_metric == "eer" and protocol.greater_is_better is False
    result = protocol.evaluate(model, Dataset(items))
    assert result["genuine"] == 30 and result["impostors"] == 10 and result.primary == 0.0
    assert result["db.eer"] == 0.0 and "db" in result.details["per_database"]
    with pytest.raises(twinnet.errors.ConfigError):
        build_protocol("fvc", {"impostors": "some"})
