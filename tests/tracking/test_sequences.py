"""Sequence readers: OTB rects (commas, tabs, spaces, NaN rows), VOT polygons, COCO stills, and
clear errors for bad sequences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tracking.conftest import square_frames, write_otb
from twinnet.errors import DataError
from twinnet.tracking.sequences import (
    parse_box,
    read_boxes,
    read_coco_stills,
    read_sequence,
    read_sequences,
    write_boxes,
)


def test_otb_rects_with_any_separator_and_nan(tmp_path: Path) -> None:
    f = tmp_path / "groundtruth_rect.txt"
    f.write_text("1,2,10,20\n5\t6\t7\t8\n3 4  5 6\nNaN,NaN,NaN,NaN\n")
    boxes = read_boxes(f)
    np.testing.assert_array_equal(boxes[:3], [[0, 1, 10, 20], [4, 5, 7, 8], [2, 3, 5, 6]])  # 1-based → 0-based
    assert np.isnan(boxes[3]).all()


def test_vot_polygons_become_their_bounding_box(tmp_path: Path) -> None:
    f = tmp_path / "groundtruth.txt"
    f.write_text("10,20,30,10,40,30,20,40\n")  # a rotated square's corners
    np.testing.assert_allclose(read_boxes(f), [[9, 9, 30, 30]])


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    boxes = np.array([[0.5, 1.25, 10, 20], [np.nan] * 4])
    write_boxes(tmp_path / "out.txt", boxes)
    np.testing.assert_allclose(read_boxes(tmp_path / "out.txt"), boxes)
    np.testing.assert_array_equal(parse_box("1,2,3,4"), [0, 1, 3, 4])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3,4\n1,2,x,4\n", "line 2: not numbers"),
        ("1,2,3\n", "line 1: 3 values"),
        ("1,2,0,4\n", "line 1: box of width 0"),
        ("1,2,3,4\n\n1,2,3,4\n", "line 2: blank line"),
        ("", "no boxes"),
    ],
)
def test_bad_box_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "groundtruth_rect.txt"
    f.write_text(text)
    with pytest.raises(DataError, match=message):
        read_boxes(f)


def test_reads_an_otb_folder(otb_sequence) -> None:
    root, boxes = otb_sequence
    seq = read_sequence(root)
    assert len(seq) == 8 and seq.size == (160, 120)
    np.testing.assert_array_equal(seq.boxes, boxes)
    assert seq.frame(0).shape == (120, 160, 3)
    assert [s.name for s in read_sequences(root.parent)] == ["square"]


def test_frame_count_must_equal_box_count(otb_sequence) -> None:
    root, _ = otb_sequence
    (root / "groundtruth_rect.txt").write_text("31,21,20,20\n" * 7)
    with pytest.raises(DataError, match="7 boxes for 8 frames"):
        read_sequence(root)


def test_a_missing_frame_is_named(otb_sequence) -> None:
    root, _ = otb_sequence
    (root / "imgs" / "00000004.png").unlink()
    with pytest.raises(DataError, match="frame 4 is missing"):
        read_sequence(root)


def test_a_box_outside_the_image_is_refused(tmp_path: Path) -> None:
    frames, boxes = square_frames(n=3)
    boxes[1] = [500, 10, 20, 20]
    root = write_otb(tmp_path / "seq", frames, boxes, sep="\t")
    with pytest.raises(DataError, match=r"line 2: box 501,11,20,20 lies outside the 160×120 image"):
        read_sequence(root)


def test_an_unreadable_frame_is_named(otb_sequence) -> None:
    root, _ = otb_sequence
    (root / "imgs" / "00000002.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="00000002.png"):
        read_sequence(root).frame(1)


def test_coco_stills_skip_crowds_and_tiny_boxes(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(tmp_path / "images" / "1.jpg")
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 60, "height": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [5, 5, 20, 30], "iscrowd": 0},
            {"id": 2, "image_id": 1, "bbox": [5, 5, 20, 30], "iscrowd": 1},
            {"id": 3, "image_id": 1, "bbox": [5, 5, 2, 3], "iscrowd": 0},
        ],
    }))  # fmt: skip
    stills = read_coco_stills(tmp_path)
    assert len(stills) == 1 and len(stills[0]) == 1
    np.testing.assert_array_equal(stills[0].boxes, [[5, 5, 20, 30]])


def test_real_otb_and_vot_sequences(shared_data: Path) -> None:
    root = shared_data / "tracking"
    bag = read_sequence(root / "vot15_bag")
    assert len(bag) == 196 and bag.size == (480, 360) and np.isfinite(bag.boxes).all()
    val = read_sequences(root / "val")
    assert [s.name for s in val] == ["Couple", "Crossing", "Football1", "Jogging-1", "MotorRolling"]
    person9 = read_sequence(root / "train" / "person9")
    assert (~person9.present).sum() == 12  # UAV123's NaN rows: the target is absent
