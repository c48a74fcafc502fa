"""Score fusion: z-normalisation on the fitting trials, sum rule, logistic fit, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from twinnet.errors import DataError
from twinnet.fingerprints.fusion import ScoreFusion
from twinnet.metrics import calc_eer


def trials(n: int = 400, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    r = np.random.default_rng(seed)
    g = np.arange(n) % 4 == 0
    # two matchers with independent errors, on different scales
    return {"twin": 0.2 * g + r.normal(0.5, 0.15, n), "bozorth3": 40 * g + r.normal(15, 20, n)}, g


def test_logistic_fit_equals_sklearn_on_z_scores():
    scores, g = trials()
    fusion = ScoreFusion.fit(scores, g, "logistic")
    z = np.stack([(scores[k] - scores[k].mean()) / scores[k].std() for k in ("bozorth3", "twin")], 1)
    ref = LogisticRegression(C=1.0, class_weight="balanced").fit(z, g)
    np.testing.assert_allclose(fusion.combine(scores), ref.decision_function(z), rtol=1e-6, atol=1e-6)
    assert all(w > 0 for w in fusion.weights.values())


def test_fusion_beats_either_matcher_alone_on_new_trials():
    scores, g = trials(seed=1)
    fusion = ScoreFusion.fit(scores, g)
    test, tg = trials(seed=2)
    fused = calc_eer(fusion.combine(test), tg)[0]
    assert fused < min(calc_eer(test[k], tg)[0] for k in test)


def test_sum_rule_is_the_mean_of_z_scores():
    scores, g = trials()
    fusion = ScoreFusion.fit(scores, g, "sum")
    z = [(scores[k] - scores[k].mean()) / scores[k].std() for k in ("bozorth3", "twin")]
    np.testing.assert_allclose(fusion.combine(scores), (z[0] + z[1]) / 2)


def test_saved_fusion_gives_identical_scores(tmp_path):
    scores, g = trials()
    fusion = ScoreFusion.fit(scores, g)
    path = fusion.save(tmp_path / "fusion.json")
    again = ScoreFusion.load(path)
    np.testing.assert_array_equal(again.combine(scores), fusion.combine(scores))
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="bad.json: not a score fusion file"):
        ScoreFusion.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="no scores for twin"):
        fusion.combine({"bozorth3": scores["bozorth3"]})


def test_fit_refuses_one_class_and_mismatched_lengths():
    scores, g = trials()
    with pytest.raises(DataError, match="genuine and impostor"):
        ScoreFusion.fit(scores, np.ones(len(g), bool))
    with pytest.raises(DataError, match="scores for"):
        ScoreFusion.fit({"twin": scores["twin"][:10]}, g)
