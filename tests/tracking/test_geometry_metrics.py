"""Crop geometry (a box maps back to itself through crop and un-crop, and the pixels agree),
the OTB metrics against hand-computed cases, and the score-map labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twinnet.losses.score_map import LogisticScoreMapLoss, score_map_labels
from twinnet.tracking.geometry import box_to_crop, center_of, context_side, crop, crop_to_box
from twinnet.tracking.metrics import (
    calc_center_error,
    calc_iou,
    calc_precision,
    calc_success_auc,
    calc_success_curve,
    sequence_figures,
)
from twinnet.tracking.xcorr import CrossCorrelation, response_stride


@pytest.mark.parametrize("box", [[10.0, 20.0, 30.0, 12.0], [0.5, 0.25, 3.0, 80.0], [-5.0, 40.0, 17.0, 9.0]])
def test_box_crop_uncrop_round_trip(box: list[float]) -> None:
    center = np.array([33.3, 41.7])
    for side, out in ((64.0, 127), (200.0, 255), (13.5, 31)):
        inside = box_to_crop(np.array(box), center, side, out)
        np.testing.assert_allclose(crop_to_box(inside, center, side, out), box, atol=1e-9)


def test_crop_pixels_follow_the_box_mapping() -> None:
    image = np.zeros((100, 120, 3), np.uint8)
    image[30:50, 40:70] = 255  # the box x=40, y=30, w=30, h=20
    box = np.array([40.0, 30.0, 30.0, 20.0])
    side = context_side(30, 20)
    assert side == pytest.approx(np.sqrt(55 * 45))  # p = (w+h)/2 = 25
    patch = crop(image, center_of(box), side, 127)
    mapped = box_to_crop(box, center_of(box), side, 127)
    ys, xs = np.nonzero(patch[:, :, 0] > 127)
    np.testing.assert_allclose([xs.min(), ys.min()], mapped[:2], atol=1.0)
    np.testing.assert_allclose([xs.max() + 1, ys.max() + 1], mapped[:2] + mapped[2:], atol=1.0)
    assert abs(mapped[0] + mapped[2] / 2 - 63.5) < 1e-9  # the target is centred


def test_crop_pads_with_the_mean_colour() -> None:
    image = np.full((10, 10, 3), 100, np.uint8)
    image[:5] = 200
    patch = crop(image, np.array([0.0, 0.0]), 40.0, 40)
    assert tuple(patch[0, 0]) == (150, 150, 150)


def test_iou_and_centre_error_by_hand() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10]])
    np.testing.assert_allclose(calc_iou(a, b), [50 / 150, 0.0, 1.0])
    np.testing.assert_allclose(calc_center_error(a, b), [5.0, np.hypot(17.5, 17.5), 0.0])


def test_success_curve_auc_and_precision_by_hand() -> None:
    ious = np.array([1.0, 0.5, 0.0, 0.26])
    curve = calc_success_curve(ious)
    assert len(curve) == 21 and curve[0] == 0.75  # IoU > 0: three frames
    assert curve[5] == 0.75 and curve[6] == 0.5  # > 0.25: three; > 0.3: two (1.0 and 0.5)
    assert curve[10] == 0.25 and curve[20] == 0.0  # > 0.5: only 1.0; nothing is > 1
    # AUC = mean of the curve: frame 1.0 counts for τ < 1 (20 of 21), 0.5 for τ < 0.5 (10), 0.26 for τ ≤ 0.25 (6)
    assert calc_success_auc(ious) == pytest.approx((20 + 10 + 0 + 6) / (4 * 21))
    assert calc_precision(np.array([0.0, 20.0, 20.01, 100.0])) == 0.5


def test_frames_without_ground_truth_are_skipped() -> None:
    gt = np.array([[0, 0, 10, 10], [np.nan] * 4, [0, 0, 10, 10]])
    pred = np.array([[0, 0, 10, 10], [50, 50, 5, 5], [0, 0, 10, 10]])
    figures = sequence_figures(pred, gt)
    assert figures["frames"] == 2 and figures["precision_20"] == 1.0
    assert figures["success_auc"] == pytest.approx(20 / 21)


def test_score_map_labels_geometry() -> None:
    # SiamFC: a 17×17 response, stride 8, radius 16 px: the centre and its 12 neighbours within 2 cells
    labels, weights = score_map_labels(17, 8, 16.0, torch.zeros(1, 2))
    positives = torch.nonzero(labels[0]).tolist()
    assert (
        len(positives) == 13
        and [8, 8] in positives
        and [8, 10] in positives
        and [9, 9] in positives
        and [9, 10] not in positives
    )
    assert weights[0][labels[0] > 0].sum().item() == pytest.approx(0.5)
    assert weights[0][labels[0] == 0].sum().item() == pytest.approx(0.5)
    # a target 16 px right and 8 px down of the centre: positives centred on row 9, column 10
    shifted, _ = score_map_labels(17, 8, 16.0, torch.tensor([[16.0, 8.0]]))
    rows, cols = torch.nonzero(shifted[0], as_tuple=True)
    assert rows.float().mean().item() == pytest.approx(9.0) and cols.float().mean().item() == pytest.approx(10.0)
    assert response_stride(255, 127, 17) == 8


def test_xcorr_is_a_batched_correlation_and_the_loss_prefers_the_right_peak() -> None:
    torch.manual_seed(0)
    z, x = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 9, 9)
    xcorr = CrossCorrelation(scale=1.0)
    out = xcorr(z, x)
    assert out.shape == (2, 1, 7, 7)
    expected = (x[1, :, 2:5, 4:7] * z[1]).sum()
    assert out[1, 0, 2, 4].item() == pytest.approx(expected.item(), rel=1e-5)
    three = xcorr(z[:1], torch.randn(3, 4, 9, 9))  # three scales of one exemplar
    assert three.shape == (3, 1, 7, 7)
    loss = LogisticScoreMapLoss(radius=8.0)
    good = torch.full((1, 1, 17, 17), -5.0)
    good[0, 0, 8, 8] = 5.0
    assert loss(good, torch.zeros(1, 2), 8) < loss(-good, torch.zeros(1, 2), 8)
