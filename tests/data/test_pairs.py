"""twinnet.data.pairs: balanced pairs, triplets and pairs files."""

import numpy as np
import pytest

from twinnet.data import (
    PairSampler,
    balanced_pairs,
    read_pairs_file,
    sample_triplets,
)
from twinnet.errors import DataError

LABELS = np.repeat(np.arange(7), [2, 3, 5, 8, 13, 4, 2])


def test_balanced_pairs_are_half_same_and_valid():
    pairs = balanced_pairs(LABELS, 1001, seed=3)
    assert len(pairs) == 1001 and pairs.same.sum() == 500
    assert np.array_equal(LABELS[pairs.a] == LABELS[pairs.b], pairs.same)
    assert not (pairs.a == pairs.b).any()  # never an item with itself


def test_balanced_pairs_are_reproducible_per_seed_and_epoch():
    a = PairSampler(LABELS, 200, 64, seed=5).epoch(0)
    b = PairSampler(LABELS, 200, 64, seed=5).epoch(0)
    c = PairSampler(LABELS, 200, 64, seed=5).epoch(1)
    d = PairSampler(LABELS, 200, 64, seed=6).epoch(0)
    cat = lambda bs: np.concatenate([x.a for x in bs] + [x.b for x in bs])  # noqa: E731
    assert np.array_equal(cat(a), cat(b))
    assert not np.array_equal(cat(a), cat(c)) and not np.array_equal(cat(a), cat(d))
    assert [len(x) for x in a] == [64, 64, 64, 8]  # an epoch is exactly 200 pairs


def test_different_class_partners_are_uniform_over_other_items():
    pairs = balanced_pairs(LABELS, 40000, seed=0)
    diff = pairs[~pairs.same]
    sizes = np.bincount(LABELS)
    # P(partner in class 4 | anchor class c) = 13 / (37 - size_c) for c != 4
    expected = np.where(LABELS[diff.a] == 4, 0.0, 13 / (len(LABELS) - sizes[LABELS[diff.a]])).mean()
    assert (LABELS[diff.b] == 4).mean() == pytest.approx(expected, abs=0.01)


def test_triplets_are_valid():
    a, p, n = sample_triplets(LABELS, 500, seed=1)
    assert (LABELS[a] == LABELS[p]).all() and (a != p).all() and (LABELS[a] != LABELS[n]).all()


def test_pairs_file_reading_and_errors(tmp_path):
    good = tmp_path / "pairs.csv"
    good.write_text("a,b,label\nx/1.png,x/2.png,1\nx/1.png,y/1.png,0\n\n")
    pf = read_pairs_file(good)
    assert [p.name for p in pf.paths] == ["1.png", "2.png", "1.png"]
    assert pf.pairs.same.tolist() == [True, False] and pf.pairs.a.tolist() == [0, 0]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("p\tq\tsame\n")
    assert read_pairs_file(tsv).pairs.same.tolist() == [True]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv: the pairs file is empty"):
        read_pairs_file(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b,label\n")
    with pytest.raises(DataError, match="no pairs"):
        read_pairs_file(header_only)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,1\nc,d,maybe\n")
    with pytest.raises(DataError, match=r"bad.csv:2: label 'maybe'"):
        read_pairs_file(bad)
    short = tmp_path / "short.csv"
    short.write_text("a,b,1\nc,d\n")
    with pytest.raises(DataError, match=r"short.csv:2: expected 3 fields"):
        read_pairs_file(short)
