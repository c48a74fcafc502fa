"""DaSiamRPN's harder pairs in the ``tracking_pairs`` plan: negative pairs (the search image centred
on another object) and blur. The share of negatives is as configured, their search image shows
another sequence's target or another box of the still's category, every loss makes a negative pair
all background (hand-computed values, no gradient to the box terms), blur is the identity at σ = 0
and removes high frequencies otherwise, and with the options off the plan draws the pairs it drew
before they existed."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tracking.conftest import write_otb
from tests.tracking.test_rpn import rpn_model_config
from tests.tracking.test_tracker import tiny_model_config
from twinnet.config import ModelConfig, TrainConfig
from twinnet.errors import ConfigError
from twinnet.losses import AnchorFreeLoss, LogisticScoreMapLoss, RPNLoss
from twinnet.model import build_model
from twinnet.tracking.batch import TrackingPairBatch
from twinnet.tracking.items import SequenceItems
from twinnet.tracking.plan import TrackingPairsPlan, _category_groups, gaussian_blur
from twinnet.tracking.rpn import RATIOS, anchor_grid, anchor_shapes
from twinnet.tracking.sequences import read_coco_stills, read_sequences
from twinnet.training.plans import build_plan

COLOURS = {"red": (230, 40, 40), "green": (40, 230, 40), "blue": (40, 40, 230)}


def _sequences(root: Path, n: int = 6) -> Path:
    """Three sequences, a 20 px square of one colour each moving over a textured background."""
    for k, (name, colour) in enumerate(COLOURS.items()):
        rng = np.random.default_rng(k)
        background = (rng.random((120, 160, 3)) * 60 + 60).astype(np.uint8)
        frames, boxes = [], []
        for i in range(n):
            frame = background.copy()
            x, y = 30 + 4 * i, 20 + 2 * i
            frame[y : y + 20, x : x + 20] = colour
            frames.append(frame)
            boxes.append([x, y, 20, 20])
        write_otb(root / name, frames, np.asarray(boxes, dtype=np.float64))
    return root


def _stills(root: Path) -> Path:
    """Three COCO images, five boxes: categories red (2 boxes), green (2) and blue (1), coloured so."""
    (root / "images").mkdir(parents=True)
    layout = {1: [("red", 20, 20), ("green", 100, 60)], 2: [("red", 90, 30), ("blue", 20, 70)], 3: [("green", 60, 40)]}
    ids = {"red": 1, "green": 2, "blue": 3}
    images, anns = [], []
    for image_id, boxes in layout.items():
        frame = (np.random.default_rng(10 + image_id).random((120, 160, 3)) * 60 + 60).astype(np.uint8)
        for colour, x, y in boxes:
            frame[y : y + 24, x : x + 24] = COLOURS[colour]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": ids[colour],
                         "bbox": [x, y, 24, 24], "iscrowd": 0})  # fmt: skip
        Image.fromarray(frame).save(root / "images" / f"{image_id:012d}.png")
        images.append({"id": image_id, "file_name": f"{image_id:012d}.png", "width": 160, "height": 120})
    categories = [{"id": v, "name": k} for k, v in ids.items()]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return root


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return _sequences(tmp_path / "seqs"), _stills(tmp_path / "coco")


def _plan(root: Path, batch_size: int = 6, samples: int = 12, **options: object) -> TrackingPairsPlan:
    items = SequenceItems.from_sequences(read_sequences(root))
    plan = build_plan("tracking_pairs", items, None,
                      TrainConfig(batch_size=batch_size, samples_per_epoch=samples, plan=options))  # fmt: skip
    assert isinstance(plan, TrackingPairsPlan)
    return plan


def _colour_at(images: torch.Tensor, offsets: torch.Tensor) -> list[str]:
    """Per image, the name of the colour at ``offsets`` from its centre (a 5×5 patch's mean)."""
    names = list(COLOURS)
    out = []
    for image, (dx, dy) in zip(images, offsets.tolist()):
        x, y = round(image.shape[-1] / 2 + dx), round(image.shape[-2] / 2 + dy)
        rgb = image[:, y - 2 : y + 3, x - 2 : x + 3].mean(dim=(1, 2))
        assert rgb.max() > 0.7 and rgb.max() - rgb.min() > 0.5, "no coloured square there"
        out.append(names[int(rgb.argmax())])
    return out


# -- the pairs -----------------------------------------------------------------------------------------


# what the plan drew before negative pairs and blur existed (epochs 0 and 1, two batches each): a digest
# of offsets, sizes and seed, and each pair's search and exemplar means
BEFORE = [
    ("7294995fd9ddc270", [0.3947, 0.2934, 0.3567, 0.3093, 0.4151, 0.4086],
     [0.3119, 0.4892, 0.3121, 0.3356, 0.3568, 0.384]),
    ("827c76166dd9eb87", [0.3919, 0.3835, 0.3494, 0.3637, 0.3435, 0.287],
     [0.3409, 0.3767, 0.3972, 0.3226, 0.4857, 0.3581]),
    ("fdfc75a61a6d236e", [0.2876, 0.3519, 0.3524, 0.2967, 0.3353, 0.301],
     [0.3298, 0.3493, 0.2993, 0.4213, 0.3971, 0.3906]),
    ("573b119b87a2d225", [0.2958, 0.3921, 0.3192, 0.4165, 0.3508, 0.3659],
     [0.363, 0.3803, 0.3298, 0.349, 0.3697, 0.377]),
]  # fmt: skip


@pytest.mark.parametrize("options", [{}, {"negative_share": 0.0, "blur": 0.0}])
def test_options_off_draw_the_pairs_drawn_before(data, options: dict[str, float]) -> None:
    seqs, stills = data
    plan = _plan(seqs, stills=str(stills), stills_share=0.5, **options)  # every other option at its default
    batches = [job() for epoch in (0, 1) for job in plan.epoch_jobs(epoch)]
    for batch, (digest, searches, exemplars) in zip(batches, BEFORE, strict=True):
        raw = np.round(batch.offsets.numpy().astype(np.float64), 3).tobytes()
        raw += np.round(batch.sizes.numpy().astype(np.float64), 3).tobytes() + str(batch.seed).encode()
        assert hashlib.sha256(raw).hexdigest()[:16] == digest
        np.testing.assert_allclose(batch.searches.mean(dim=(1, 2, 3)).numpy(), searches, atol=2e-4)
        np.testing.assert_allclose(batch.exemplars.mean(dim=(1, 2, 3)).numpy(), exemplars, atol=2e-4)
        assert batch.present.dtype == torch.bool and bool(batch.present.all())
    assert plan.fingerprint() == _plan(seqs, stills=str(stills), stills_share=0.5).fingerprint()
    assert plan.fingerprint() != _plan(seqs, stills=str(stills), stills_share=0.5, negative_share=0.1).fingerprint()


def test_the_share_of_negative_pairs_is_as_configured_and_seeded(data) -> None:
    seqs, _ = data
    small = {"batch_size": 100, "samples": 1000, "exemplar_size": 16, "search_size": 32, "shift": 0.0}

    def present(**options: object) -> torch.Tensor:
        return torch.cat([job().present for job in _plan(seqs, **small, **options).epoch_jobs(0)])  # type: ignore[arg-type]

    drawn = present(negative_share=0.3)
    assert len(drawn) == 1000 and 0.25 < 1 - drawn.float().mean().item() < 0.35  # ±3.5 sd
    assert torch.equal(drawn, present(negative_share=0.3))  # seeded
    assert bool(present(negative_share=1.0).logical_not().all()) and bool(present().all())


def test_a_negative_search_image_is_centred_on_another_sequence_target(data) -> None:
    seqs, _ = data
    options = {"colour": 0.0, "gray": 0.0, "samples": 36}
    positive = _plan(seqs, **options).epoch_jobs(0)
    negative = _plan(seqs, negative_share=1.0, **options).epoch_jobs(0)
    for pos, neg in zip(positive, negative):
        p, n = pos(), neg()
        assert _colour_at(p.exemplars, torch.zeros(len(p.present), 2)) == _colour_at(p.searches, p.offsets)
        ours = _colour_at(n.exemplars, torch.zeros(len(n.present), 2))
        theirs = _colour_at(n.searches, n.offsets)  # offsets: where the other object's centre lies
        assert all(a != b for a, b in zip(ours, theirs)) and not n.present.any()
        np.testing.assert_allclose(n.sizes.numpy(), 63.5 / (1 + np.zeros((len(ours), 2))), rtol=0.06)


def test_a_negative_still_pair_takes_another_box_of_its_category(data) -> None:
    seqs, stills = data
    sequences = read_coco_stills(stills)
    assert [s.category for s in sequences] == ["red", "green", "red", "blue", "green"]
    groups = _category_groups([s.category for s in sequences])
    assert [g.tolist() for g in groups] == [[0, 2], [1, 4], [0, 2], [0, 1, 2, 3, 4], [1, 4]]  # blue: alone
    assert [g.tolist() for g in _category_groups(["", "", "a"])] == [[0, 1, 2]] * 3  # no category: anything
    plan = _plan(seqs, stills=str(stills), stills_share=1.0, negative_share=1.0, colour=0.0, gray=0.0, samples=30)
    pairs = [(a, b) for job in plan.epoch_jobs(0) for batch in [job()]
             for a, b in zip(_colour_at(batch.exemplars, torch.zeros(len(batch.present), 2)),
                             _colour_at(batch.searches, batch.offsets))]  # fmt: skip
    assert all(a == b for a, b in pairs if a != "blue")  # the other box of the same category
    assert all(b != "blue" for a, b in pairs if a == "blue") and any(a == "blue" for a, _ in pairs)
    # ... and not the same box: the same category's other box lies in another image, whose background differs
    same = _plan(seqs, stills=str(stills), stills_share=1.0, colour=0.0, gray=0.0, samples=30).epoch_jobs(0)[0]()
    other = plan.epoch_jobs(0)[0]()
    assert not torch.allclose(same.searches, other.searches, atol=0.05)


@pytest.mark.parametrize(("options", "field"), [
    ({"negative_share": 1.5}, "negative_share"), ({"negative_share": "x"}, "negative_share"),
    ({"blur": -0.1}, "blur"), ({"blur": True}, "blur"), ({"blur_sigma": [2.0, 1.0]}, "blur_sigma"),
    ({"blur_sigma": 1.0}, "blur_sigma"), ({"blur_sigma": [0.5, 100.0]}, "blur_sigma"),
    ({"blur_sequences": "yes"}, "blur_sequences"),
])  # fmt: skip
def test_bad_options_name_the_field(data, options: dict[str, object], field: str) -> None:
    seqs, _ = data
    with pytest.raises(ConfigError, match=rf"train\.plan\.{field}\b"):
        _plan(seqs, **options)


def test_negative_pairs_need_another_sequence(tmp_path: Path, data) -> None:
    seqs, _ = data
    (tmp_path / "one").mkdir()
    (seqs / "red").rename(tmp_path / "one" / "red")
    with pytest.raises(ConfigError, match=r"train\.plan\.negative_share.*two training sequences"):
        _plan(tmp_path / "one", negative_share=0.2)
    _plan(tmp_path / "one")  # fine without negatives


# -- blur ----------------------------------------------------------------------------------------------


def _high_frequency(images: torch.Tensor) -> torch.Tensor:
    """Per image, the energy of its horizontal and vertical pixel differences."""
    return images.diff(dim=-1).pow(2).sum(dim=(1, 2, 3)) + images.diff(dim=-2).pow(2).sum(dim=(1, 2, 3))


def test_blur_is_the_identity_at_sigma_zero_and_removes_high_frequencies() -> None:
    images = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gaussian_blur(images, torch.zeros(4)), images)
    blurred = gaussian_blur(images, torch.tensor([0.0, 0.5, 1.0, 2.0]))
    assert torch.equal(blurred[0], images[0])  # σ = 0 beside others: still the identity
    energy = _high_frequency(blurred)
    assert (energy[1:] < energy[:-1]).all() and energy[3] < 0.1 * energy[0]
    np.testing.assert_allclose(blurred.mean(dim=(2, 3)), images.mean(dim=(2, 3)), atol=0.01)  # the kernel sums to 1
    flat = torch.full((1, 3, 20, 20), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([1.5])), flat)  # borders reflected, no dark rim
    # one row's impulse spreads as a Gaussian of that σ
    impulse = torch.zeros(1, 1, 31, 31)
    impulse[0, 0, 15, 15] = 1.0
    row = gaussian_blur(impulse, torch.tensor([2.0]))[0, 0, 15]
    taps = torch.arange(31) - 15.0
    variance = (row * taps**2).sum() / row.sum()
    assert variance.item() == pytest.approx(4.0 * math.sqrt(2.0) ** 0, rel=0.05)


