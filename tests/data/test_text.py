"""Text pair readers: STS-B, MRPC, generic CSV/TSV/JSONL, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twinnet.data.text import read_mrpc, read_sts, read_text_pair_file, read_text_pairs, sniff_text_format
from twinnet.errors import DataError


def test_real_sts_and_mrpc(shared_data):
    train = read_text_pair_file(shared_data / "stsbenchmark" / "sts-train.csv")
    dev = read_text_pair_file(shared_data / "stsbenchmark" / "sts-dev.csv")
    mrpc = read_text_pair_file(shared_data / "mrpc" / "msr_paraphrase_train.txt")
    assert (len(train), len(dev), len(mrpc)) == (5749, 1500, 4076)  # MANIFEST.md's counts
    assert train.graded and not mrpc.graded
    assert train.pairs.score.min() >= 0.0 and train.pairs.score.max() == 1.0
    # STS sentences contain quotes: they must not be parsed as CSV quoting
    assert any('"' in t for t in train.items.data)
    np.testing.assert_array_equal(train.pairs.same, train.pairs.score >= 0.8)
    assert 0.6 < mrpc.pairs.same.mean() < 0.7  # MRPC is about two-thirds paraphrases
    assert not any(t.endswith("\r") for t in mrpc.items.data)  # CRLF line ends stripped


def test_sts_scores_scaled_and_texts_deduplicated(tmp_path):
    f = tmp_path / "sts.csv"
    f.write_text('main-news\tx\t2012\t0001\t5.000\tA "quoted" cat.\tA cat.\n'
                 "main-news\tx\t2012\t0002\t1.0\tA cat.\tA dog.\textra\tcolumns\n", encoding="utf-8")  # fmt: skip
    pairs = read_sts(f)
    assert pairs.items.data == ['A "quoted" cat.', "A cat.", "A dog."]
    np.testing.assert_allclose(pairs.pairs.score, [1.0, 0.2])
    assert pairs.texts_a == ['A "quoted" cat.', "A cat."]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("g\tf\t2012\t1\tnot-a-number\tA\tB", "score 'not-a-number' is not a number"),
        ("g\tf\t2012\t1\t7.5\tA\tB", "outside 0..5"),
        ("g\tf\t2012\t1\t3.0\tA", "expected at least 7 tab-separated fields"),
    ],
)
def test_sts_errors_name_file_and_line(tmp_path, line, reason):
    f = tmp_path / "sts.csv"
    f.write_text("g\tf\t2012\t1\t3.0\tA\tB\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"sts.csv:2: .*{reason}"):
        read_sts(f)


def test_mrpc_reader_and_errors(tmp_path):
    f = tmp_path / "mrpc.txt"
    f.write_bytes("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\tA b.\tA  b!\r\n0\t3\t4\tC.\tD.\r\n"
                  .encode("utf-8"))  # fmt: skip
    pairs = read_mrpc(f)
    assert pairs.pairs.same.tolist() == [True, False]
    assert sniff_text_format(f) == "mrpc"
    f.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA\tB\nx\t1\t2\tA\tB\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mrpc.txt:3: label 'x'"):
        read_mrpc(f)
    f.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mrpc.txt:2: expected 5 tab-separated fields, got 4"):
        read_mrpc(f)
    f.write_text("not a header\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mrpc.txt:1: expected the MRPC header"):
        read_mrpc(f)


def test_generic_csv_tsv_jsonl(tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('text_a,text_b,label\n"Hello, world",Hi world,1\nfoo,,0\n', encoding="utf-8")
    p = read_text_pairs(csv_file)
    assert p.texts_a == ["Hello, world", "foo"] and p.texts_b == ["Hi world", ""]  # empty text kept
    assert p.pairs.same.tolist() == [True, False] and p.pairs.score is None

    tsv = tmp_path / "p.tsv"
    tsv.write_text('sentence1\tsentence2\tscore\n"Quoted" start\tB\t4\nC\tD "x\t1\n', encoding="utf-8")
    p = read_text_pair_file(tsv, score_max=5)
    assert p.texts_a == ['"Quoted" start', "C"] and p.texts_b == ["B", 'D "x']  # TSV: quotes are text
    np.testing.assert_allclose(p.pairs.score, [0.8, 0.2])
    assert p.pairs.same.tolist() == [True, False]

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"query": "q1", "document": "d1", "label": 1}, {"text_a": "q2", "text_b": "d2", "label": "false"},
    ]) + "\n", encoding="utf-8")  # fmt: skip
    p = read_text_pair_file(jsonl)
    assert p.texts_a == ["q1", "q2"] and p.pairs.same.tolist() == [True, False]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "text_a,text_b,label\nA,B,1\nA,B\n", r"a.csv:3: expected 3 fields like the header, got 2"),
        ("a.csv", "text_a,text_b,label\nA,B,maybe\n", r"a.csv:2: label 'maybe' is not 1/0"),
        ("a.csv", "first,second,label\nA,B,1\n", r"a.csv:1: the header names no column text_a, text_b"),
        ("a.csv", "text_a,text_b\nA,B\n", r"a.csv:1: the header names no column label \(or score\)"),
        ("a.tsv", "text_a\ttext_b\tscore\nA\tB\t1.5\n", r"a.tsv:2: score '1.5' is outside 0..1"),
        ("a.csv", "", r"a.csv: the file is empty"),
        ("a.jsonl", '{"text_a": "A", "text_b": "B", "label": 1}\n{oops\n', r"a.jsonl:2: not valid JSON"),
        ("a.jsonl", '{"text_a": "A", "label": 1}\n', r"a.jsonl:1: missing field text_b"),
        ("a.jsonl", '{"text_a": "A", "text_b": 3, "label": 1}\n', r"a.jsonl:1: field text_b must be a string"),
        ("a.jsonl", '{"text_a": "A", "text_b": "B"}\n', r"a.jsonl:1: missing field label"),
        ("a.jsonl", '["A", "B", 1]\n', r"a.jsonl:1: expected a JSON object"),
    ],
)
def test_generic_errors(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_text_pair_file(f)


def test_not_utf8_and_missing(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_bytes(b"text_a,text_b,label\n\xff\xfe,B,1\n")
    with pytest.raises(DataError, match="bad.csv:2: not UTF-8"):
        read_text_pair_file(f)
    with pytest.raises(DataError, match="not found"):
        read_text_pair_file(tmp_path / "missing.csv")


def test_split_is_seeded_disjoint_and_reindexed(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("text_a,text_b,label\n" + "".join(f"a{i},b{i},{i % 2}\n" for i in range(50)), encoding="utf-8")
    pairs = read_text_pairs(f)
    kept, held = pairs.split(0.2, seed=3)
    assert (len(kept), len(held)) == (40, 10)
    assert set(kept.texts_a).isdisjoint(held.texts_a)
    assert len(held.items) == 20  # only the held-out pairs' texts
    again = pairs.split(0.2, seed=3)[1]
    assert again.texts_a == held.texts_a
    assert held.pairs.same.tolist() == [int(t[1:]) % 2 == 1 for t in held.texts_a]


@pytest.mark.parametrize("fmt", ["auto", "sts", "mrpc", "text_pairs"])
@pytest.mark.parametrize("name", ["pairs.csv", "pairs.tsv", "pairs.jsonl"])
def test_binary_text_pairs_file_is_a_data_error_naming_file_and_line(tmp_path, fmt, name):
    f = tmp_path / name
    f.write_bytes(b"text_a,text_b,label\nA,B,1\n\x00\x00\x00\x01,C,0\n")
    with pytest.raises(DataError, match=rf"{name}:3: a binary file, not a text pairs file"):
        read_text_pair_file(f, fmt)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("a.csv", "text_a,text_b,label\nA,B,0\nC,D,0\n"),
        ("a.jsonl", '{"text_a": "A", "text_b": "B", "label": 0}\n'),
        ("a.txt", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA\tB\n"),
    ],
)
def test_text_pairs_with_no_positive_pair_are_an_error(tmp_path, name, content):
    f = tmp_path / name
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{name}: all \d+ pairs are labelled different \(0\)"):
        read_text_pair_file(f)


def test_positive_only_text_pairs_stay_valid_for_in_batch_negatives(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"query": "a b", "document": "a b c", "label": 1}\n{"query": "d", "document": "d e", "label": 1}\n')
    assert read_text_pair_file(f).pairs.same.tolist() == [True, True]
