"""Omniglot (Lake et al. 2015): the official one-shot run folders, and the canonical files.

Run folders, as released for Lake et al.'s 20-way within-alphabet task::

    DIR/run01/training/class01.png … class20.png
    DIR/run01/test/item01.png … item20.png
    DIR/run01/class_labels.txt      lines "run01/test/item01.png run01/training/class08.png"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from twinnet.config import InputSpec
from twinnet.data.images import load_image, to_float
from twinnet.data.items import ItemSet
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.errors import DataError

OFFICIAL_BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"


@dataclass(frozen=True)
class Checksum:
    """What is known of a file: SHA-256 where published or known, else the official MD5, and the size."""

    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


# The small zips' SHA-256 are of the official files; for the two full zips the official repository
# publishes only MD5 and size (the copies in shared data are re-packed, so their SHA-256 differ).
OMNIGLOT_FILES: dict[str, Checksum] = {
    "images_background.zip": Checksum(md5="68d2efa1b9178cc56df9314c21c6e718", size=9_464_212),
    "images_evaluation.zip": Checksum(md5="6b91aef0f799c5bb55b94e3f2daec811", size=6_462_886),
    "images_background_small1.zip": Checksum(
        sha256="f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
        md5="e704a628b5459e08445c13499850abc4",
    ),
    "images_background_small2.zip": Checksum(
        sha256="3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
        md5="b75a71a51d3b13f821f212756fe481fd",
    ),
}


@dataclass
class OneShotRun:
    """One run: 20 support images (one per class), 20 test images and the true class of each."""

    name: str
    support: torch.Tensor
    test: torch.Tensor
    answer: list[int]


_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s*$")


def load_runs(root: str | Path, spec: InputSpec) -> list[OneShotRun]:
    """Read every ``runNN`` folder under ``root``; errors name the file and line at fault."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"run folder not found: {root}")
    run_dirs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "class_labels.txt").is_file())
    if not run_dirs:
        raise DataError(f"{root}: no run folders (runNN/class_labels.txt) found")
    runs = []
    for run in run_dirs:
        labels = run / "class_labels.txt"
        support_files = sorted((run / "training").glob("*.png"))
        if not support_files:
            raise DataError(f"{run}/training: no support images")
        index = {p.name: i for i, p in enumerate(support_files)}
        tests, answer = [], []
        for line_no, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            m = _LINE.match(line)
            if not m:
                raise DataError(f"{labels}:{line_no}: expected 'runNN/test/itemNN.png runNN/training/classNN.png'")
            test_rel, class_rel = m.groups()
            class_name = Path(class_rel).name
            if class_name not in index:
                raise DataError(f"{labels}:{line_no}: {class_rel} is not among {run.name}/training's images")
            tests.append(run / "test" / Path(test_rel).name)
            answer.append(index[class_name])
        if not tests:
            raise DataError(f"{labels}: no test items listed")
        runs.append(OneShotRun(
            run.name,
            torch.stack([to_float(load_image(p, spec)) for p in support_files]),
            torch.stack([to_float(load_image(p, spec)) for p in tests]),
            answer,
        ))  # fmt: skip
    return runs


@DATA_SOURCES.register("omniglot_runs")
class OneShotRunsSource(DataSource):
    """A folder of official one-shot runs (``runNN/class_labels.txt``, ``training/``, ``test/``)."""

    priority = 10  # a runs folder is also a folder of sub-folders: recognise it first

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        return path.is_dir() and any((p / "class_labels.txt").is_file() for p in path.iterdir() if p.is_dir())

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        runs = load_runs(path, spec)
        empty = ItemSet(torch.zeros(0, *spec.example_shape()), np.zeros(0, np.int64), [])
        return Dataset(empty, runs=runs)