def test_the_plan_blurs_still_search_images_only_unless_told(data) -> None:
    seqs, stills = data

    def batch(share: float, **options: object) -> TrackingPairBatch:
        return _plan(seqs, stills=str(stills), stills_share=share, **options).epoch_jobs(0)[0]()  # type: ignore[arg-type]

    def changed(a: TrackingPairBatch, b: TrackingPairBatch) -> torch.Tensor:
        assert torch.equal(a.offsets, b.offsets) and torch.equal(a.exemplars, b.exemplars)  # the same pairs
        return (a.searches - b.searches).abs().amax(dim=(1, 2, 3)) > 0

    blur = {"blur": 1.0, "blur_sigma": [1.5, 2.0]}
    sharp, blurred = batch(1.0), batch(1.0, **blur)
    assert changed(sharp, blurred).all()
    assert (_high_frequency(blurred.searches) < 0.8 * _high_frequency(sharp.searches)).all()
    assert not changed(batch(0.0), batch(0.0, **blur)).any()  # sequence pairs: not blurred
    assert changed(batch(0.0), batch(0.0, blur_sequences=True, **blur)).all()  # unless told
    assert changed(batch(1.0), batch(1.0, blur=0.5)).sum() in range(1, 6)  # with probability 0.5


# -- the losses on negative pairs ----------------------------------------------------------------------

