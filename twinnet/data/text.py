"""Text pairs: STS Benchmark, MRPC and generic CSV/TSV/JSONL pair files.

Every reader returns :class:`TextPairs`: the distinct texts of the file as a :class:`TextItemSet`
(each text stored once, however often it occurs) and :class:`~twinnet.data.pairs.Pairs` of
indices into them, with ``same`` (bool) and, for graded data, ``score`` scaled to [0, 1].

Malformed rows are errors that name the file, the line and the reason. Empty texts are valid
(they embed like any other text); texts longer than the encoder's ``max_length`` tokens are
truncated by the encoder, not here.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinnet.config import InputSpec
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs, read_text_file
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.errors import DataError
from twinnet.runtime import numpy_rng

TEXT_FORMATS = ("auto", "sts", "mrpc", "text_pairs")
_TRUE = {"1", "true", "yes", "same", "paraphrase", "duplicate"}
_FALSE = {"0", "false", "no", "different", "not_paraphrase", "not_duplicate"}
_COLUMN_A = ("text_a", "sentence1", "query", "question1", "anchor")
_COLUMN_B = ("text_b", "sentence2", "document", "question2", "positive")


@dataclass
class TextItemSet(ItemSet):
    """Texts as items: ``load(indices)`` returns the texts themselves, which text encoders tokenize."""

    data: list[str]  # type: ignore[assignment]

    def load(self, indices: np.ndarray | Sequence[int]) -> list[str]:  # type: ignore[override]
        return [self.data[int(i)] for i in np.asarray(indices).reshape(-1)]

    @property
    def texts(self) -> list[str]:
        return self.data

    def split_pairs(
        self, pairs: Pairs, share: float, seed: int
    ) -> tuple[tuple[TextItemSet, Pairs], tuple[TextItemSet, Pairs]]:
        """Hold out ``share`` of the pairs as :meth:`TextPairs.split` does: each side keeps only the
        texts its pairs use (a vocabulary is then built from the training texts alone)."""
        kept, held = TextPairs(self, pairs, "").split(share, seed)
        return (kept.items, kept.pairs), (held.items, held.pairs)

    def subset(self, indices: np.ndarray | Sequence[int]) -> TextItemSet:
        idx = np.asarray(indices, dtype=np.int64)
        return TextItemSet(
            data=[self.data[i] for i in idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            names=[self.names[i] for i in idx],
            groups=None if self.groups is None else self.groups[idx],
            attributes={k: v[idx] for k, v in self.attributes.items()},
        )


def text_items(texts: Sequence[str], labels: Sequence[int] | None = None) -> TextItemSet:
    """Texts as items (all in class 0 unless ``labels`` are given)."""
    texts = list(texts)
    ids = np.zeros(len(texts), np.int64) if labels is None else np.asarray(labels, np.int64)
    n_classes = int(ids.max()) + 1 if len(ids) else 1
    return TextItemSet(data=texts, labels=ids, class_names=[str(c) for c in range(n_classes)],
                       names=[f"text[{i}]" for i in range(len(texts))])  # fmt: skip


@dataclass
class TextPairs:
    """Pairs of texts: ``pairs`` index into ``items``; ``graded`` when pairs carry a ``score``."""

    items: TextItemSet
    pairs: Pairs
    source: str
    graded: bool = False

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def texts_a(self) -> list[str]:
        return self.items.load(self.pairs.a)

    @property
    def texts_b(self) -> list[str]:
        return self.items.load(self.pairs.b)

    def select(self, rows: np.ndarray) -> TextPairs:
        """The pairs at ``rows``, with an item set holding only their texts."""
        p = self.pairs[np.asarray(rows, dtype=np.int64)]
        used, inverse = np.unique(np.concatenate([p.a, p.b]), return_inverse=True)
        n = len(p)
        pairs = Pairs(inverse[:n], inverse[n:], p.same, p.score)
        return TextPairs(self.items.subset(used), pairs, self.source, self.graded)

    def split(self, share: float, seed: int) -> tuple[TextPairs, TextPairs]:
        """Hold out ``share`` of the pairs (seeded): returns ``(kept, held_out)``."""
        if not 0.0 < share < 1.0:
            raise DataError(f"held-out share must be in (0, 1), got {share}")
        order = numpy_rng(seed, 21).permutation(len(self))
        n_held = max(1, round(share * len(self)))
        if n_held >= len(self):
            raise DataError(f"{self.source}: {len(self)} pairs are too few to hold out {share:.0%}")
        return self.select(np.sort(order[n_held:])), self.select(np.sort(order[:n_held]))


class _Builder:
    """Collects pairs, storing each distinct text once."""

    def __init__(self, source: Path, positive_score: float) -> None:
        self.source = source
        self.positive_score = positive_score
        self.index: dict[str, int] = {}
        self.a: list[int] = []
        self.b: list[int] = []
        self.same: list[bool] = []
        self.score: list[float] = []

    def add(self, text_a: str, text_b: str, same: bool | None = None, score: float | None = None) -> None:
        self.a.append(self.index.setdefault(text_a, len(self.index)))
        self.b.append(self.index.setdefault(text_b, len(self.index)))
        if score is not None:
            self.score.append(score)
            same = score >= self.positive_score
        self.same.append(bool(same))

    def build(self) -> TextPairs:
        if not self.a:
            raise DataError(f"{self.source}: no pairs in the file")
        if self.score and len(self.score) != len(self.a):
            raise DataError(f"{self.source}: some rows have a score and others a label; use one of the two")
        if not self.score and not any(self.same):
            # no positive pair: nothing to learn or retrieve, and no threshold to choose. (Positive-only
            # files are fine: in-batch-negative losses and retrieval use exactly those.)
            raise DataError(f"{self.source}: all {len(self.same)} pairs are labelled different (0); training, "
                            "verification and retrieval need same (1) pairs too")  # fmt: skip
        texts = list(self.index)
        pairs = Pairs(np.asarray(self.a), np.asarray(self.b), np.asarray(self.same, dtype=bool),
                      np.asarray(self.score, dtype=np.float32) if self.score else None)  # fmt: skip
        return TextPairs(text_items(texts), pairs, str(self.source), graded=bool(self.score))


def read_utf8(path: str | Path, what: str = "text pairs file") -> str:
    """A UTF-8 text file (a byte-order mark is dropped), or a DataError saying ``{what} not found``,
    or naming the line where it is not UTF-8 or is binary (a NUL byte)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    return read_text_file(path, what)


