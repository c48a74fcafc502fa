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
    tsv.write_text("p\tq\tsame\np\tr\tdifferent\n")
    assert read_pairs_file(tsv).pairs.same.tolist() == [True, False]
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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 4, r"bin.csv:1: a binary file, not a pairs file \(NUL byte at byte 0\)"),
        (b"a,b,label\nx.png,y.png,1\n\x00\x01\x02,z.png,0\n", r"bin.csv:3: a binary file"),
        ("a,b,label\nä.png,b.png,1\nc.png,d.png,0\n".encode("latin-1"), r"bin.csv:2: not UTF-8 text"),
        ("a,b,label\nx.png,y.png,1\n".encode("utf-16"), r"bin.csv: UTF-16 text; save the pairs file as UTF-8"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), r"bin.csv:3: a binary file"),  # a PNG named .csv
    ],
    ids=["random-bytes", "nul-in-a-row", "latin-1", "utf-16", "png"],
)
def test_binary_or_non_utf8_pairs_file_is_a_data_error_naming_file_and_line(tmp_path, content, message):
    f = tmp_path / "bin.csv"
    f.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_pairs_file(f)


def test_a_field_over_the_csv_size_limit_is_a_data_error(tmp_path):
    f = tmp_path / "huge.csv"
    f.write_text('a,b,label\n"' + "x" * 200_000 + '",y.png,1\n')
    with pytest.raises(DataError, match=r"huge.csv: not a readable CSV/TSV pairs file"):
        read_pairs_file(f)


@pytest.mark.parametrize(("label", "kind"), [("1", "same"), ("0", "different")])
def test_pairs_file_with_one_label_only_is_a_data_error(tmp_path, label, kind):
    f = tmp_path / "one.csv"
    f.write_text(f"a,b,label\nx.png,y.png,{label}\nx.png,z.png,{label}\n")
    with pytest.raises(DataError, match=rf"one.csv: all 2 pairs are labelled {kind}.*need both same and different"):
        read_pairs_file(f)