PRESENT = torch.tensor([True, False])  # a positive pair and a negative one
OFFSETS, SIZES = torch.zeros(2, 2), torch.full((2, 2), 64.0)


def test_score_map_loss_by_hand() -> None:
    loss = LogisticScoreMapLoss(radius=16)
    # logits 0: log 2 per cell; a positive pair's cells weigh 1 in all, a negative pair's (all background) 0.5
    value = loss(torch.zeros(2, 1, 17, 17), OFFSETS, stride=8, present=PRESENT)
    assert value.item() == pytest.approx(0.75 * math.log(2), rel=1e-6)
    logits = torch.zeros(2, 1, 17, 17)
    logits[:, 0, 8, 8] = 50.0  # a confident "target here" at the centre: costs only where there is none
    one = LogisticScoreMapLoss(radius=1)  # one positive cell, the centre
    parts = [one(logits[i : i + 1], OFFSETS[i : i + 1], 8, PRESENT[i : i + 1]).item() for i in range(2)]
    assert parts[0] == pytest.approx(0.5 * 288 * math.log(2) / 288, rel=1e-6)  # the centre is right
    assert parts[1] == pytest.approx(0.5 * (50 + 288 * math.log(2)) / 289, rel=1e-5)  # everything negative


def test_anchor_free_loss_on_a_negative_pair_by_hand() -> None:
    outputs = torch.zeros(2, 6, 17, 17)
    outputs[:, 2:] = 4.0  # every position predicts a 64×64 box centred on itself
    outputs.requires_grad_(True)
    loss = AnchorFreeLoss(radius=16)
    parts = loss.parts(outputs, OFFSETS, SIZES, 8, PRESENT)
    assert parts["positives"].item() == 25  # the positive pair's 5×5, none of the negative's
    assert parts["cls"].item() == pytest.approx(0.75 * math.log(2), rel=1e-6)
    alone = loss.parts(outputs[:1], OFFSETS[:1], SIZES[:1], 8)
    assert parts["ctr"].item() == pytest.approx(alone["ctr"].item()) and parts["box"].item() == pytest.approx(
        alone["box"].item())  # fmt: skip
    negative = loss.parts(outputs[1:], OFFSETS[1:], SIZES[1:], 8, PRESENT[1:])
    assert (negative["positives"].item(), negative["ctr"].item(), negative["box"].item()) == (0, 0, 0)
    assert negative["cls"].item() == pytest.approx(0.5 * math.log(2), rel=1e-6)
    loss(outputs, OFFSETS, SIZES, 8, PRESENT).backward()
    assert outputs.grad is not None
    assert outputs.grad[1, 1:].abs().max() == 0 and outputs.grad[0, 1:].abs().max() > 0  # centre-ness, box
    assert outputs.grad[1, 0].abs().min() > 0  # every position learns "not here"
    focal = AnchorFreeLoss(radius=16, focal_gamma=2.0).parts(outputs[1:], OFFSETS[1:], SIZES[1:], 8, PRESENT[1:])
    # no positive: the focal sum over 289 positions of 0.75·0.5²·log 2, divided by max(1, 0)
    assert focal["cls"].item() == pytest.approx(289 * 0.75 * 0.25 * math.log(2), rel=1e-5)


