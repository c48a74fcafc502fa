"""Fingerprint impressions (format ``fingerprints``): one class per finger, the sensor's database
and the impression number per item, the resolution of every image.

Layouts (any mix, searched below ``ROOT``)::

    ROOT/101_1.tif ... ROOT/110_8.tif            FVC's own names: <finger>_<impression>.<tif|bmp|png>
    ROOT/<finger>/<impression>.png               a folder per finger
    ROOT/<database>/<finger>/<impression>.png    a folder per database (sensor), then per finger
    ROOT/<database>/101_1.tif                    several FVC databases

A finger is its folder path below ``ROOT`` plus, for FVC names, its number; its **database** is the
first folder below ``ROOT`` when there is one, else ``ROOT``'s name (FVC's impostor pairs stay
within a database). Each image's resolution is the one its file declares, else the ``dpi`` column
of ``ROOT/MANIFEST.csv`` (columns ``path`` and ``dpi``; also ``subject_id``, the person), else the
model's ``fingerprint`` preprocessor's ``source_dpi``; the preprocessor resamples every image to the
model's resolution.

Items are grouped by person where the manifest names one, else by database: FVC publishes no
person ids and one volunteer may give several fingers of one database, so a split by group
(``data.split: group``) never puts one person on both sides.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from twinnet.config import InputSpec
from twinnet.data.images import check_image_size, decode_image
from twinnet.data.items import ItemSet
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.errors import DataError
from twinnet.fingerprints.preprocess import image_dpi

EXTENSIONS = frozenset({".tif", ".tiff", ".bmp", ".png"})
#: FVC's file names: ``<finger>_<impression>.<ext>``.
FVC_NAME = re.compile(r"^(\d+)_(\d+)\.(tif|tiff|bmp|png)$", re.IGNORECASE)
MANIFEST = "MANIFEST.csv"


@dataclass(frozen=True)
class Impression:
    """One file: which finger, which impression, which database, at what resolution, whose."""

    path: Path
    finger: str
    impression: int
    database: str
    dpi: float | None = None
    person: str | None = None


def parse_name(path: Path, root: Path) -> tuple[str, int] | None:
    """``(finger, impression)`` of a file below ``root``: FVC's ``<finger>_<impression>`` names, or
    ``<finger folder>/<impression>``; None for files that are neither (a stem without digits)."""
    rel = path.relative_to(root)
    folder = rel.parent.as_posix()
    m = FVC_NAME.match(path.name)
    if m:
        finger = m.group(1) if folder == "." else f"{folder}/{m.group(1)}"
        return finger, int(m.group(2))
    if folder == ".":
        return None
    digits = re.findall(r"\d+", path.stem)
    return (folder, int(digits[-1])) if digits else None


def read_manifest(root: Path) -> dict[str, dict[str, str]]:
    """Rows of ``root/MANIFEST.csv`` by their ``path`` (relative to ``root``); empty when absent."""
    path = root / MANIFEST
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise DataError(f"{path}: line 1: a manifest needs a 'path' column")
            return {row["path"]: row for row in reader}
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None


def _dpi(value: str | None, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        dpi = float(value)
    except ValueError:
        dpi = -1.0
    if not 50 <= dpi <= 5000:
        raise DataError(f"{where}: dpi {value!r} is not a resolution between 50 and 5000")
    return dpi


def scan(root: str | Path) -> list[Impression]:
    """Every impression below ``root``, sorted by database, finger and impression."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of fingerprint images")
    manifest = read_manifest(root)
    rows = list(manifest)
    found = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()):
        parsed = parse_name(path, root)
        if parsed is None:
            continue
        finger, impression = parsed
        parts = finger.split("/")
        database = parts[0] if len(parts) > 1 else root.name
        rel = path.relative_to(root).as_posix()
        row = manifest.get(rel)
        where = f"{root / MANIFEST}: line {rows.index(rel) + 2}" if row is not None else str(path)
        dpi = _dpi(row.get("dpi"), where) if row else None
        person = (row.get("subject_id") or "").strip() if row else ""
        found.append(Impression(path, finger, impression, database, dpi,
                                person if person and person != "unknown" else None))  # fmt: skip
    if not found:
        raise DataError(f"{root}: no fingerprint images (<finger>_<impression>.tif|bmp|png, or "
                        "<finger>/<impression>.png) found")  # fmt: skip
    return sorted(found, key=lambda i: (i.database, i.finger, i.impression))


def load_impression(imp: Impression, spec: InputSpec) -> torch.Tensor:
    """One impression through the model's input spec (its preprocessing included); the manifest's
    dpi is given to the preprocessor when the file declares none."""
    try:
        with Image.open(imp.path) as image:
            check_image_size(image, imp.path)
            image.load()
            if imp.dpi is not None and not image_dpi(image, 0.0):  # the file declares no usable dpi
                image.info["dpi"] = (imp.dpi, imp.dpi)
            return decode_image(image, spec, imp.path)
    except FileNotFoundError:
        raise DataError(f"{imp.path}: image file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{imp.path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{imp.path}: unreadable or truncated image ({err})") from None


def read_fingerprints(root: str | Path, spec: InputSpec, skip_bad: bool = False) -> ItemSet:
    """The impressions below ``root`` as items: labels = fingers, groups = persons (else
    databases); ``attributes``: ``impression``, ``database`` (its name) and ``dpi`` (0 where unknown)."""
    impressions = scan(root)
    tensors, kept = [], []
    for imp in impressions:
        try:
            tensors.append(load_impression(imp, spec))
            kept.append(imp)
        except DataError:
            if not skip_bad:
                raise
    if not kept:
        raise DataError(f"{root}: no readable fingerprint images")
    fingers = sorted({i.finger for i in kept})
    groups = sorted({i.person or f"database:{i.database}" for i in kept})
    finger_id, group_id = ({n: k for k, n in enumerate(v)} for v in (fingers, groups))
    items = ItemSet(
        torch.stack(tensors), np.array([finger_id[i.finger] for i in kept]), fingers,
        names=[str(i.path) for i in kept], groups=np.array([group_id[i.person or f"database:{i.database}"]
                                                            for i in kept]),
        attributes={"impression": np.array([i.impression for i in kept]),
                    "database": np.array([i.database for i in kept]),
                    "dpi": np.array([i.dpi or 0.0 for i in kept], dtype=np.float64)},
    )  # fmt: skip
    return items


@DATA_SOURCES.register("fingerprints")
class FingerprintSource(DataSource):
    """Fingerprint impressions: FVC's ``<finger>_<impression>.tif`` names or a folder per finger
    (optionally below a folder per database); TIF, BMP, PNG; resolution from the file, else the
    folder's ``MANIFEST.csv``, else the model's preprocessor."""

    priority = 4  # below the signature layouts: SigComp names (001_01.PNG) look like FVC ones, `_forg` folders do not

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        if spec.kind != "image" or not path.is_dir():
            return False
        if any(FVC_NAME.match(p.name) for p in path.iterdir()):
            return True
        return any(FVC_NAME.match(p.name) for d in path.iterdir() if d.is_dir() for p in d.iterdir())

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        return Dataset(read_fingerprints(path, spec, options.skip_bad))