def _parse_score(raw: str, where: str, score_max: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{where}: score {raw!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= score_max:
        raise DataError(f"{where}: score {raw!r} is outside 0..{score_max:g}")
    return value / score_max


def _parse_label(raw: object, where: str) -> bool:
    value = str(raw).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise DataError(f"{where}: label {raw!r} is not 1/0 (or true/false)")


def read_sts(path: str | Path, positive_score: float = 0.8) -> TextPairs:
    """STS Benchmark (``sts-train.csv``, ``sts-dev.csv``, ``sts-test.csv``): tab-separated, no header,
    ``genre file year score sentence1 sentence2 [sources…]``; scores 0–5, scaled to [0, 1].
    Quotes are text, not field delimiters. ``same`` is ``score >= positive_score`` (0.8 = 4 of 5)."""
    path = Path(path)
    builder = _Builder(path, positive_score)
    for line_no, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise DataError(
                f"{path}:{line_no}: expected at least 7 tab-separated fields "
                f"(genre, file, year, score, sentence1, sentence2), got {len(fields)}"
            )
        score = _parse_score(fields[4], f"{path}:{line_no}", 5.0)
        builder.add(fields[5], fields[6], score=score)
    return builder.build()


def read_mrpc(path: str | Path) -> TextPairs:
    """MRPC (``msr_paraphrase_train.txt``/``_test.txt``): tab-separated with the header
    ``Quality #1 ID #2 ID #1 String #2 String``; ``Quality`` 1 = paraphrase."""
    path = Path(path)
    lines = read_utf8(path).splitlines()
    if not lines or not lines[0].startswith("Quality"):
        raise DataError(f"{path}:1: expected the MRPC header 'Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String'")
    builder = _Builder(path, 0.5)
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise DataError(f"{path}:{line_no}: expected 5 tab-separated fields, got {len(fields)}")
        builder.add(fields[3], fields[4], same=_parse_label(fields[0], f"{path}:{line_no}"))
    return builder.build()


def _column(header: list[str], names: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def read_text_pairs(path: str | Path, score_max: float = 1.0, positive_score: float = 0.5) -> TextPairs:
    """Generic pairs: CSV (``.csv``, fields may be quoted), TSV (``.tsv``/``.txt``, no quoting) with
    a header row, or JSON Lines
    (``.jsonl``), with fields ``text_a``, ``text_b`` and either ``label`` (1/0, true/false) or
    ``score`` (0..``score_max``, scaled to [0, 1]; ``same`` is ``score >= positive_score``).
    ``sentence1``/``sentence2``, ``query``/``document`` and ``question1``/``question2`` are
    accepted for the two texts."""
    path = Path(path)
    text = read_utf8(path)
    builder = _Builder(path, positive_score)
    if path.suffix.lower() == ".jsonl":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object with text_a, text_b and label or score")
            texts = []
            for names in (_COLUMN_A, _COLUMN_B):
                key = next((k for k in names if k in row), None)
                if key is None:
                    raise DataError(f"{where}: missing field {names[0]}")
                if not isinstance(row[key], str):
                    raise DataError(f"{where}: field {key} must be a string, got {type(row[key]).__name__}")
                texts.append(row[key])
            text_a, text_b = texts
            if "score" in row:
                builder.add(text_a, text_b, score=_parse_score(str(row["score"]), where, score_max))
            elif "label" in row:
                builder.add(text_a, text_b, same=_parse_label(row["label"], where))
            else:
                raise DataError(f"{where}: missing field label (or score)")
        return builder.build()
    # CSV fields may be quoted; TSV fields are taken as they are (quotes are text, as in GLUE's TSVs)
    if path.suffix.lower() == ".csv":
        reader = csv.reader(text.splitlines())
    else:
        reader = csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    col_a, col_b = _column(header, _COLUMN_A), _column(header, _COLUMN_B)
    col_label, col_score = _column(header, ("label",)), _column(header, ("score",))
    missing = [n for n, c in (("text_a", col_a), ("text_b", col_b)) if c is None]
    if col_label is None and col_score is None:
        missing.append("label (or score)")
    if missing or col_a is None or col_b is None:
        raise DataError(f"{path}:1: the header names no column {', '.join(missing)} (found {header})")
    width = len(header)
    try:
        for row in reader:
            line_no = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path}:{line_no}"
            if len(row) != width:
                raise DataError(f"{where}: expected {width} fields like the header, got {len(row)}")
            if col_score is not None:
                builder.add(row[col_a], row[col_b], score=_parse_score(row[col_score], where, score_max))
            elif col_label is not None:
                builder.add(row[col_a], row[col_b], same=_parse_label(row[col_label], where))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    return builder.build()


def sniff_text_format(path: str | Path) -> str:
    """``sts``, ``mrpc`` or ``text_pairs``, from the file's first line."""
    path = Path(path)
    first = next(iter(read_utf8(path).splitlines()), "")
    if first.startswith("Quality\t"):
        return "mrpc"
    fields = first.split("\t")
    if len(fields) >= 7:
        try:
            float(fields[4])
            return "sts"
        except ValueError:
            pass
    return "text_pairs"


def read_text_pair_file(
    path: str | Path, format: str = "auto", *, score_max: float | None = None, positive_score: float | None = None
) -> TextPairs:
    """Read any supported text pairs file; ``format`` is one of :data:`TEXT_FORMATS`."""
    if format not in TEXT_FORMATS:
        raise DataError(f"text format {format!r} is not one of {', '.join(TEXT_FORMATS)}")
    path = Path(path)
    if format == "auto":
        format = sniff_text_format(path)
    if format == "sts":
        return read_sts(path, 0.8 if positive_score is None else positive_score)
    if format == "mrpc":
        return read_mrpc(path)
    return read_text_pairs(path, score_max or 1.0, 0.5 if positive_score is None else positive_score)


# -- data sources ---------------------------------------------------------------------------------


class _TextPairsSource(DataSource):
    """Base of the text pair formats: a file, for a text model."""

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        return spec.kind == "text" and path.is_file() and sniff_text_format(path) == self.text_format

    text_format = "text_pairs"

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        pairs = read_text_pair_file(path, self.text_format, score_max=options.score_max,
                                    positive_score=options.positive_score)  # fmt: skip
        return Dataset(pairs.items, pairs.pairs, source=pairs.source)


@DATA_SOURCES.register("sts")
class STSSource(_TextPairsSource):
    """STS-B TSV (GLUE layout): sentence pairs with a 0–5 similarity score (scaled to [0, 1]); a
    pair counts as "same" at ``data.positive_score`` (default 0.8, i.e. 4 of 5)."""

    priority = 2
    text_format = "sts"


@DATA_SOURCES.register("mrpc")
class MRPCSource(_TextPairsSource):
    """MRPC TSV (``Quality``, ids, ``#1 String``, ``#2 String``): labelled paraphrase pairs."""

    priority = 2
    text_format = "mrpc"


@DATA_SOURCES.register("text_pairs")
class GenericTextPairsSource(_TextPairsSource):
    """CSV/TSV/JSONL with ``text_a``, ``text_b`` and ``label`` or ``score`` (``data.score_max``)."""

    priority = 1
    text_format = "text_pairs"
