"""Pairs and triplets as index arrays: balanced, seeded, reproducible; and pairs files.

An epoch of pairs is a stated number of pairs, exactly half of them same-class, drawn afresh for
each ``(seed, epoch)``: the same seed and epoch always give the same pairs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinnet.errors import DataError
from twinnet.runtime import Stream, numpy_rng


@dataclass(frozen=True)
class Pairs:
    """Index pairs into an item set: ``a[i]`` and ``b[i]`` with ``same[i]`` (bool), for graded
    data (STS) ``score[i]``, the gold similarity scaled to [0, 1], and where the file says so
    (LFW's ``pairs.txt``), ``fold[i]``, the cross-validation fold of the pair (0-based)."""

    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    score: np.ndarray | None = None
    fold: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, key: slice | np.ndarray) -> Pairs:
        return Pairs(self.a[key], self.b[key], self.same[key], None if self.score is None else self.score[key],
                     None if self.fold is None else self.fold[key])  # fmt: skip


class _ClassIndex:
    """Items grouped by class, for vectorised draws of same-class and other-class partners."""

    def __init__(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        self.order = np.argsort(labels, kind="stable")  # item ids sorted by class
        sorted_labels = labels[self.order]
        self.classes, self.starts, self.sizes = np.unique(sorted_labels, return_index=True, return_counts=True)
        position = np.empty(len(labels), dtype=np.int64)
        position[self.order] = np.arange(len(labels))
        self.position = position  # where each item sits in `order`
        self.slot = np.searchsorted(self.classes, labels)  # each item's class slot
        self.n = len(labels)

    def same_partner(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A different item of the anchor's class (anchors must be in classes of size ≥ 2)."""
        slot = self.slot[anchors]
        size, start = self.sizes[slot], self.starts[slot]
        rank = self.position[anchors] - start
        offset = rng.integers(1, size)  # 1..size-1: never the anchor itself
        return self.order[start + (rank + offset) % size]

    def other_partner(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An item of any other class, uniformly over those items."""
        slot = self.slot[anchors]
        size, start = self.sizes[slot], self.starts[slot]
        r = (rng.random(len(anchors)) * (self.n - size)).astype(np.int64)
        r = np.where(r >= start, r + size, r)  # skip the anchor's own block
        return self.order[r]


def _check_labels(labels: np.ndarray) -> _ClassIndex:
    index = _ClassIndex(labels)
    if len(index.classes) < 2:
        raise DataError("pairs need at least two classes")
    if not (index.sizes >= 2).any():
        raise DataError("same-class pairs need a class with at least two items")
    return index


def balanced_pairs(labels: np.ndarray, n_pairs: int, seed: int, *parts: int) -> Pairs:
    """``n_pairs`` pairs, ``n_pairs // 2`` of them same-class, shuffled; seeded by ``(seed, *parts)``.

    Anchors are drawn uniformly over items (of classes with at least two items, for same pairs).
    """
    index = _check_labels(labels)
    rng = numpy_rng(seed, *parts)
    n_same = n_pairs // 2
    eligible = np.nonzero(index.sizes[index.slot] >= 2)[0]
    a_same = eligible[rng.integers(0, len(eligible), n_same)]
    b_same = index.same_partner(a_same, rng)
    a_diff = rng.integers(0, index.n, n_pairs - n_same)
    b_diff = index.other_partner(a_diff, rng)
    a = np.concatenate([a_same, a_diff])
    b = np.concatenate([b_same, b_diff])
    same = np.concatenate([np.ones(n_same, bool), np.zeros(n_pairs - n_same, bool)])
    perm = rng.permutation(n_pairs)
    return Pairs(a[perm], b[perm], same[perm])


def sample_triplets(labels: np.ndarray, n: int, seed: int, *parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random (anchor, positive, negative) index triplets, seeded."""
    index = _check_labels(labels)
    rng = numpy_rng(seed, *parts)
    eligible = np.nonzero(index.sizes[index.slot] >= 2)[0]
    anchors = eligible[rng.integers(0, len(eligible), n)]
    return anchors, index.same_partner(anchors, rng), index.other_partner(anchors, rng)


class PairSampler:
    """Balanced pairs for training: ``pairs_per_epoch`` pairs per epoch, in batches of ``batch_size``.

    Epoch ``e`` is drawn from the stream ``(seed, Stream.TRAIN_PAIRS, e)``: the same pairs whenever it
    is drawn, so the sampler has no state beyond its arguments.
    """

    def __init__(self, labels: np.ndarray, pairs_per_epoch: int, batch_size: int, seed: int = 0) -> None:
        _check_labels(labels)
        self.labels = np.asarray(labels)
        self.pairs_per_epoch = pairs_per_epoch
        self.batch_size = batch_size
        self.seed = seed

    def epoch(self, epoch: int) -> list[Pairs]:
        pairs = balanced_pairs(self.labels, self.pairs_per_epoch, self.seed, Stream.TRAIN_PAIRS, epoch)
        return [pairs[i : i + self.batch_size] for i in range(0, len(pairs), self.batch_size)]

    def __len__(self) -> int:
        return -(-self.pairs_per_epoch // self.batch_size)


_TRUE = {"1", "true", "same", "yes", "genuine", "match"}
_FALSE = {"0", "false", "different", "no", "impostor", "mismatch", "-1"}


@dataclass(frozen=True)
class PairsFile:
    """Pairs read from a file: unique item paths plus index pairs into them."""

    paths: list[Path]
    pairs: Pairs
    source: Path


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file (a byte-order mark is dropped), else a :class:`DataError` naming the file,
    the line and the reason: not UTF-8, or binary (a NUL byte, which no text file holds)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text; save the {what} as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}:{line}: a binary file, not a {what} (NUL byte at byte {nul})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start}); "
                        f"save the {what} as UTF-8") from None  # fmt: skip


