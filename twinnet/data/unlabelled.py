"""Data without labels: a flat folder (or zip) of images, a text file of sentences, and a folder of
pen trajectories.

All give items marked unlabelled (:func:`~twinnet.data.items.as_unlabelled`: every item its own
class), which label-free losses (``ntxent``, ``byol``, ``vicreg``, … on the ``views`` plan) and the
pseudo-label plan train from. Any other format is read without labels with ``data.labels: false``,
and a labelled folder plus an unlabelled one is mixed data (``data.unlabelled_path``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from twinnet.config import InputSpec
from twinnet.data.archives import zip_image_folder
from twinnet.data.images import is_image_file
from twinnet.data.items import ItemSet, as_unlabelled, load_images
from twinnet.data.signatures import read_svc_file, trajectory_features
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.data.text import _COLUMN_A, _COLUMN_B, read_utf8, text_items
from twinnet.errors import DataError

log = logging.getLogger(__name__)


def _flat_images(path: Path) -> bool:
    """A folder with images directly in it and none in sub-folders."""
    if not path.is_dir():
        return False
    files = [p for p in path.iterdir() if p.is_file() and is_image_file(p)]
    if not files:
        return False
    return not any(is_image_file(p) for sub in path.iterdir() if sub.is_dir() for p in sub.rglob("*"))


def read_unlabelled_images(path: Path, spec: InputSpec, skip_bad: bool = False) -> ItemSet:
    """Every image under ``path`` (a folder, searched recursively, or a zip), unlabelled."""
    if path.suffix.lower() == ".zip":
        # class_depth 0: every image of the archive, in one class, whatever its folders
        return as_unlabelled(zip_image_folder(path, spec, class_depth=0, skip_bad=skip_bad))
    if not path.is_dir():
        raise DataError(f"{path}: not a folder or zip of images")
    paths = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        raise DataError(f"{path}: no images found")
    data, kept = load_images(paths, spec, skip_bad)
    names = [str(paths[i]) for i in kept]
    return as_unlabelled(ItemSet(data=data, labels=np.zeros(len(kept), np.int64), class_names=["?"], names=names))


@DATA_SOURCES.register("unlabelled_images")
class UnlabelledImagesSource(DataSource):
    """A flat folder of images (no class sub-folders), or any folder or zip of images read without
    its classes: every image is its own instance. Recognised by ``format: auto`` when the folder
    holds images directly and none in sub-folders."""

    priority = 1  # before ``images``, which would find no class folders in a flat folder

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        return spec.kind != "text" and _flat_images(path)

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        return Dataset(read_unlabelled_images(path, spec, options.skip_bad))


def read_sentences(path: Path) -> ItemSet:
    """One text per line of a UTF-8 file (blank lines skipped), unlabelled; an empty file is an error."""
    lines = read_utf8(path, "sentences file").splitlines()
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise DataError(f"{path}: no sentences (one text per line)")
    items = text_items(texts)
    items.names = [f"{path}:{i + 1}" for i, line in enumerate(lines) if line.strip()]
    return as_unlabelled(items)


@DATA_SOURCES.register("sentences")
class SentencesSource(DataSource):
    """A text file of sentences, one per line, for a text model, without labels. Recognised by
    ``format: auto`` for ``.txt`` files whose first line is neither tab-separated nor a pairs
    file's header (``text_a,text_b,…``)."""

    priority = 3  # before the generic pairs reader, which would take any text file

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        if spec.kind != "text" or not path.is_file() or path.suffix.lower() != ".txt":
            return False
        first = next(iter(read_utf8(path, "sentences file").splitlines()), "")
        header = {f.strip().lower() for f in first.split(",")}
        return "\t" not in first and not header & {*_COLUMN_A, *_COLUMN_B}

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        return Dataset(read_sentences(path))


def _trajectory_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".txt")


def read_unlabelled_trajectories(path: Path, length: int = 256, skip_bad: bool = False) -> ItemSet:
    """Every ``.txt`` pen-trajectory file under ``path`` (searched recursively, any names), unlabelled:
    SVC2004's text format (the number of points N, then N lines ``x y time pen_down azimuth altitude
    pressure``), resampled to ``length`` steps with the features of
    :func:`~twinnet.data.signatures.trajectory_features`."""
    if not path.is_dir():
        raise DataError(f"{path}: not a folder of trajectory files")
    paths = _trajectory_files(path)
    if not paths:
        raise DataError(f"{path}: no .txt trajectory files found")
    features, names = [], []
    for file in paths:
        try:
            features.append(trajectory_features(read_svc_file(file), length))
        except DataError as err:
            if not skip_bad:
                raise DataError(f"{err} (set data.skip_bad_images: true, or --skip-bad, to leave it out)") from None
            log.warning("skipping %s", err)
            continue
        names.append(str(file))
    if not features:
        raise DataError(f"{path}: no readable trajectory files")
    data = torch.from_numpy(np.stack(features))
    return as_unlabelled(ItemSet(data=data, labels=np.zeros(len(names), np.int64), class_names=["?"], names=names))


@DATA_SOURCES.register("unlabelled_trajectories")
class UnlabelledTrajectoriesSource(DataSource):
    """A folder of pen-trajectory files (``.txt`` in SVC2004's format, any names), for a sequence
    model (``model.input.kind: sequence``), without labels: every trajectory is its own instance.
    Recognised by ``format: auto`` for a folder with ``.txt`` files directly in it; an SVC2004 folder
    (``U<user>S<n>.TXT``) is read with its writers by ``online_signatures`` first (``data.labels: false``
    drops them)."""

    priority = 1  # after online_signatures (5), which takes U<user>S<n>.TXT folders with their labels

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        return (spec.kind == "sequence" and path.is_dir()
                and any(p.is_file() and p.suffix.lower() == ".txt" for p in path.iterdir()))  # fmt: skip

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        return Dataset(read_unlabelled_trajectories(path, spec.length or 256, options.skip_bad))
