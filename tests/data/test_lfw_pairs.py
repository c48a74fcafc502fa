"""Pairs files in LFW's formats: ``pairs.txt`` (``name n1 n2`` / ``name1 n1 name2 n2``, optional
header of counts) and ``path_a path_b label`` separated by spaces."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twinnet.data.pairs import read_pairs_file
from twinnet.errors import DataError


def _people(root: Path, names: dict[str, int]) -> None:
    for name, n in names.items():
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / name / f"{name}_{i:04d}.jpg")


def test_view2_pairs_txt_with_header_keeps_its_folds(tmp_path: Path) -> None:
    _people(tmp_path / "lfw", {"Ann_A": 3, "Bob_B": 2, "Cy_C": 2, "Di_D": 2})
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t2\nCy_C\t1\t2\nCy_C\t2\tDi_D\t1\n")
    pf = read_pairs_file(tmp_path / "pairs.txt")
    assert pf.pairs.same.tolist() == [True, False, True, False]
    assert pf.pairs.fold.tolist() == [0, 0, 1, 1]
    named = [(pf.paths[a].name, pf.paths[b].name) for a, b in zip(pf.pairs.a, pf.pairs.b)]
    assert named[1] == ("Ann_A_0001.jpg", "Bob_B_0002.jpg")
    assert all(p.parent.parent == tmp_path / "lfw" for p in pf.paths)  # found the lfw/ folder beside it


def test_view1_header_and_no_header_and_spaces(tmp_path: Path) -> None:
    _people(tmp_path, {"Ann_A": 2, "Bob_B": 1})
    (tmp_path / "v1.txt").write_text("1\nAnn_A 1 2\nAnn_A 1 Bob_B 1\n")
    assert read_pairs_file(tmp_path / "v1.txt").pairs.fold.tolist() == [0, 0]
    (tmp_path / "plain.txt").write_text("Ann_A 1 2\nAnn_A 2 Bob_B 1\n")
    pf = read_pairs_file(tmp_path / "plain.txt")
    assert pf.pairs.fold is None and pf.pairs.same.tolist() == [True, False]


def test_path_a_path_b_label_separated_by_spaces(shared_data: Path) -> None:
    pf = read_pairs_file(shared_data / "lfw" / "pairs_dev_train.txt")  # `path_a path_b label`, spaces
    assert len(pf.pairs) == 2200 and int(pf.pairs.same.sum()) == 1100
    assert all(p.is_file() for p in pf.paths[:20])


@pytest.mark.parametrize(("text", "message"), [
    ("2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n", "header says 2 set(s)"),
    ("Ann_A\t1\t2\nAnn_A\tone\tBob_B\t1\n", ":2: expected"),
    ("Zed_Z\t1\t2\nAnn_A\t1\tBob_B\t1\n", "Zed_Z/Zed_Z_0001.jpg not found"),
    ("1\nAnn_A\t1\tBob_B\t1\nAnn_A\t1\t2\n", "set 1 is not 1 same lines then 1 different"),
])  # fmt: skip
def test_bad_lfw_files_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    _people(tmp_path, {"Ann_A": 2, "Bob_B": 1})
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        read_pairs_file(tmp_path / "pairs.txt")
    assert "pairs.txt" in str(info.value)


def test_folds_field_survives_indexing() -> None:
    from twinnet.data.pairs import Pairs

    p = Pairs(np.arange(4), np.arange(4), np.array([1, 0, 1, 0], bool), fold=np.array([0, 0, 1, 1]))
    assert p[np.array([3, 0])].fold.tolist() == [1, 0]