def test_rpn_loss_on_a_negative_pair_by_hand() -> None:
    anchors = anchor_grid(17, 8, anchor_shapes(RATIOS, 64))
    outputs = torch.zeros(2, 25, 17, 17, requires_grad=True)
    loss = RPNLoss()
    parts = loss.parts(outputs, OFFSETS, SIZES, anchors, present=PRESENT)
    # the positive pair: 13 positives and 51 negatives (64 in all); the negative pair: 64 negatives
    assert (parts["positives"].item(), parts["negatives"].item()) == (13, 51 + 64)
    assert parts["cls"].item() == pytest.approx(math.log(2), rel=1e-6)  # every logit 0
    negative = loss.parts(outputs[1:], OFFSETS[1:], SIZES[1:], anchors, present=PRESENT[1:])
    assert (negative["positives"].item(), negative["negatives"].item(), negative["box"].item()) == (0, 64, 0)
    assert negative["cls"].item() == pytest.approx(0.5 * math.log(2), rel=1e-6)  # the negatives' half only
    loss(outputs, OFFSETS, SIZES, anchors, present=PRESENT).backward()
    assert outputs.grad is not None
    assert outputs.grad[1, 5:].abs().max() == 0 and outputs.grad[0, 5:].abs().max() > 0  # no regression
    assert (outputs.grad[1, :5] > 0).sum() == 64  # 64 sampled anchors pushed towards "no target"


@pytest.mark.parametrize(("comparator", "loss"), [
    (None, LogisticScoreMapLoss()), ({"name": "anchor_free", "params": {"channels": 8}}, AnchorFreeLoss()),
    ("rpn", RPNLoss()),
])  # fmt: skip
def test_each_loss_reads_the_batch_present_flag(comparator: object, loss: torch.nn.Module) -> None:
    torch.manual_seed(0)
    if comparator == "rpn":
        config = rpn_model_config()
    else:
        config = tiny_model_config()
        if comparator is not None:
            config = ModelConfig.model_validate(config.model_dump(mode="json") | {"comparator": comparator})
    model = build_model(config)
    z, x = torch.rand(2, 3, 127, 127), torch.rand(2, 3, 255, 255)

    def value(present: list[bool]) -> float:
        batch = TrackingPairBatch(z, x, torch.zeros(2, 2), torch.full((2, 2), 64.0), torch.tensor(present), seed=3)
        return float(loss.compute(model, batch).item())  # type: ignore[operator]

    assert value([True, True]) != value([True, False]) != value([False, False])