def read_pairs_file(path: str | Path) -> PairsFile:
    """Read a pairs file in one of these formats:

    - ``a,b,label`` rows: CSV; TSV when the file ends in ``.tsv``/``.txt`` or has tabs; a ``.txt``
      without tabs is split on spaces (``path_a path_b label``, as LFW's ``pairs_dev_train.txt``).
      A header row is recognised when its label field is not a label. Labels: 1/true/same/yes for
      same pairs, 0/false/different/no for different pairs. Relative paths are relative to the file
      (or to a ``people/``/``lfw/`` folder beside it, where they are found there instead).
    - LFW's own ``pairs.txt`` (:func:`read_lfw_pairs`): ``name n1 n2`` (same person) and
      ``name1 n1 name2 n2`` (different people) lines, with an optional header line of counts.

    A file needs both kinds of pair (training pairs and verification do). Errors (a missing,
    binary or non-UTF-8 file, a malformed row) are :class:`DataError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pairs file not found: {path}")
    text = read_text_file(path, "pairs file")
    if not text.strip():
        raise DataError(f"{path}: the pairs file is empty")
    lines = text.splitlines()
    if is_lfw_pairs(lines):
        return read_lfw_pairs(path, lines)
    first = lines[0]
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") or "\t" in first else ","
    try:
        if delimiter == "\t" and "\t" not in first and "," not in first and len(first.split()) >= 3:
            rows = [line.split() for line in lines]  # path_a path_b label, separated by spaces
        else:
            rows = list(csv.reader(lines, delimiter=delimiter))
    except csv.Error as err:  # e.g. a field over csv's size limit: a binary file, or not a pairs file
        raise DataError(f"{path}: not a readable CSV/TSV pairs file ({err})") from None
    index: dict[str, int] = {}
    a, b, same = [], [], []
    for line_no, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 3:
            raise DataError(f"{path}:{line_no}: expected 3 fields a{delimiter}b{delimiter}label, got {len(row)}")
        label = row[2].strip().lower()
        if label in _TRUE:
            value = True
        elif label in _FALSE:
            value = False
        elif line_no == 1:
            continue  # header
        else:
            raise DataError(f"{path}:{line_no}: label {row[2]!r} is not one of 1/0, true/false, same/different")
        ids = []
        for field in row[:2]:
            field = field.strip()
            if not field:
                raise DataError(f"{path}:{line_no}: empty path")
            ids.append(index.setdefault(field, len(index)))
        a.append(ids[0])
        b.append(ids[1])
        same.append(value)
    if not a:
        raise DataError(f"{path}: no pairs in the file (only a header or blank lines)")
    if all(same) or not any(same):
        # one kind of pair only: a pair loss learns nothing (or collapses), and no threshold can be chosen
        kind = "same (1)" if same[0] else "different (0)"
        raise DataError(f"{path}: all {len(same)} pairs are labelled {kind}; training and verification need "
                        "both same and different pairs")  # fmt: skip
    base = _relative_root(path, [s for s in index if not Path(s).is_absolute()])
    paths = [p if (p := Path(s)).is_absolute() else base / p for s in index]
    return PairsFile(paths, Pairs(np.asarray(a), np.asarray(b), np.asarray(same, dtype=bool)), path)


def _relative_root(path: Path, relative: list[str]) -> Path:
    """The folder relative paths start from: the file's, unless the first path is not there but in
    one of :data:`LFW_IMAGE_FOLDERS` beside it (LFW's ``pairs_dev_train.txt`` names ``people/``'s files)."""
    if not relative or (path.parent / relative[0]).exists():
        return path.parent
    for folder in LFW_IMAGE_FOLDERS[1:]:
        if (path.parent / folder / relative[0]).is_file():
            return path.parent / folder
    return path.parent


# -- LFW's pairs.txt --------------------------------------------------------------------------------

#: Where LFW's person folders may sit, relative to the folder of ``pairs.txt``.
LFW_IMAGE_FOLDERS = ("", "people", "lfw", "lfw-deepfunneled", "lfw_funneled", "lfw-funneled", "images")


def _is_int(token: str) -> bool:
    return token.isdigit()


def _lfw_line(tokens: list[str]) -> bool:
    return (len(tokens) == 3 and _is_int(tokens[1]) and _is_int(tokens[2])) or (
        len(tokens) == 4 and _is_int(tokens[1]) and _is_int(tokens[3]) and not _is_int(tokens[2])
    )


def is_lfw_pairs(lines: list[str]) -> bool:
    """Whether the first data line (after an optional header of counts) is ``name n1 n2`` or
    ``name1 n1 name2 n2``."""
    rows = [line.split() for line in lines if line.strip()]
    if rows and 1 <= len(rows[0]) <= 2 and all(_is_int(t) for t in rows[0]):
        rows = rows[1:]
    return bool(rows) and _lfw_line(rows[0])


def lfw_image_name(name: str, number: int) -> str:
    """``<name>/<name>_<number:04d>.jpg``, LFW's file naming."""
    return f"{name}/{name}_{number:04d}.jpg"


