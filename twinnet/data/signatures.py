"""Signatures: offline images (SigComp2011 layout) and online pen trajectories (SVC2004 Task 2).

Items are labelled so that in-batch mining and pair sampling learn the right thing: a writer's
genuine signatures share one class (``2·writer``) and the skilled forgeries of that writer's
signature form another (``2·writer + 1``), so a forgery is always a negative for the genuine
ones. ``attributes["writer"]`` and ``attributes["genuine"]`` keep the truth for the protocol.

Offline layout (any root of the same kind)::

    ROOT/<writer>/*.png          genuine signatures of <writer>
    ROOT/<writer>_forg/*.png     skilled forgeries of <writer>'s signature (.PNG too)

Online layout: ``DIR/U<user>S<n>.TXT``; first line the number of points N, then N lines
``x y time pen_down azimuth altitude pressure``; S1–S20 genuine, S21–S40 skilled forgeries.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from twinnet.config import InputSpec
from twinnet.data.images import is_image_file
from twinnet.data.items import ItemSet
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.errors import DataError

# -- offline ---------------------------------------------------------------------------------------


def otsu_threshold(gray: np.ndarray) -> int:
    """Otsu's threshold of an 8-bit image: the level that maximises between-class variance."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    levels = np.arange(256)
    weight_bg = np.cumsum(hist)
    weight_fg = total - weight_bg
    mean_cum = np.cumsum(hist * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_bg = mean_cum / weight_bg
        mean_fg = (mean_cum[-1] - mean_cum) / weight_fg
        between = weight_bg * weight_fg * (mean_bg - mean_fg) ** 2
    return int(np.nanargmax(np.nan_to_num(between, nan=-1.0)))


def preprocess_signature(image: Image.Image, spec: InputSpec, margin: int = 2) -> torch.Tensor:
    """Grayscale → Otsu background removal → invert (ink high) → crop to the ink → resize keeping
    the aspect ratio, centred on a ``spec.size`` canvas → ``uint8 (1, H, W)``."""
    gray = np.array(image.convert("L"), dtype=np.uint8)
    t = otsu_threshold(gray)
    ink = np.where(gray <= t, 255 - gray, 0).astype(np.uint8)  # background → 0, ink → its darkness
    rows, cols = np.nonzero(ink.any(1))[0], np.nonzero(ink.any(0))[0]
    if len(rows) == 0:
        return torch.zeros(1, *spec.size, dtype=torch.uint8)
    r0, r1 = max(0, rows[0] - margin), min(ink.shape[0], rows[-1] + 1 + margin)
    c0, c1 = max(0, cols[0] - margin), min(ink.shape[1], cols[-1] + 1 + margin)
    crop = Image.fromarray(ink[r0:r1, c0:c1])
    h, w = spec.size
    scale = min(h / crop.height, w / crop.width)
    new = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    crop = crop.resize(new, Image.Resampling.BILINEAR)
    canvas = np.zeros((h, w), np.uint8)
    top, left = (h - new[1]) // 2, (w - new[0]) // 2
    canvas[top : top + new[1], left : left + new[0]] = np.asarray(crop)
    return torch.from_numpy(canvas)[None]


def load_signature_image(path: Path, spec: InputSpec) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            image.load()
            return preprocess_signature(image, spec)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from None


def read_offline_signatures(root: str | Path, spec: InputSpec, skip_bad: bool = False) -> ItemSet:
    """Genuine and forged signature images per writer (SigComp2011 layout), preprocessed."""
    root = Path(root)
    if root.is_dir() and (root / "train").is_dir() and not any(p.name.endswith("_forg") for p in root.iterdir()):
        root = root / "train"  # the SigComp2011 folder as shipped: ROOT/train/<writer>
    if not root.is_dir():
        raise DataError(f"signature folder not found: {root}")
    writers = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.endswith("_forg"))
    if not writers:
        raise DataError(f"{root}: no writer folders (<writer>/ with genuine, <writer>_forg/ with forgeries)")
    tensors, writer_ids, genuine, names = [], [], [], []
    for w, writer in enumerate(writers):
        for folder, is_genuine in ((root / writer, True), (root / f"{writer}_forg", False)):
            if not folder.is_dir():
                continue
            for path in sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p)):
                try:
                    tensors.append(load_signature_image(path, spec))
                except DataError:
                    if skip_bad:
                        continue
                    raise
                writer_ids.append(w)
                genuine.append(is_genuine)
                names.append(str(path))
    return _signature_items(torch.stack(tensors), writer_ids, genuine, names, writers)


