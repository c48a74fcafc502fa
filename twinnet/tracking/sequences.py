"""Tracking sequences: frames and one ground-truth box per frame, as users hand them in.

Formats read:

- **OTB**: ``DIR/img/`` or ``DIR/imgs/`` with numbered frames and ``groundtruth_rect.txt``, one
  ``x,y,w,h`` line per frame (1-based: the top-left pixel is 1,1), separated by commas, tabs or
  spaces; a line of NaN marks a frame where the target is absent.
- **VOT**: ``groundtruth.txt`` with 8 values per line, the corners of a rotated box, read as their
  axis-aligned bounding box (4-value lines are read as boxes, as VOT's own toolkit does).
- **video**: a video file (read with imageio-ffmpeg); its boxes, if any, in a rect file beside it
  (``NAME.txt``).
- **COCO stills**: ``instances.json`` (COCO ``bbox`` = ``[x, y, w, h]``, 0-based) and ``images/``:
  each non-crowd box a one-frame "sequence", for training pairs from still images.

Boxes are held as ``float64 (N, 4)`` arrays ``x, y, w, h`` in **0-based continuous pixel
coordinates** (pixel ``i`` covers ``[i, i+1)``); OTB's 1-based values are shifted on reading and
writing. Frames are ``uint8 (H, W, 3)`` RGB arrays. Every problem with a sequence is a
:class:`~twinnet.errors.DataError` naming the file, line or frame.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from twinnet.data.images import check_image_size, is_image_file
from twinnet.errors import DataError

OTB_BOXES = "groundtruth_rect.txt"
VOT_BOXES = "groundtruth.txt"
FRAME_FOLDERS = ("imgs", "img", "color", ".")
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
_SEPARATORS = re.compile(r"[,\t ]+")


def read_boxes(path: str | Path) -> np.ndarray:
    """Boxes of a ground-truth file: OTB rects (4 values) or VOT polygons (8 values) per line, as
    0-based ``x, y, w, h``; NaN rows where the target is absent. Errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: ground-truth file not found") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    rows: list[list[float]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            if rows:  # a blank line in the middle would shift every later box onto the wrong frame
                rows.append([])
            continue
        fields = [f for f in _SEPARATORS.split(line) if f]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise DataError(f"{path}, line {number}: not numbers: {line[:60]!r}") from None
        if len(values) not in (4, 8):
            raise DataError(f"{path}, line {number}: {len(values)} values; expected 4 (x,y,w,h) or 8 (a polygon)")
        rows.append(values)
    while rows and not rows[-1]:
        rows.pop()
    if any(not r for r in rows):
        blank = next(i for i, r in enumerate(rows) if not r) + 1
        raise DataError(f"{path}, line {blank}: blank line between boxes (one line per frame)")
    if not rows:
        raise DataError(f"{path}: no boxes")
    boxes = np.full((len(rows), 4), np.nan)
    for i, values in enumerate(rows):
        v = np.asarray(values)
        if np.isnan(v).any():
            continue  # the target is absent in this frame
        if not np.isfinite(v).all():
            raise DataError(f"{path}, line {i + 1}: infinite value")
        if len(v) == 8:
            xs, ys = v[0::2], v[1::2]
            boxes[i] = [xs.min() - 1, ys.min() - 1, xs.max() - xs.min(), ys.max() - ys.min()]
        else:
            boxes[i] = [v[0] - 1, v[1] - 1, v[2], v[3]]
        if boxes[i, 2] <= 0 or boxes[i, 3] <= 0:
            raise DataError(f"{path}, line {i + 1}: box of width {boxes[i, 2]:g} and height {boxes[i, 3]:g}; "
                            "both must be positive (NaN,NaN,NaN,NaN marks an absent target)")  # fmt: skip
    return boxes


