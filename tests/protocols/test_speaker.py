"""Speaker verification protocol: minDCF against a hand-computed case, trials, adaptive s-norm,
and the protocol end to end on a tiny synthetic set (embeddings given)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import twinnet
from twinnet.data.items import ItemSet
from twinnet.data.sources import Dataset
from twinnet.errors import DataError
from twinnet.normalize import ScoreNormalizer
from twinnet.protocols import build_protocol
from twinnet.protocols.speaker import AdaptiveSNorm, min_dcf, utterance_trials


def test_min_dcf_hand_computed() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    target = np.array([True, False, True, False, False, False])
    # thresholds (accept >= t): accept none: Pmiss 1, Pfa 0; top1: 0.5, 0; top2: 0.5, 0.25;
    # top3: 0, 0.25; top4: 0, 0.5; ... With p = 0.5: cost/min(p, 1-p) = Pmiss + Pfa → best 0.25 at top3.
    value, threshold = min_dcf(scores, target, 0.5)
    assert value == pytest.approx(0.25) and threshold == pytest.approx(0.7)
    # p = 0.01: DCF = (0.01 Pmiss + 0.99 Pfa) / 0.01; the best is to accept top1 (Pmiss .5, Pfa 0) → 0.5
    value, threshold = min_dcf(scores, target, 0.01)
    assert value == pytest.approx(0.5) and threshold == pytest.approx(0.9)
    # perfectly separated scores cost nothing; ties are accepted together
    assert min_dcf([3, 2, 1, 0], [True, True, False, False], 0.05)[0] == 0.0
    tied = min_dcf([1, 1, 0], [True, False, False], 0.5)
    assert tied[0] == pytest.approx(0.5)  # accept both tied (Pfa .5) or none (Pmiss 1): 0.5
    with pytest.raises(DataError, match="target and non-target"):
        min_dcf([1, 2], [True, True], 0.01)


def items(n_speakers: int = 3, words: int = 2, reps: int = 2) -> ItemSet:
    labels = np.repeat(np.arange(n_speakers), words * reps)
    utterance = np.tile(np.repeat(np.arange(words), reps), n_speakers)
    return ItemSet(data=torch.zeros(len(labels), 4), labels=labels, class_names=[f"s{i}" for i in range(n_speakers)],
                   attributes={"utterance": utterance})  # fmt: skip


def test_trials_count() -> None:
    it = items()
    ti = utterance_trials(it, "text_independent")
    assert len(ti) == 12 * 11 // 2 and ti.same.sum() == 3 * (4 * 3 // 2)
    td = utterance_trials(it, "text_dependent")
    # per word: 6 clips (3 speakers × 2 reps) → 15 pairs, 3 of them targets
    assert len(td) == 30 and td.same.sum() == 6
    assert (it.attributes["utterance"][td.a] == it.attributes["utterance"][td.b]).all()
    capped = utterance_trials(it, "text_independent", max_trials=30, seed=1)
    assert len(capped) == 30 and capped.same.sum() == 18  # every target kept


def test_adaptive_snorm_equals_plain_snorm_with_the_whole_cohort() -> None:
    rng = np.random.default_rng(0)
    cohort = rng.normal(size=(20, 8)).astype(np.float32)
    a, b = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    comparator = twinnet.CosineSimilarity()
    native = comparator(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    plain = ScoreNormalizer(comparator, cohort, "snorm").normalize(native, a, b)
    np.testing.assert_allclose(AdaptiveSNorm(comparator, cohort, top_n=None).normalize(native, a, b), plain)
    # top 5: statistics of the 5 closest cohort members (independent computation)
    unit = cohort / np.linalg.norm(cohort, axis=1, keepdims=True)

    def sim(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)) @ unit.T

    ta, tb = np.sort(sim(a), 1)[:, -5:], np.sort(sim(b), 1)[:, -5:]
    expected = ((native - tb.mean(1)) / tb.std(1) + (native - ta.mean(1)) / ta.std(1)) / 2
    np.testing.assert_allclose(AdaptiveSNorm(comparator, cohort, top_n=5).normalize(native, a, b), expected, rtol=1e-5)


def test_protocol_on_given_embeddings() -> None:
    it = items(4, 2, 3)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6)) * 3
    z = torch.from_numpy((centres[it.labels] + rng.normal(size=(len(it), 6))).astype(np.float32))
    config = {"input": {"kind": "vector", "features": 6}, "encoder": {"name": "mlp", "params": {"embedding_dim": 6}},
              "comparator": {"name": "cosine"}}  # fmt: skip
    model = twinnet.build_model(twinnet.ModelConfig.model_validate(config))  # only its comparator and gallery
    protocol = build_protocol("speaker", {})
    assert protocol.primary_metric == "text_independent.eer" and not protocol.greater_is_better
    result = protocol.evaluate_embeddings(model, Dataset(it), z)  # type: ignore[attr-defined]
    for mode in ("text_independent", "text_dependent"):
        assert 0 <= result[f"{mode}.eer"] < 0.2
        assert 0 <= result[f"{mode}.min_dcf_001"] <= 1.0 and f"{mode}.min_dcf_005" in result.metrics
    assert result.primary == result["text_independent.eer"]
    ident = build_protocol("speaker_id", {"enrol": 2, "templates": "mean"})
    found = ident.evaluate_embeddings(model, Dataset(it), z)  # type: ignore[attr-defined]
    assert found["enrolled_speakers"] == 2 and found["rank1"] > 0.9 and "dir@far=0.01" in found.metrics
    with pytest.raises(twinnet.ConfigError, match="templates"):
        build_protocol("speaker_id", {"templates": "median"})
