"""Tiny tracking sequences made on the fly: a bright square moving over a textured background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def square_frames(n: int = 8, size: tuple[int, int] = (160, 120), side: int = 20, step: int = 4,
                  seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:  # fmt: skip
    """``n`` RGB frames with a red square of ``side`` px moving ``step`` px right and down per frame,
    and its 0-based boxes."""
    rng = np.random.default_rng(seed)
    w, h = size
    background = (rng.random((h, w, 3)) * 80 + 40).astype(np.uint8)
    frames, boxes = [], []
    for i in range(n):
        frame = background.copy()
        x, y = 30 + step * i, 20 + step * i // 2
        frame[y : y + side, x : x + side] = (230, 40, 40)
        frames.append(frame)
        boxes.append([x, y, side, side])
    return frames, np.asarray(boxes, dtype=np.float64)


def write_otb(root: Path, frames: list[np.ndarray], boxes: np.ndarray, sep: str = ",") -> Path:
    (root / "imgs").mkdir(parents=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(root / "imgs" / f"{i:08d}.png")
    lines = [sep.join(f"{v:g}" for v in (b[0] + 1, b[1] + 1, b[2], b[3])) for b in boxes]
    (root / "groundtruth_rect.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def otb_sequence(tmp_path: Path) -> tuple[Path, np.ndarray]:
    frames, boxes = square_frames()
    return write_otb(tmp_path / "square", frames, boxes), boxes