def read_lfw_pairs(path: Path, lines: list[str]) -> PairsFile:
    """LFW's ``pairs.txt``: ``name n1 n2`` is a same pair (images ``n1`` and ``n2`` of ``name``),
    ``name1 n1 name2 n2`` a different pair; tabs or spaces. An optional first line of counts:
    ``N M`` (View 2: ``N`` folds, each ``M`` same lines then ``M`` different lines; each pair's
    fold is kept in :attr:`Pairs.fold`) or ``M`` (View 1: one set of ``M`` same then ``M``
    different). Images are found as ``<name>/<name>_NNNN.jpg`` in the folder of the file or one of
    :data:`LFW_IMAGE_FOLDERS` beside it, the first holding the first pair's image."""
    rows = [(no, line.split()) for no, line in enumerate(lines, start=1) if line.strip()]
    header: list[int] | None = None
    if 1 <= len(rows[0][1]) <= 2 and all(_is_int(t) for t in rows[0][1]):
        header = [int(t) for t in rows[0][1]]
        rows = rows[1:]
    names: list[tuple[str, str]] = []
    same: list[bool] = []
    for no, tokens in rows:
        if not _lfw_line(tokens):
            raise DataError(f"{path}:{no}: expected `name n1 n2` (same person) or `name1 n1 name2 n2` "
                            f"(different people), got {' '.join(tokens)!r}")  # fmt: skip
        if len(tokens) == 3:
            names.append((lfw_image_name(tokens[0], int(tokens[1])), lfw_image_name(tokens[0], int(tokens[2]))))
            same.append(True)
        else:
            names.append((lfw_image_name(tokens[0], int(tokens[1])), lfw_image_name(tokens[2], int(tokens[3]))))
            same.append(False)
    if not names:
        raise DataError(f"{path}: no pairs in the file (only a header)")
    fold = None
    if header is not None:
        n_sets, per = (header[0], header[1]) if len(header) == 2 else (1, header[0])
        if n_sets * 2 * per != len(names):
            raise DataError(f"{path}:1: the header says {n_sets} set(s) of {per} same and {per} different pairs "
                            f"({n_sets * 2 * per} lines), but the file has {len(names)} pair lines")  # fmt: skip
        fold = np.repeat(np.arange(n_sets), 2 * per)
        for k in range(n_sets):
            block = np.asarray(same[k * 2 * per : (k + 1) * 2 * per])
            if not block[:per].all() or block[per:].any():
                raise DataError(f"{path}: set {k + 1} is not {per} same lines then {per} different lines, "
                                "as the header's counts say")  # fmt: skip
    base = _lfw_image_root(path, names[0][0], rows[0][0])
    index: dict[str, int] = {}
    a = [index.setdefault(x, len(index)) for x, _ in names]
    b = [index.setdefault(y, len(index)) for _, y in names]
    if all(same) or not any(same):
        kind = "same" if same[0] else "different"
        raise DataError(f"{path}: all {len(same)} pairs are {kind} pairs; verification needs both")
    paths = [base / name for name in index]
    return PairsFile(paths, Pairs(np.asarray(a), np.asarray(b), np.asarray(same, dtype=bool), fold=fold), path)


def _lfw_image_root(path: Path, first: str, line: int) -> Path:
    tried = [path.parent / folder for folder in LFW_IMAGE_FOLDERS]
    for root in tried:
        if (root / first).is_file():
            return root
    shown = ", ".join(str(r / first) for r in tried[:3])
    raise DataError(f"{path}:{line}: image {first} not found beside the pairs file (looked for {shown}, …); "
                    "put pairs.txt next to LFW's person folders or their parent folder")  # fmt: skip
