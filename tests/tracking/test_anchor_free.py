"""The anchor-free box head: label assignment and box coding by hand, its loss, its tracker's
post-processing on a scripted response, save → load → identical tracking, ``twinnet track``, and a
short training that beats the still box on a val sequence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.tracking.test_tracker import (
    against_the_still_box,
    box_head_model_config,
    tiny_model_config,
    train_box_head_briefly,
)
from twinnet.cli import app
from twinnet.config import ModelConfig
from twinnet.errors import ConfigError
from twinnet.io import load, save
from twinnet.losses import LOSSES, AnchorFreeLoss, LogisticScoreMapLoss
from twinnet.model import build_model
from twinnet.tracking import (
    AnchorFreeTracker,
    Tracker,
    build_tracker,
    read_sequence,
)
from twinnet.tracking.anchor_free import anchor_free_targets, cell_points, decode_ltrb, encode_ltrb, target_boxes


def af_model_config(channels: int = 8, **tracker: float) -> ModelConfig:
    return box_head_model_config("anchor_free", channels, **tracker)


# -- label assignment and box coding ---------------------------------------------------------------


def test_label_assignment_by_hand() -> None:
    # a 5×5 response, stride 8: positions at -16, -8, 0, 8, 16 px from the search image's centre
    assert cell_points(5, 8).tolist() == [-16, -8, 0, 8, 16]
    # a 20×12 target centred at (4, 0): the box x ∈ (-6, 14), y ∈ (-6, 6); radius 8 px around (4, 0):
    # x ∈ {0, 8} (-8 is 12 px away; 16 too), y ∈ {0} (±8 is outside the box)
    t = anchor_free_targets(5, 8, torch.tensor([[4.0, 0.0]]), torch.tensor([[20.0, 12.0]]), radius=8)
    positives = torch.nonzero(t.labels[0]).tolist()
    assert positives == [[2, 2], [2, 3]]  # (row, column)
    assert t.ltrb[0, :, 2, 3].tolist() == [14, 6, 6, 6]  # from (8, 0): l = 8+6, t = 0+6, r = 14-8, b = 6-0
    assert t.ltrb[0, :, 2, 2].tolist() == [6, 6, 14, 6]
    expected = math.sqrt(6 / 14 * 6 / 6)
    assert t.centerness[0, 2, 2].item() == pytest.approx(expected)
    assert t.centerness[0, 2, 3].item() == pytest.approx(expected)
    assert t.centerness[0].sum().item() == pytest.approx(2 * expected)  # zero at negatives


def test_positions_on_the_box_edge_are_not_inside_and_radius_bounds_big_targets() -> None:
    # a 16×16 target at the centre: ±8 px lie on its sides, so only the centre is positive
    edge = anchor_free_targets(5, 8, torch.zeros(1, 2), torch.tensor([[16.0, 16.0]]), radius=100)
    assert torch.nonzero(edge.labels[0]).tolist() == [[2, 2]]
    assert edge.centerness[0, 2, 2].item() == pytest.approx(1.0)
    # a 100×100 target: every position is inside; the radius (8 px) keeps the 3×3 around the centre
    big = anchor_free_targets(5, 8, torch.zeros(1, 2), torch.tensor([[100.0, 100.0]]), radius=8)
    assert big.labels[0].sum().item() == 9 and big.labels[0, 1:4, 1:4].all()
    # a target off the response has no positive
    off = anchor_free_targets(5, 8, torch.tensor([[60.0, 0.0]]), torch.tensor([[10.0, 10.0]]), radius=16)
    assert off.labels.sum().item() == 0


def test_box_encoding_and_decoding_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(6, 2, generator=gen) * 120 - 60
    sizes = torch.rand(6, 2, generator=gen) * 150 + 4
    boxes = target_boxes(centres, sizes)
    ltrb = encode_ltrb(boxes, 17, 8)
    assert ltrb.shape == (6, 4, 17, 17)
    decoded = decode_ltrb(ltrb, 8)
    torch.testing.assert_close(decoded, boxes.view(6, 4, 1, 1).expand(-1, -1, 17, 17), rtol=0, atol=1e-4)
    again = encode_ltrb(decoded[:, :, 3, 11], 17, 8)  # any position's box encodes back to the same distances
    torch.testing.assert_close(again, ltrb, rtol=0, atol=1e-4)
    # by hand: distances (2, 3, 4, 5) from the centre position of a 3×3 response mean the box (-2, -3, 4, 5)
    one = torch.zeros(1, 4, 3, 3)
    one[0, :, 1, 1] = torch.tensor([2.0, 3.0, 4.0, 5.0])
    assert decode_ltrb(one, 8)[0, :, 1, 1].tolist() == [-2, -3, 4, 5]


# -- the head and its loss ---------------------------------------------------------------------------


def test_head_outputs_and_loss_train_it() -> None:
    torch.manual_seed(0)
    model = build_model(af_model_config())
    z = model.embed(torch.rand(2, 3, 127, 127), "a")
    x = model.embed(torch.rand(2, 3, 255, 255), "b")
    out = model.comparator(z, x)
    assert out.shape == (2, 6, 17, 17) and (out[:, 2:] > 0).all()  # distances are positive
    loss = AnchorFreeLoss()
    loss.check_comparator(model.comparator)
    value = loss(out, torch.tensor([[8.0, -4.0], [0.0, 0.0]]), torch.tensor([[60.0, 30.0], [40.0, 80.0]]), stride=8)
    value.backward()
    assert torch.isfinite(value) and model.comparator.box.weight.grad is not None
    with pytest.raises(ConfigError, match="anchor-free"):
        loss.check_comparator(build_model(tiny_model_config()).comparator)
    with pytest.raises(ConfigError, match="score maps"):
        LogisticScoreMapLoss().check_comparator(model.comparator)


def test_loss_terms() -> None:
    offsets, sizes = torch.tensor([[4.0, 0.0]]), torch.tensor([[40.0, 24.0]])
    t = anchor_free_targets(17, 8, offsets, sizes, radius=16)
    perfect = torch.cat([torch.where(t.labels > 0, 30.0, -30.0)[:, None],
                         torch.zeros(1, 1, 17, 17), t.ltrb.clamp_min(0.1) / 8], dim=1)  # fmt: skip
    parts = AnchorFreeLoss(radius=16).parts(perfect, offsets, sizes, stride=8)
    assert parts["cls"].item() < 1e-6 and parts["box"].item() == pytest.approx(0.0, abs=1e-5)
    assert parts["positives"].item() == t.labels.sum().item() > 0
    wrong = perfect.clone()
    wrong[:, 2:] = wrong[:, 2:] * 2  # boxes twice too big: IoU 1/4 at every positive
    box = AnchorFreeLoss(radius=16).parts(wrong, offsets, sizes, stride=8)["box"].item()
    assert box == pytest.approx(-math.log(0.25), rel=0.05)
    logits = torch.zeros(1, 6, 17, 17)
    logits[:, 2:] = 3.0
    balanced = AnchorFreeLoss().parts(logits, offsets, sizes, stride=8)["cls"].item()
    focal = AnchorFreeLoss(focal_gamma=2.0).parts(logits, offsets, sizes, stride=8)["cls"].item()
    assert balanced == pytest.approx(math.log(2)) and focal != pytest.approx(balanced)


@pytest.mark.parametrize("params", [{"radius": 0}, {"focal_gamma": -1}, {"focal_alpha": 1.5}, {"box_weight": "x"}])
def test_bad_loss_params_name_the_field(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(params))):
        LOSSES.build("anchor_free", params, field="loss.params")


def test_bad_head_params_name_the_field() -> None:
    bad = af_model_config().model_dump(mode="json") | {"comparator": {"name": "anchor_free", "params": {"channels": 0}}}
    with pytest.raises(ConfigError, match=r"model.comparator.*channels"):
        build_model(ModelConfig.model_validate(bad))


# -- the tracker ---------------------------------------------------------------------------------------


def scripted_outputs(cells: dict[tuple[int, int], tuple[float, tuple[float, float]]], half: float) -> torch.Tensor:
    """A 17×17 head output: classification logit -20 and a box of half-side ``half`` px at every
    position, except ``cells``: (row, col) → (logit, (width, height) in px); centre-ness ≈ 1."""
    out = torch.zeros(1, 6, 17, 17)
    out[:, 0] = -20.0
    out[:, 1] = 20.0
    out[:, 2:] = half / 8
    for (row, col), (logit, (w, h)) in cells.items():
        out[0, 0, row, col] = logit
        out[0, 2:, row, col] = torch.tensor([w / 2, h / 2, w / 2, h / 2]) / 8
    return out


def test_tracker_moves_to_the_best_box_and_smooths_its_size(monkeypatch) -> None:
    torch.manual_seed(0)
    model = build_model(af_model_config()).eval()
    frame = np.full((300, 300, 3), 100, np.uint8)
    tracker = build_tracker(model, window_influence=0.0, penalty_k=0.0, scale_lr=0.5)
    assert isinstance(tracker, AnchorFreeTracker)
    tracker.init(frame, np.array([100.0, 100.0, 40.0, 40.0]))
    assert tracker.stride == 8
    scale = 127 / 80  # the exemplar region of a 40×40 box is 80 px; 127 px in the exemplar
    size = 40 * scale  # the target in the search image: 63.5 px
    # the best position: row 8, column 10, i.e. (16, 0) px from the centre; a box twice as wide there
    out = scripted_outputs({(8, 10): (20.0, (2 * size, size))}, size / 2)
    monkeypatch.setattr(model.comparator, "forward", lambda a, b: out)
    box, score = tracker.update(frame)
    assert score == pytest.approx(1.0, abs=1e-6)
    dx = 16 / scale  # 16 search px in the image
    w = 40 * 0.5 + 80 * 0.5  # the size moves halfway (scale_lr 0.5 × score 1 × penalty 1) to 80 × 40
    np.testing.assert_allclose(box, [120 + dx - w / 2, 100, w, 40], atol=1e-3)


def test_the_change_penalty_prefers_the_box_that_keeps_its_shape(monkeypatch) -> None:
    torch.manual_seed(0)
    model = build_model(af_model_config()).eval()
    frame = np.full((300, 300, 3), 100, np.uint8)
    size = 40 * 127 / 80
    # column 10: a stronger response but a box twice as wide; column 6: same size, slightly weaker
    out = scripted_outputs({(8, 10): (3.0, (2 * size, size)), (8, 6): (2.0, (size, size))}, size / 2)
    monkeypatch.setattr(model.comparator, "forward", lambda a, b: out)
    chosen = {}
    for k in (0.0, 1.0):
        tracker = build_tracker(model, window_influence=0.0, penalty_k=k)
        tracker.init(frame, np.array([100.0, 100.0, 40.0, 40.0]))
        box, _ = tracker.update(frame)
        chosen[k] = box[0] + box[2] / 2 - 120
    assert chosen[0.0] > 0 > chosen[1.0]  # right (column 10) without the penalty, left (column 6) with it


def test_save_load_tracks_identically_and_settings_travel(otb_sequence, tmp_path: Path) -> None:
    root, _ = otb_sequence
    torch.manual_seed(0)
    model = build_model(af_model_config(penalty_k=0.1, window_influence=0.3)).eval()
    seq = read_sequence(root)
    before = build_tracker(model).track(seq)
    save(model, tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["comparator"]["name"] == "anchor_free" and saved["tracker"]["penalty_k"] == 0.1
    loaded = load(tmp_path / "model")
    after = build_tracker(loaded).track(seq)
    np.testing.assert_array_equal(before.boxes, after.boxes)
    np.testing.assert_array_equal(before.scores, after.scores)
    assert build_tracker(loaded).settings.window_influence == 0.3
    assert build_tracker(loaded, penalty_k=0.5).settings.penalty_k == 0.5  # overridable
    with pytest.raises(ConfigError, match="penalty_k"):
        build_tracker(loaded, penalty_k=-1)
    with pytest.raises(ConfigError, match="anchor_free"):
        Tracker(loaded)  # the SiamFC tracker cannot read a box head's maps


def test_twinnet_track_with_the_anchor_free_head(otb_sequence, tmp_path: Path) -> None:
    root, _ = otb_sequence
    torch.manual_seed(0)
    model_dir = save(build_model(af_model_config()), tmp_path / "model")
    result = CliRunner().invoke(app, ["track", str(model_dir), "--sequence", str(root), "--json",
                                      "--set", "penalty_k=0.2", "--out", str(tmp_path / "boxes.txt")])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 8 and 0 <= summary["success_auc"] <= 1
    bad = CliRunner().invoke(app, ["track", str(model_dir), "--sequence", str(root), "--set", "penalty_k=-2"])
    assert bad.exit_code == 2 and "penalty_k" in bad.output and "Traceback" not in bad.output


@pytest.mark.slow
def test_short_training_beats_the_still_box(shared_data: Path, tmp_path: Path) -> None:
    # 512 pairs (about 30 s on 2 cores): seeds 0, 1, 2 reached success AUC 0.22, 0.25, 0.45 on these
    # 60 frames against the still box's 0.08; with 128 pairs two of the three seeds did not beat it
    model = load(train_box_head_briefly(shared_data, tmp_path, af_model_config(channels=16), "anchor_free"))
    assert isinstance(build_tracker(model), AnchorFreeTracker)
    ours, still = against_the_still_box(shared_data, build_tracker(model))
    assert ours["success_auc"] > still["success_auc"] + 0.1, (ours, still)
