"""Data without labels: a flat folder (or zip) of images, and a text file of sentences.

Both give items marked unlabelled (:func:`~twinnet.data.items.as_unlabelled`: every item its own
class), which label-free losses (``ntxent``, ``byol``, ``vicreg``, … on the ``views`` plan) and the
pseudo-label plan train from. Any other format is read without labels with ``data.labels: false``,
and a labelled folder plus an unlabelled one is mixed data (``data.unlabelled_path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twinnet.config import InputSpec
from twinnet.data.archives import zip_image_folder
from twinnet.data.images import is_image_file
from twinnet.data.items import ItemSet, as_unlabelled, load_images
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.data.text import _COLUMN_A, _COLUMN_B, read_utf8, text_items
from twinnet.errors import DataError


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
