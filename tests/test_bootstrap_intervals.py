"""Intervals honest about identities: trials of one identity are correlated, so a bootstrap that
resamples identities (``bootstrap-identity``) must cover where Clopper–Pearson (trials taken as
independent) does not, be deterministic for a seed, and never be narrower than Clopper–Pearson."""

from __future__ import annotations

import numpy as np
import pytest

from twinnet.calibrate import BOOTSTRAP_IDENTITY, CLOPPER_PEARSON, bootstrap_identity_intervals, fit_operating_point
from twinnet.calibrate import measure as measure_at
from twinnet.compare import DISTANCE
from twinnet.metrics import calc_clopper_pearson


def population(rng: np.random.Generator, identities: int = 12, trials: int = 40, clustered: bool = True):
    """Impostor trials of ``identities`` identities (``trials`` each) and one genuine trial per
    identity. Clustered: each identity has its own false-accept rate (Beta(0.5, 4.5), mean 0.1);
    else every trial has the rate 0.1. The population's FAR is 0.1 either way."""
    ids = np.repeat(np.arange(identities), trials)
    rate = rng.beta(0.5, 4.5, identities)[ids] if clustered else np.full(len(ids), 0.1)
    accept = np.r_[rng.random(len(ids)) < rate, np.ones(identities, bool)]
    genuine = np.r_[np.zeros(len(ids), bool), np.ones(identities, bool)]
    return accept, genuine, np.r_[ids, np.arange(identities)]


def test_bootstrap_covers_clustered_rates_where_clopper_pearson_does_not():
    rng = np.random.default_rng(1)
    boot = exact = 0
    runs = 200
    for _ in range(runs):
        accept, genuine, ids = population(rng)
        far_ci, _ = bootstrap_identity_intervals(accept, genuine, ids, resamples=1000)
        cp = calc_clopper_pearson(int(accept[~genuine].sum()), int((~genuine).sum()))
        boot += far_ci[0] <= 0.1 <= far_ci[1]
        exact += cp[0] <= 0.1 <= cp[1]
    # measured with these seeds: bootstrap 87%, Clopper–Pearson 48% (12 identities, 480 trials)
    assert boot / runs >= 0.8 and exact / runs <= 0.65


def test_bootstrap_is_seeded_contains_clopper_pearson_and_is_wider_when_clustered():
    accept, genuine, ids = population(np.random.default_rng(3))
    first = bootstrap_identity_intervals(accept, genuine, ids)
    assert first == bootstrap_identity_intervals(accept, genuine, ids)  # same seed, same interval
    assert first != bootstrap_identity_intervals(accept, genuine, ids, seed=1)
    cp = calc_clopper_pearson(int(accept[~genuine].sum()), int((~genuine).sum()))
    far_ci = first[0]
    assert far_ci[0] <= cp[0] and far_ci[1] >= cp[1]
    assert far_ci[1] - far_ci[0] > 1.5 * (cp[1] - cp[0])  # strongly clustered: much wider
    # independent trials: about as wide as Clopper–Pearson (it is the hull of both)
    a, g, i = population(np.random.default_rng(3), identities=40, trials=40, clustered=False)
    ind = bootstrap_identity_intervals(a, g, i)[0]
    cp_ind = calc_clopper_pearson(int(a[~g].sum()), int((~g).sum()))
    assert ind[1] - ind[0] < 1.3 * (cp_ind[1] - cp_ind[0])
    # no false accepts at all: the bootstrap alone would say [0, 0]; Clopper–Pearson's upper end stays
    none = bootstrap_identity_intervals(np.zeros_like(accept) | genuine, genuine, ids)[0]
    assert none[0] == 0.0 and none[1] == pytest.approx(calc_clopper_pearson(0, int((~genuine).sum()))[1])


def test_measure_and_fit_say_which_interval_they_give():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(10), 30)
    genuine = np.tile(np.r_[np.ones(10, bool), np.zeros(20, bool)], 10)
    distance = np.where(genuine, 0.5, 1.0) + rng.normal(0, 0.3, len(ids)) + rng.normal(0, 0.3, 10)[ids]
    plain = measure_at(distance, genuine, DISTANCE, 0.75)
    grouped = measure_at(distance, genuine, DISTANCE, 0.75, identities=ids)
    assert plain["interval"] == CLOPPER_PEARSON and grouped["interval"] == BOOTSTRAP_IDENTITY
    assert plain["far"] == grouped["far"]  # the same rates, other intervals
    assert grouped["far_ci95"][0] <= plain["far_ci95"][0] and grouped["far_ci95"][1] >= plain["far_ci95"][1]
    point = fit_operating_point(distance, genuine, DISTANCE, "eer", identities=ids)
    assert point.interval == BOOTSTRAP_IDENTITY and point.to_json()["interval"] == BOOTSTRAP_IDENTITY
    assert fit_operating_point(distance, genuine, DISTANCE, "eer").interval == CLOPPER_PEARSON
    with pytest.raises(ValueError, match="identities"):
        bootstrap_identity_intervals([True], [False], [0, 1])
