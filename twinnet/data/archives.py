"""Image folders inside zip archives (read in place, never unpacked), and Omniglot's layout.

A zip holds ``[top/]<group>/<class>/<image>`` like a folder does; a single top-level folder
(``images_background/`` in Omniglot's zips) is skipped. Omniglot file names ``NNNN_DD.png``
carry the drawer ``DD`` (01–20), kept as the ``drawer`` attribute of each item.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from twinnet.config import InputSpec
from twinnet.data.faces import collect_misses, miss_report
from twinnet.data.images import IMAGE_EXTENSIONS, check_image_size, decode_image
from twinnet.data.items import ItemSet, image_folder, load_images
from twinnet.data.pairs import read_pairs_file
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.errors import DataError

log = logging.getLogger(__name__)

_DRAWER = re.compile(r"^\d+_(\d+)\.[A-Za-z]+$")


def _drawers(names: list[str]) -> np.ndarray | None:
    found = [_DRAWER.match(PurePosixPath(n).name) for n in names]
    if not found or not all(found):
        return None
    return np.asarray([int(m.group(1)) for m in found if m is not None], dtype=np.int64)


def zip_image_folder(path: str | Path, spec: InputSpec, class_depth: int = 1, skip_bad: bool = False) -> ItemSet:
    """Labelled images from a zip of class folders, decoded into memory straight from the archive."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"archive not found: {path}")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a readable zip archive") from None
    with archive, collect_misses() as misses:
        members = sorted(
            n for n in archive.namelist() if not n.endswith("/") and PurePosixPath(n).suffix.lower() in IMAGE_EXTENSIONS
        )
        tops = {PurePosixPath(n).parts[0] for n in members}
        strip = 1 if len(tops) == 1 and all(len(PurePosixPath(n).parts) > class_depth + 1 for n in members) else 0
        classes: dict[str, int] = {}
        groups: dict[str, int] = {}
        tensors, labels, group_ids, names = [], [], [], []
        for name in members:
            parts = PurePosixPath(name).parts[strip:]
            if len(parts) <= class_depth:
                continue
            try:
                with Image.open(io.BytesIO(archive.read(name))) as image:
                    check_image_size(image, f"{path}:{name}")  # before decoding: a small file can be huge
                    image.load()
                    tensors.append(decode_image(image, spec, f"{path}:{name}"))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError, zipfile.BadZipFile) as err:
                message = f"{path}:{name}: unreadable image ({err})"
                if not skip_bad:
                    raise DataError(message + " (use --skip-bad / data.skip_bad_images to leave it out)") from None
                log.warning("skipping %s", message)
                continue
            labels.append(classes.setdefault("/".join(parts[:class_depth]), len(classes)))
            group_ids.append(groups.setdefault(parts[0], len(groups)))
            names.append(f"{path}:{name}")
    if misses:
        log.warning("%s", miss_report(misses, len(tensors)))
    if not tensors:
        raise DataError(f"{path}: no images in class folders (class_depth={class_depth})")
    items = ItemSet(
        data=torch.stack(tensors), labels=np.asarray(labels), class_names=list(classes), names=names,
        groups=np.asarray(group_ids),
    )  # fmt: skip
    drawers = _drawers(names)
    if drawers is not None:
        items.attributes["drawer"] = drawers
    items.attributes["group_names"] = np.asarray(list(groups))[items.groups]
    return items


def read_items(path: str | Path, spec: InputSpec, class_depth: int = 1, skip_bad: bool = False) -> ItemSet:
    """An image folder or a zip archive of one; Omniglot drawer ids are kept when file names carry them."""
    path = Path(path)
    if path.suffix.lower() == ".zip":
        return zip_image_folder(path, spec, class_depth, skip_bad)
    items = image_folder(path, spec, class_depth, skip_bad)
    drawers = _drawers(items.names)
    if drawers is not None:
        items.attributes["drawer"] = drawers
    return items


def looks_like_omniglot(path: str | Path) -> bool:
    """Whether image file names follow Omniglot's ``NNNN_DD.png`` (then classes are two levels deep)."""
    path = Path(path)
    if path.suffix.lower() == ".zip" and path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.lower().endswith(".png")][:20]
        except zipfile.BadZipFile:
            return False
    elif path.is_dir():
        names = [p.name for _, p in zip(range(20), path.rglob("*.png"))]
    else:
        return False
    return bool(names) and all(_DRAWER.match(PurePosixPath(n).name) for n in names)


def with_rotated_classes(items: ItemSet, turns: tuple[int, ...] = (0, 1, 2, 3)) -> ItemSet:
    """Each class again rotated by 90°·k as a new class (Vinyals et al. 2016 for Omniglot):
    four times the classes, for training only."""
    if items.data.ndim != 4:
        raise DataError("rotated classes need image items")
    n_classes = len(items.class_names)
    data = torch.cat([torch.rot90(items.data, k, dims=(2, 3)) for k in turns])
    labels = np.concatenate([items.labels + i * n_classes for i in range(len(turns))])
    groups = None
    if items.groups is not None:
        n_groups = int(items.groups.max()) + 1
        groups = np.concatenate([items.groups + i * n_groups for i in range(len(turns))])
    names = [f"{n}@rot{90 * k}" for k in turns for n in items.names]
    class_names = [f"{c}@rot{90 * k}" for k in turns for c in items.class_names]
    attributes = {k: np.concatenate([v] * len(turns)) for k, v in items.attributes.items()}
    return ItemSet(data, labels, class_names, names, groups, attributes)


# -- data sources ---------------------------------------------------------------------------------


@DATA_SOURCES.register("images")
class ImageFolderSource(DataSource):
    """A folder (or zip) of class sub-folders of images; ``class_depth`` levels name a class
    (default: 2 for Omniglot's ``alphabet/character/`` layout, recognised by its file names, else 1)."""

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        return spec.kind != "text" and (path.is_dir() or path.suffix.lower() == ".zip")

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        depth = options.class_depth
        if depth is None:
            depth = 2 if looks_like_omniglot(path) else 1
        return Dataset(read_items(path, spec, depth, options.skip_bad))


@DATA_SOURCES.register("image_pairs")
class ImagePairsSource(DataSource):
    """A CSV/TSV pairs file of images: rows ``a,b,label`` (label 1/0, true/false or
    same/different), paths relative to the file. Every image must be readable."""

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        return spec.kind != "text" and path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt")

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        pairs_file = read_pairs_file(path)
        images, kept = load_images(pairs_file.paths, spec, options.skip_bad)
        if len(kept) != len(pairs_file.paths):
            raise DataError(f"{path}: some images of the pairs could not be read; pairs files need every image")
        items = ItemSet(images, np.zeros(len(images), np.int64), ["?"], [str(p) for p in pairs_file.paths])
        return Dataset(items, pairs_file.pairs)