def _signature_items(data: torch.Tensor, writer_ids: list[int], genuine: list[bool], names: list[str],
                     writers: list[str]) -> ItemSet:  # fmt: skip
    w = np.asarray(writer_ids, dtype=np.int64)
    g = np.asarray(genuine, dtype=bool)
    class_names = [f"{x}{suffix}" for x in writers for suffix in ("", "_forg")]
    return ItemSet(data, 2 * w + (~g), class_names, names, groups=w, attributes={"writer": w, "genuine": g})


# -- online ----------------------------------------------------------------------------------------

_SVC_NAME = re.compile(r"^U(\d+)S(\d+)\.TXT$", re.IGNORECASE)
SVC_COLUMNS = ("x", "y", "time", "pen_down", "azimuth", "altitude", "pressure")


def read_svc_file(path: str | Path) -> np.ndarray:
    """One SVC2004 file as an ``(N, 7)`` float array; errors name the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise DataError(f"{path}: empty file")
    try:
        count = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise DataError(f"{path}:1: expected the number of points, got {lines[0][:40]!r}") from None
    rows = lines[1:]
    if count != len(rows):
        raise DataError(f"{path}: the header says {count} points but the file has {len(rows)} rows")
    if count < 2:
        raise DataError(f"{path}: a trajectory needs at least 2 points")
    out = np.empty((count, 7), np.float64)
    for i, line in enumerate(rows):
        fields = line.split()
        if len(fields) != 7:
            raise DataError(
                f"{path}:{i + 2}: expected 7 values (x y time pen azimuth altitude pressure), got {len(fields)}"
            )
        try:
            out[i] = [float(f) for f in fields]
        except ValueError:
            raise DataError(f"{path}:{i + 2}: not a number in {line[:60]!r}") from None
    return out


#: The rows of a trajectory item (:func:`trajectory_features`), in order: positions, their derived
#: features, pressure and pen-down. Only ``x``, ``y``, ``pressure`` and ``pen_down`` are measured; the
#: others are computed from the positions by :func:`derive_features`.
TRAJECTORY_FEATURES = ("x", "y", "dx", "dy", "cos", "sin", "speed", "pressure", "pen_down")


def derive_features(x: torch.Tensor, y: torch.Tensor, pressure: torch.Tensor, pen: torch.Tensor) -> torch.Tensor:
    """The trajectory features (:data:`TRAJECTORY_FEATURES`) of signals sampled at equal time steps,
    each ``(..., length)`` → ``(..., 9, length)`` in their dtype.

    Position: centred on the mean, scaled by the standard deviation of y (so the height of the
    writing, not the tablet, sets the scale). Then dx, dy (velocity, central differences), cos and
    sin of the direction of motion, speed, pressure scaled to a maximum of 1 per trajectory (an
    all-zero pressure stays zero), pen-down as it is. The reader and trajectory augmentation
    (:mod:`twinnet.data.trajectory_augment`) both compute the features here.
    """
    scale = y.std(-1, unbiased=False, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    x = (x - x.mean(-1, keepdim=True)) / scale
    y = (y - y.mean(-1, keepdim=True)) / scale
    dx, dy = torch.gradient(x, dim=-1)[0], torch.gradient(y, dim=-1)[0]
    speed = torch.hypot(dx, dy)
    moving, safe = speed > 0, speed.clamp_min(1e-12)
    cos = torch.where(moving, dx / safe, torch.zeros_like(dx))
    sin = torch.where(moving, dy / safe, torch.zeros_like(dy))
    pmax = pressure.amax(-1, keepdim=True)
    pmax = torch.where(pmax != 0, pmax, torch.ones_like(pmax))
    return torch.stack([x, y, dx * 10, dy * 10, cos, sin, speed * 10, pressure / pmax, pen], -2)


def trajectory_features(points: np.ndarray, length: int = 256) -> np.ndarray:
    """Normalise a trajectory and derive features, resampled to ``length`` steps in time.

    Time: resampled uniformly between the first and last time stamp; then the features of
    :func:`derive_features` (x, y, dx, dy, cos, sin, speed, pressure, pen-down) → ``(9, length)``,
    float32.
    """
    t = points[:, 2] - points[0, 2]
    order = np.argsort(t, kind="stable")
    points, t = points[order], t[order]
    t, unique = np.unique(t, return_index=True)
    points = points[unique]
    if len(t) < 2:
        t = np.arange(len(points), dtype=np.float64)
    grid = np.linspace(t[0], t[-1], length)
    x, y, pressure, pen = (torch.from_numpy(np.interp(grid, t, points[:, c])) for c in (0, 1, 6, 3))
    return derive_features(x, y, pressure, pen).numpy().astype(np.float32)


def read_online_signatures(folder: str | Path, length: int = 256) -> ItemSet:
    """All ``U<user>S<n>.TXT`` files of a folder: S1–S20 genuine, S21–S40 skilled forgeries."""
    folder = Path(folder)
    if (folder / "Task2").is_dir():
        folder = folder / "Task2"
    if not folder.is_dir():
        raise DataError(f"signature folder not found: {folder}")
    entries = []
    for path in folder.iterdir():
        m = _SVC_NAME.match(path.name)
        if m:
            entries.append((int(m.group(1)), int(m.group(2)), path))
    if not entries:
        raise DataError(f"{folder}: no U<user>S<n>.TXT files")
    entries.sort()
    users = sorted({u for u, _, _ in entries})
    index = {u: i for i, u in enumerate(users)}
    data = torch.from_numpy(np.stack([trajectory_features(read_svc_file(p), length) for _, _, p in entries]))
    return _signature_items(
        data, [index[u] for u, _, _ in entries], [n <= 20 for _, n, _ in entries], [str(p) for _, _, p in entries],
        [f"U{u}" for u in users],
    )  # fmt: skip


def _offline_root(path: Path) -> Path:
    if path.is_dir() and (path / "train").is_dir() and not any(p.name.endswith("_forg") for p in path.iterdir()):
        return path / "train"
    return path


@DATA_SOURCES.register("offline_signatures")
class OfflineSignatureSource(DataSource):
    """Signature images per writer, SigComp2011 layout: ``<writer>/`` genuine and ``<writer>_forg/``
    skilled forgeries (the shipped folder's ``train/`` is found by itself). Items are labelled by
    writer, grouped by writer, with ``genuine`` per item; after training, the ``signature``
    protocol's threshold is calibrated on the validation writers."""

    priority = 5
    calibration_protocols = ("signature",)

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        root = _offline_root(path)
        return spec.kind == "image" and root.is_dir() and any(p.name.endswith("_forg") for p in root.iterdir())

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        return Dataset(read_offline_signatures(path, spec, options.skip_bad))


@DATA_SOURCES.register("online_signatures")
class OnlineSignatureSource(DataSource):
    """SVC2004 pen trajectories: ``U<user>S<n>.TXT`` files (S1–S20 genuine, S21–S40 skilled
    forgeries), resampled to ``model.input.length`` steps."""

    priority = 5
    calibration_protocols = ("signature",)

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        folder = path / "Task2" if (path / "Task2").is_dir() else path
        return spec.kind == "sequence" and folder.is_dir() and any(folder.glob("U*S*.TXT"))

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        return Dataset(read_online_signatures(path, spec.length or 256))
