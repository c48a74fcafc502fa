"""Cohort score normalisation on numbers small enough to check by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from twinnet.compare import CosineDistance, CosineSimilarity, EuclideanDistance
from twinnet.errors import ModelFormatError
from twinnet.normalize import ScoreNormalizer, load_normalizer, save_normalizer

# 1-d embeddings, Euclidean distance: the cohort sits at 0, 2 and 4
COHORT = np.array([[0.0], [2.0], [4.0]], np.float32)
QUERY = np.array([[1.0]], np.float32)
TEMPLATE = np.array([[4.0]], np.float32)  # itself a cohort member: its self-match is left out
DISTANCE = np.array([3.0])  # |1 − 4|, similarity −3


def test_znorm_tnorm_snorm_by_hand():
    # query vs cohort: distances 1, 1, 3 → similarities −1, −1, −3: mean −5/3, std √(8/9) = 2√2/3
    # template vs cohort (itself left out): distances 4, 2 → similarities −4, −2: mean −3, std 1
    # t-norm: (−3 + 5/3) / (2√2/3) = −√2 ; z-norm: (−3 + 3) / 1 = 0 ; s-norm: (0 − √2) / 2
    euclid = EuclideanDistance()
    t = ScoreNormalizer(euclid, COHORT, "tnorm").normalize(DISTANCE, QUERY, TEMPLATE)
    z = ScoreNormalizer(euclid, COHORT, "znorm").normalize(DISTANCE, QUERY, TEMPLATE)
    s = ScoreNormalizer(euclid, COHORT, "snorm").normalize(DISTANCE, QUERY, TEMPLATE)
    assert t == pytest.approx([-math.sqrt(2)]) and z == pytest.approx([0.0]) and s == pytest.approx([-math.sqrt(2) / 2])
    mean, std = ScoreNormalizer(euclid, COHORT).stats(QUERY)
    assert mean == pytest.approx([-5 / 3]) and std == pytest.approx([2 * math.sqrt(2) / 3])
    # the comparator scores the pair itself when given only embeddings
    assert ScoreNormalizer(euclid, COHORT, "snorm").score(QUERY, TEMPLATE) == pytest.approx(s, abs=1e-6)


def test_normalised_scores_are_similarities_whatever_the_orientation():
    r = np.random.default_rng(0)
    cohort, q, t = r.normal(size=(20, 4)), r.normal(size=(5, 4)), r.normal(size=(5, 4))
    cos, dist = CosineSimilarity(), CosineDistance()
    native_cos = cos(torch.tensor(q), torch.tensor(t)).numpy()
    native_dist = dist(torch.tensor(q), torch.tensor(t)).numpy()  # 1 − cos: a distance
    for kind in ("znorm", "tnorm", "snorm"):
        a = ScoreNormalizer(cos, cohort, kind).normalize(native_cos, q, t)  # type: ignore[arg-type]
        b = ScoreNormalizer(dist, cohort, kind).normalize(native_dist, q, t)  # type: ignore[arg-type]
        np.testing.assert_allclose(a, b, atol=1e-5)  # similarity cos − 1 is cos shifted: same normalised score
    # larger = more alike: the query's own template beats a stranger after normalisation too
    n = ScoreNormalizer(dist, cohort, "snorm")
    close = dist(torch.tensor(q[:1]), torch.tensor(q[:1] + 0.01)).numpy()
    far = dist(torch.tensor(q[:1]), torch.tensor(-q[:1])).numpy()
    assert n.normalize(close, q[:1], q[:1] + 0.01)[0] > n.normalize(far, q[:1], -q[:1])[0]


def test_a_matrix_of_gallery_scores_takes_row_and_column_statistics():
    euclid = EuclideanDistance()
    queries = np.array([[1.0], [3.0]], np.float32)
    templates = np.array([[4.0], [0.0], [2.0]], np.float32)
    native = np.abs(queries - templates.T)
    norm = ScoreNormalizer(euclid, COHORT, "snorm")
    matrix = norm.normalize_matrix(native, queries, templates)
    for i in range(2):
        for j in range(3):
            one = norm.normalize(native[i, j : j + 1], queries[i : i + 1], templates[j : j + 1])
            assert matrix[i, j] == pytest.approx(one[0])


def test_template_statistics_are_kept_saved_and_loaded(tmp_path):
    euclid = EuclideanDistance()
    norm = ScoreNormalizer(euclid, COHORT, "znorm")
    norm.add_templates(["alice", "bob"], np.array([[4.0], [1.0]], np.float32))
    mean, std = norm.template_stats(["alice"])
    assert mean == pytest.approx([-3.0]) and std == pytest.approx([1.0])
    z = norm.normalize(DISTANCE, template_stats=norm.template_stats(["alice"]))
    assert z == pytest.approx([0.0])
    save_normalizer(norm, tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "normalizer.json").read_text())
    assert meta["kind"] == "znorm" and meta["cohort_size"] == 3 and meta["template_ids"] == ["alice", "bob"]
    loaded = load_normalizer(tmp_path / "model", euclid)
    np.testing.assert_array_equal(loaded.cohort, COHORT)
    assert loaded.template_stats(["bob"])[0] == pytest.approx(norm.template_stats(["bob"])[0])
    assert loaded.normalize(DISTANCE, QUERY, TEMPLATE) == pytest.approx(norm.normalize(DISTANCE, QUERY, TEMPLATE))
    with pytest.raises(ModelFormatError, match="score comparator|saved for a distance"):
        load_normalizer(tmp_path / "model", CosineSimilarity())
    (tmp_path / "model" / "normalizer.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="normalizer.safetensors is missing"):
        load_normalizer(tmp_path / "model", euclid)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="kind: 'anorm'"):
        ScoreNormalizer(EuclideanDistance(), COHORT, "anorm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n ≥ 2"):
        ScoreNormalizer(EuclideanDistance(), COHORT[:1])
    with pytest.raises(ValueError, match="needs the queries"):
        ScoreNormalizer(EuclideanDistance(), COHORT, "tnorm").normalize(DISTANCE, templates=TEMPLATE)
    with pytest.raises(ValueError, match="fewer than two cohort members"):
        ScoreNormalizer(EuclideanDistance(), COHORT[:2], "znorm").stats(COHORT[:1])
