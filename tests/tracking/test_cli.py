"""``twinnet track`` and ``twinnet evaluate --protocol tracking`` on a tiny saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.tracking.test_tracker import tiny_model_config
from twinnet.cli import app
from twinnet.io import save
from twinnet.model import build_model
from twinnet.tracking import read_boxes, read_sequence

runner = CliRunner()


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save(build_model(tiny_model_config()), tmp_path / "model")


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_track_writes_boxes_and_renders(otb_sequence, tiny_model: Path, tmp_path: Path) -> None:
    root, _ = otb_sequence
    result = run("track", tiny_model, "--sequence", root, "--out", tmp_path / "boxes.txt",
                 "--render", tmp_path / "frames", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 8 and 0 <= summary["success_auc"] <= 1
    boxes = read_boxes(tmp_path / "boxes.txt")
    assert boxes.shape == (8, 4)
    np.testing.assert_allclose(boxes[0], read_sequence(root).boxes[0])  # starts from the first box
    assert len(list((tmp_path / "frames").glob("*.jpg"))) == 8


def test_track_renders_a_video_and_starts_from_init(otb_sequence, tiny_model: Path, tmp_path: Path) -> None:
    root, _ = otb_sequence
    result = run("track", tiny_model, "--sequence", root / "imgs", "--init", "31,21,20,20",
                 "--render", tmp_path / "out.mp4", "--set", "scales=1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.mp4").stat().st_size > 1000
    video = read_sequence(tmp_path / "out.mp4")  # a video reads back as a sequence (padded to 16 px)
    assert len(video) == 8 and video.size == (160, 128) and video.boxes is None
    again = run("track", tiny_model, "--sequence", tmp_path / "out.mp4", "--init", "31,21,20,20", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["frames"] == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--init", "1,2,3"], "--init: expected x,y,w,h"),
        (["--set", "scale_lr=7"], "scale_lr"),
    ],
)
def test_track_bad_input_is_one_line(otb_sequence, tiny_model: Path, args: list[str], message: str) -> None:
    root, _ = otb_sequence
    result = run("track", tiny_model, "--sequence", root, *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_evaluate_tracking_protocol(otb_sequence, tiny_model: Path) -> None:
    root, _ = otb_sequence
    result = run("evaluate", tiny_model, "--protocol", "tracking", "--data", root.parent, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["protocol"] == "tracking" and report["sequences"] == 1
    assert set(report["per_sequence"]["square"]) >= {"success_auc", "precision_20", "fps"}


def test_tracking_protocol_refuses_other_data(image_folder_factory, tiny_model: Path) -> None:
    folder = image_folder_factory(classes=2, per_class=2)
    result = run("evaluate", tiny_model, "--protocol", "tracking", "--data", folder, "--format", "images")
    assert result.exit_code == 2 and "needs tracking sequences" in result.output


def test_the_tracking_format_is_recognised(otb_sequence) -> None:
    from twinnet.config import InputSpec
    from twinnet.data.sources import read_dataset
    from twinnet.tracking import SequenceItems

    root, _ = otb_sequence
    data = read_dataset(root.parent, InputSpec(channels=3, size=(127, 127)))
    assert data.format == "tracking" and isinstance(data.items, SequenceItems)
    assert data.items.class_names == ["square"] and len(data.items) == 8
