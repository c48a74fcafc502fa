"""VOT-style reset evaluation: failure counting, re-initialisation and burn-in against a sequence
worked out by hand, and ``--reset`` through the protocol and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.tracking.test_tracker import tiny_model_config
from twinnet.cli import app
from twinnet.errors import ConfigError, DataError
from twinnet.io import save
from twinnet.model import build_model
from twinnet.protocols import build_protocol
from twinnet.tracking import Sequence, reset_figures, run_reset
from twinnet.tracking.reset import FAILED, INIT, SKIPPED, TRACKED, mean_reset_figures

N = 20
ABSENT = (1, 8)  # frames without the target
FAIL_AT = (1, 3, 12)  # frames where the scripted tracker's box is far from the target


def hand_sequence() -> Sequence:
    """20 black frames, each with its index in its first pixel; the target a 10×10 box at (10, 10)."""
    video = np.zeros((N, 40, 60, 3), np.uint8)
    video[:, 0, 0, 0] = np.arange(N)
    gt = np.tile([10.0, 10.0, 10.0, 10.0], (N, 1))
    gt[list(ABSENT)] = np.nan
    return Sequence(name="hand", boxes=gt, size=(60, 40), video=video)


class Scripted:
    """Returns the target's box shifted ``i % 4`` pixels right at frame ``i`` (IoU ``(10-s)/(10+s)``),
    or a box far from it at the frames of ``FAIL_AT``."""

    def __init__(self) -> None:
        self.inits: list[int] = []

    def init(self, frame: np.ndarray, box: np.ndarray) -> None:
        self.inits.append(int(frame[0, 0, 0]))
        np.testing.assert_array_equal(box, [10, 10, 10, 10])  # re-initialised from the ground truth

    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        i = int(frame[0, 0, 0])
        if i in FAIL_AT:
            return np.array([40.0, 25.0, 10.0, 10.0]), 0.1
        return np.array([10.0 + i % 4, 10.0, 10.0, 10.0]), 0.9


def iou(shift: int) -> float:
    return (10 - shift) / (10 + shift)


def test_failures_resets_and_skips_by_hand() -> None:
    tracker = Scripted()
    run = run_reset(tracker, hand_sequence(), skip=5)
    s, i, t, f = SKIPPED, INIT, TRACKED, FAILED
    expected = [i, t, t, f, s, s, s, s, s, i, t, t, f, s, s, s, s, i, t, t]
    # frame 1: a far box, but the target is absent there: no failure; frame 3 fails, so the tracker
    # waits 5 frames (4-7) and re-starts at 8, where the target is absent: at 9; frame 12 fails: 17
    np.testing.assert_array_equal(run.states, expected)
    assert tracker.inits == [0, 9, 17] and run.failures == 2
    assert np.isnan(run.boxes[[4, 5, 6, 7, 8, 13, 16]]).all()
    np.testing.assert_array_equal(run.boxes[9], [10, 10, 10, 10])

    gt = hand_sequence().boxes
    assert gt is not None
    no_burn = reset_figures(run.boxes, run.states, gt, burn_in=0)
    # tracked frames with a target: 2, 10, 11, 18, 19 (shifts 2, 2, 3, 2, 3)
    assert no_burn["accuracy_frames"] == 5
    assert no_burn["accuracy"] == pytest.approx(np.mean([iou(2), iou(2), iou(3), iou(2), iou(3)]))
    assert no_burn["failures"] == 2 and no_burn["frames"] == 20
    assert no_burn["robustness"] == pytest.approx(10.0)  # 2 failures in 20 frames
    # burn-in 2: the init frame and the one after it are left out: frames 10 and 18 go
    burn2 = reset_figures(run.boxes, run.states, gt, burn_in=2)
    assert burn2["accuracy_frames"] == 3
    assert burn2["accuracy"] == pytest.approx(np.mean([iou(2), iou(3), iou(3)]))
    vot = reset_figures(run.boxes, run.states, gt)  # VOT's burn-in of 10 leaves nothing here
    assert vot["accuracy_frames"] == 0 and vot["accuracy"] == 0.0 and vot["robustness"] == burn2["robustness"]


def test_reset_figures_on_given_states() -> None:
    gt = np.tile([0.0, 0.0, 10.0, 10.0], (6, 1))
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 5, 5], [np.nan] * 4, [0, 0, 10, 10],
                      [5, 0, 10, 10]], dtype=np.float64)  # fmt: skip
    states = np.array([INIT, TRACKED, FAILED, SKIPPED, INIT, TRACKED])
    figures = reset_figures(boxes, states, gt, burn_in=1)
    assert figures == {"accuracy": pytest.approx((0.5 + 5 / 15) / 2), "robustness": pytest.approx(100 / 6),
                       "failures": 1, "frames": 6, "accuracy_frames": 2}  # fmt: skip
    with pytest.raises(ValueError, match="burn_in"):
        reset_figures(boxes, states, gt, burn_in=-1)
    with pytest.raises(ValueError, match="6 boxes, 5 states"):
        reset_figures(boxes, states[:5], gt)


def test_mean_over_sequences_pools_robustness() -> None:
    rows = [{"accuracy": 0.5, "robustness": 10.0, "failures": 1, "frames": 10, "accuracy_frames": 3},
            {"accuracy": 0.0, "robustness": 10.0, "failures": 3, "frames": 30, "accuracy_frames": 0}]  # fmt: skip
    assert mean_reset_figures(rows) == {"accuracy": 0.5, "robustness": 10.0, "failures": 4.0}


def test_reset_needs_ground_truth_and_a_sane_skip() -> None:
    seq = hand_sequence()
    with pytest.raises(ValueError, match="skip"):
        run_reset(Scripted(), seq, skip=0)
    seq.boxes = None
    with pytest.raises(DataError, match="ground truth"):
        run_reset(Scripted(), seq)


@pytest.mark.parametrize(("params", "field"), [({"reset": "yes"}, "reset"), ({"skip": 0}, "skip"),
                                               ({"burn_in": 1.5}, "burn_in")])  # fmt: skip
def test_bad_reset_options_name_the_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        build_protocol("tracking", params)


def test_evaluate_with_reset_through_the_protocol_and_the_cli(otb_sequence, tmp_path: Path) -> None:
    root, _ = otb_sequence
    torch.manual_seed(0)
    model_dir = save(build_model(tiny_model_config()), tmp_path / "model")
    result = CliRunner().invoke(app, ["evaluate", str(model_dir), "--protocol", "tracking", "--data",
                                      str(root.parent), "--reset", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["primary_metric"] == "success_auc"
    assert {"accuracy", "robustness", "failures"} <= set(report)
    row = report["per_sequence"]["square"]
    assert row["frames"] == 8 and 0 <= row["accuracy"] <= 1
    assert row["robustness"] == pytest.approx(100 * row["failures"] / 8)
    plain = CliRunner().invoke(app, ["evaluate", str(model_dir), "--protocol", "tracking", "--data",
                                     str(root.parent), "--json"])  # fmt: skip
    assert plain.exit_code == 0 and "robustness" not in json.loads(plain.stdout)