def write_boxes(path: str | Path, boxes: np.ndarray) -> None:
    """Write 0-based boxes as an OTB rect file (1-based ``x,y,w,h``, NaN rows as ``NaN,NaN,NaN,NaN``)."""
    lines = []
    for b in np.asarray(boxes, dtype=np.float64):
        if np.isnan(b).any():
            lines.append("NaN,NaN,NaN,NaN")
        else:
            lines.append(",".join(f"{v:.2f}" for v in (b[0] + 1, b[1] + 1, b[2], b[3])))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def parse_box(text: str, option: str = "--init") -> np.ndarray:
    """``x,y,w,h`` (1-based, OTB convention, as a user reads it off an image viewer) → a 0-based box."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        raise DataError(f"{option}: expected x,y,w,h with a positive width and height, not {text!r}")
    return np.array([values[0] - 1, values[1] - 1, values[2], values[3]])


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            check_image_size(image, path)
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: frame not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable or truncated frame ({err})") from None


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable frame ({err})") from None


@dataclass
class Sequence:
    """One tracking sequence: ``len(self)`` frames and ``boxes`` (0-based ``x, y, w, h``, NaN rows
    where the target is absent, or ``None`` when it has no ground truth).

    Frames come from image files (``frames``) or a decoded video (``video``); :meth:`frame` reads
    one as ``uint8 (H, W, 3)`` RGB.
    """

    name: str
    frames: list[Path] = field(default_factory=list)
    boxes: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)
    """Width and height of the frames."""
    source: str = ""
    video: np.ndarray | None = None
    """Decoded frames ``(N, H, W, 3)`` of a video file (held in memory)."""
    category: str = ""
    """What kind of object the target is, where the annotation says (a COCO still's category name); "" if unknown."""

    def __len__(self) -> int:
        return len(self.video) if self.video is not None else len(self.frames)

    def frame(self, index: int) -> np.ndarray:
        if self.video is not None:
            return self.video[index]
        image = _read_rgb(self.frames[index])
        if (image.shape[1], image.shape[0]) != self.size:
            raise DataError(f"{self.frames[index]}: {image.shape[1]}×{image.shape[0]} pixels; the sequence's "
                            f"frames are {self.size[0]}×{self.size[1]}")  # fmt: skip
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.frame(i)

    def frame_name(self, index: int) -> str:
        return self.frames[index].name if self.video is None else f"{self.name}[{index}]"

    @property
    def present(self) -> np.ndarray:
        """Per frame: whether the ground truth has the target (all False without ground truth)."""
        if self.boxes is None:
            return np.zeros(len(self), bool)
        return ~np.isnan(self.boxes).any(axis=1)

    def first_box(self) -> np.ndarray:
        """The ground-truth box of the first frame (where tracking starts); a DataError when absent."""
        if self.boxes is None or not self.present[0]:
            raise DataError(f"{self.source or self.name}: the target is absent in the first frame "
                            "(give --init x,y,w,h)")  # fmt: skip
        return self.boxes[0].copy()

    def head(self, n: int) -> Sequence:
        """The first ``n`` frames (for quick validation)."""
        return Sequence(self.name, self.frames[:n], None if self.boxes is None else self.boxes[:n], self.size,
                        self.source, None if self.video is None else self.video[:n], self.category)  # fmt: skip


def check_boxes_inside(boxes: np.ndarray, size: tuple[int, int], where: str, *, tolerance: float = 0.5) -> None:
    """A DataError for the first box lying wholly outside a ``size = (W, H)`` image. Boxes partly
    outside are kept (a target leaving the view); one wholly outside is a mislabelled frame or a
    file for another resolution."""
    w, h = size
    for i, b in enumerate(boxes):
        if np.isnan(b).any():
            continue
        x0, y0, x1, y1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
        if x1 <= tolerance or y1 <= tolerance or x0 >= w - tolerance or y0 >= h - tolerance:
            raise DataError(f"{where}, line {i + 1}: box {_otb(b)} lies outside the {w}×{h} image")


def _otb(box: np.ndarray) -> str:
    return ",".join(f"{v:g}" for v in (box[0] + 1, box[1] + 1, box[2], box[3]))


def find_boxes_file(folder: Path) -> Path | None:
    for name in (OTB_BOXES, VOT_BOXES):
        if (folder / name).is_file():
            return folder / name
    return None


def is_sequence_folder(path: Path) -> bool:
    """Whether ``path`` is one sequence: a ground-truth file beside a folder of frames."""
    return path.is_dir() and find_boxes_file(path) is not None


def _frame_paths(folder: Path) -> tuple[Path, list[Path]]:
    for name in FRAME_FOLDERS:
        candidate = folder / name
        if candidate.is_dir():
            paths = sorted(p for p in candidate.iterdir() if p.is_file() and is_image_file(p))
            if paths:
                return candidate, paths
    raise DataError(f"{folder}: no frames (expected numbered images in {folder}/imgs/ or {folder}/img/)")


def _check_numbering(frames_dir: Path, paths: list[Path]) -> list[Path]:
    """Frames in number order; a gap in the numbers is a missing frame (every later box would
    belong to the wrong frame)."""
    numbered: list[tuple[int, Path]] = []
    for p in paths:
        digits = re.findall(r"\d+", p.stem)
        if not digits:
            raise DataError(f"{p}: frame names must be numbered (00000001.jpg, …)")
        numbered.append((int(digits[-1]), p))
    numbered.sort()
    numbers = [n for n, _ in numbered]
    if len(set(numbers)) != len(numbers):
        dup = next(n for n in numbers if numbers.count(n) > 1)
        raise DataError(f"{frames_dir}: two frames have the number {dup}")
    for expected, (n, _) in enumerate(numbered, start=numbers[0]):
        if n != expected:
            raise DataError(f"{frames_dir}: frame {expected} is missing (the frames jump from {expected - 1} to {n})")
    return [p for _, p in numbered]


def read_sequence(path: str | Path) -> Sequence:
    """One sequence: a folder (OTB or VOT ground truth beside its frames) or a video file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"sequence not found: {path}")
    if path.is_file():
        return read_video(path)
    boxes_file = find_boxes_file(path)
    if boxes_file is None:
        raise DataError(f"{path}: no {OTB_BOXES} (OTB) or {VOT_BOXES} (VOT) ground-truth file")
    frames_dir, paths = _frame_paths(path)
    frames = _check_numbering(frames_dir, paths)
    boxes = read_boxes(boxes_file)
    if len(boxes) != len(frames):
        raise DataError(f"{boxes_file}: {len(boxes)} boxes for {len(frames)} frames in {frames_dir} "
                        "(one box per frame)")  # fmt: skip
    size = _image_size(frames[0])
    check_boxes_inside(boxes, size, str(boxes_file))
    return Sequence(path.name, frames, boxes, size, str(path))


def read_frames_folder(path: str | Path) -> Sequence:
    """A folder of numbered frames without ground truth (what ``twinnet track --init`` starts from)."""
    path = Path(path)
    frames_dir, paths = _frame_paths(path)
    frames = _check_numbering(frames_dir, paths)
    return Sequence(path.name, frames, None, _image_size(frames[0]), str(path))


def read_video(path: str | Path) -> Sequence:
    """A video file's frames (imageio-ffmpeg), with the boxes of ``NAME.txt`` beside it if present."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise DataError(f"{path}: not a video file ({', '.join(sorted(VIDEO_EXTENSIONS))}) or sequence folder")
    try:
        import imageio_ffmpeg
    except ImportError:
        raise DataError("reading videos needs imageio-ffmpeg: pip install 'twinnet[vision]'") from None
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        w, h = meta["size"]
        frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
    except (OSError, RuntimeError, StopIteration) as err:
        raise DataError(f"{path}: cannot decode the video ({' '.join(str(err).split())[:200]})") from None
    if not frames:
        raise DataError(f"{path}: the video has no frames")
    boxes = None
    rect = path.with_suffix(".txt")
    if rect.is_file():
        boxes = read_boxes(rect)
        if len(boxes) != len(frames):
            raise DataError(f"{rect}: {len(boxes)} boxes for the {len(frames)} frames of {path}")
        check_boxes_inside(boxes, (w, h), str(rect))
    return Sequence(path.stem, [], boxes, (w, h), str(path), np.stack(frames))


def read_sequences(root: str | Path) -> list[Sequence]:
    """Every sequence in ``root`` (a folder of sequence folders), or ``root`` itself when it is one."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data not found: {root}")
    if is_sequence_folder(root) or root.is_file():
        return [read_sequence(root)]
    folders = sorted(p for p in root.iterdir() if is_sequence_folder(p))
    if not folders:
        raise DataError(f"{root}: no tracking sequences (folders with {OTB_BOXES} or {VOT_BOXES} and frames)")
    return [read_sequence(p) for p in folders]


def read_coco_stills(root: str | Path, *, min_side: float = 8.0) -> list[Sequence]:
    """COCO boxes as one-frame sequences (non-crowd boxes with both sides of at least ``min_side``
    pixels), for training pairs made from one image under shift, scale and colour changes; each
    sequence's ``category`` is its box's category name (its id where ``categories`` lacks it)."""
    root = Path(root)
    ann_path = root / "instances.json"
    try:
        data = json.loads(ann_path.read_text(encoding="utf-8"))
        images = {int(im["id"]): im for im in data["images"]}
        annotations = data["annotations"]
    except FileNotFoundError:
        raise DataError(f"{root}: no instances.json (COCO annotations)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{ann_path}: not valid JSON ({err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{ann_path}: not COCO instances (missing {err})") from None
    try:
        categories = {int(c["id"]): str(c.get("name", c["id"])) for c in data.get("categories", [])}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DataError(f"{ann_path}: categories must be a list of {{id, name}}") from None
    out: list[Sequence] = []
    for k, ann in enumerate(annotations):
        try:
            if ann.get("iscrowd", 0):
                continue
            image = images[int(ann["image_id"])]
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{ann_path}: annotation {k} lacks a valid image_id or bbox") from None
        if w < min_side or h < min_side:
            continue
        frame = root / "images" / str(image["file_name"])
        size = (int(image["width"]), int(image["height"]))
        box = np.array([[x, y, w, h]])
        check_boxes_inside(box, size, f"{ann_path} annotation {k}")
        category = ann.get("category_id")
        name = "" if category is None else categories.get(int(category), str(category))
        out.append(Sequence(f"{frame.stem}#{ann.get('id', k)}", [frame], box, size, str(frame), category=name))
    if not out:
        raise DataError(f"{ann_path}: no usable boxes")
    return out
