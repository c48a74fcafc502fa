"""What ``twinnet track`` does: track a target through a sequence folder, a folder of frames or a
video, write the boxes (OTB format) and optionally render the frames with the boxes drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from twinnet.errors import DataError
from twinnet.tracking.geometry import _cv2
from twinnet.tracking.metrics import sequence_figures
from twinnet.tracking.sequences import (
    VIDEO_EXTENSIONS,
    Sequence,
    is_sequence_folder,
    parse_box,
    read_frames_folder,
    read_sequence,
    write_boxes,
)
from twinnet.tracking.tracker import build_tracker

PREDICTED = (40, 220, 40)
GROUND_TRUTH = (255, 255, 255)


def open_sequence(path: str | Path) -> Sequence:
    """A sequence folder (with ground truth), a folder of frames (without) or a video file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"sequence not found: {path}")
    if path.is_dir() and not is_sequence_folder(path):
        return read_frames_folder(path)
    return read_sequence(path)


def draw_boxes(frame: np.ndarray, box: np.ndarray, truth: np.ndarray | None = None, label: str = "") -> np.ndarray:
    """A copy of ``frame`` with the tracked ``box`` (green) and the ground truth (white, thin)."""
    cv2 = _cv2()
    out = np.ascontiguousarray(frame.copy())
    if truth is not None and np.isfinite(truth).all():
        x, y, w, h = (round(v) for v in truth)
        cv2.rectangle(out, (x, y), (x + w, y + h), GROUND_TRUTH, 1)
    x, y, w, h = (round(v) for v in box)
    cv2.rectangle(out, (x, y), (x + w, y + h), PREDICTED, 2)
    if label:
        cv2.putText(out, label, (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, PREDICTED, 1, cv2.LINE_AA)
    return out


def render(sequence: Sequence, boxes: np.ndarray, target: str | Path, scores: np.ndarray | None = None,
           fps: float = 25.0) -> Path:  # fmt: skip
    """Write the frames with their boxes: to a video (``.mp4`` and the like, imageio-ffmpeg) or, for
    any other path, to a folder of numbered JPEG files."""
    cv2 = _cv2()
    target = Path(target)
    video = target.suffix.lower() in VIDEO_EXTENSIONS
    truth = sequence.boxes
    writer: Any = None
    try:
        for i in range(len(boxes)):
            label = f"{i + 1}" + (f"  score {scores[i]:.2f}" if scores is not None else "")
            frame = draw_boxes(sequence.frame(i), boxes[i], None if truth is None else truth[i], label)
            if video:
                if writer is None:
                    writer = _video_writer(target, frame.shape, fps)
                writer.send(_pad16(frame))
            else:
                target.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(target / f"{i + 1:08d}.jpg"), frame[:, :, ::-1])
    finally:
        if writer is not None:
            writer.close()
    return target


def _pad16(frame: np.ndarray) -> np.ndarray:
    """Pad to a multiple of 16 pixels (what H.264 encoders want), with black."""
    h, w = frame.shape[:2]
    return np.ascontiguousarray(np.pad(frame, ((0, -h % 16), (0, -w % 16), (0, 0))))


def _video_writer(target: Path, shape: tuple[int, ...], fps: float) -> Any:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise DataError("rendering a video needs imageio-ffmpeg: pip install 'twinnet[vision]' (or render to a "
                        "folder)") from None  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    h, w = shape[0] + (-shape[0] % 16), shape[1] + (-shape[1] % 16)
    writer = imageio_ffmpeg.write_frames(str(target), (w, h), fps=fps, macro_block_size=16, quality=7)
    writer.send(None)  # start the encoder
    return writer


def parse_settings(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` tracker settings (values read as YAML scalars), e.g. ``window_influence=0.2``."""
    import yaml

    from twinnet.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. window_influence=0.2")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out


def track_sequence(
    model: Any,
    sequence_path: str | Path,
    *,
    init: str | None = None,
    out: str | Path | None = None,
    render_to: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Track from ``init`` (``x,y,w,h``, 1-based; default: the first ground-truth box) through the
    sequence at ``sequence_path``; write the boxes to ``out`` and the frames to ``render_to``.
    Returns a JSON-able summary (with success AUC and precision where there is ground truth)."""
    sequence = open_sequence(sequence_path)
    start = parse_box(init) if init is not None else sequence.first_box()
    result = build_tracker(model, **(overrides or {})).track(sequence, start)
    summary: dict[str, Any] = {"sequence": str(sequence_path), "frames": len(result.boxes), "fps": result.fps}
    if sequence.boxes is not None:
        figures = sequence_figures(result.boxes, sequence.boxes)
        summary.update(success_auc=figures["success_auc"], precision_20=figures["precision_20"])
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_boxes(out, result.boxes)
        summary["boxes"] = str(out)
    if render_to is not None:
        summary["render"] = str(render(sequence, result.boxes, render_to, result.scores))
    return summary
