"""twinnet.data.trajectory_augment: time warp, crop, affine, jitter and pressure on pen trajectories."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from twinnet.config import AugmentConfig, TrajectoryAugmentConfig, parse_config
from twinnet.data.signatures import TRAJECTORY_FEATURES, derive_features, read_online_signatures
from twinnet.data.trajectory_augment import TrajectoryAugment, resample
from twinnet.data.transforms import build_augmenter
from twinnet.errors import ConfigError, DataError

X, Y, DX, DY, COS, SIN, SPEED, PRESSURE, PEN = range(9)
OFF = {"time_warp": 0, "crop": 0, "rotation": 0, "shear": 0, "scale": (1, 1), "jitter": 0, "pressure_gamma": 0,
       "pressure_noise": 0}  # fmt: skip
ON = {"time_warp": 0.3, "crop": 0.1, "rotation": 10, "shear": 0.2, "scale": (0.8, 1.2), "jitter": 0.05,
      "pressure_gamma": 0.5, "pressure_noise": 0.1}  # fmt: skip


def augment(**on: object) -> TrajectoryAugment:
    """Only the distortions named in ``on``."""
    return TrajectoryAugment(TrajectoryAugmentConfig(**{**OFF, **on}))


def trajectories(n: int = 6, length: int = 64, seed: int = 0, pressure: bool = True) -> torch.Tensor:
    """Smooth random pen paths with the reader's features (normalised, as read items are)."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(n, 2, length, generator=g).cumsum(-1)
    steps = torch.nn.functional.avg_pool1d(steps, 5, 1, 2, count_include_pad=False)  # smooth
    p = torch.rand(n, length, generator=g) * 400 + 100
    pen = torch.ones(n, length)
    pen[:, length // 2 : length // 2 + 4] = 0
    p = p * pen if pressure else torch.zeros(n, length)
    return derive_features(steps[:, 0] * 300 + 2000, steps[:, 1] * 100 + 4000, p, pen)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- each distortion ------------------------------------------------------------------------------


def test_everything_at_zero_strength_is_the_identity() -> None:
    x = trajectories()
    assert augment()(x, gen()) is x


@pytest.mark.parametrize("name", sorted(ON))
def test_each_distortion_changes_items_and_is_the_identity_at_zero(name: str) -> None:
    x = trajectories()
    assert not torch.allclose(augment(**{name: ON[name]})(x, gen()), x, atol=1e-3)
    # the same distortion at zero strength, beside one that leaves the items as they are (a rotation
    # by at most 1e-9 degrees): the batch comes back as it went in, up to float rounding
    zero = augment(**{name: OFF[name], "rotation": 1e-9})(x, gen())
    torch.testing.assert_close(zero, x, atol=2e-5, rtol=1e-5)


def test_time_warp_is_monotone_keeps_the_endpoints_and_the_length() -> None:
    warp = augment(time_warp=0.5)
    times = warp.time_map(32, 100, gen())
    assert times.shape == (32, 100)
    assert (times.diff(dim=1) > 0).all()  # strictly increasing: no step goes back in time
    assert (times[:, 0] == 0).all() and (times[:, -1] == 1).all()
    assert (times - torch.linspace(0, 1, 100)).abs().max() > 0.02  # it does warp
    # a channel that rises steadily (the pen-down channel is resampled and kept as it is)
    x = trajectories(4, 100)
    x[:, PEN] = torch.linspace(0, 1, 100)
    out = warp(x, gen())
    assert out.shape == x.shape
    assert (out[:, PEN].diff(dim=1) >= 0).all()
    assert torch.equal(out[:, PEN, 0], x[:, PEN, 0]) and torch.equal(out[:, PEN, -1], x[:, PEN, -1])
    assert not torch.allclose(out[:, PEN], x[:, PEN], atol=1e-3)


def test_crop_cuts_at_most_its_share_from_each_end() -> None:
    times = augment(crop=0.05).time_map(200, 50, gen())
    assert (times[:, 0] >= 0).all() and (times[:, 0] <= 0.05).all() and times[:, 0].max() > 0.03
    assert (times[:, -1] <= 1).all() and (times[:, -1] >= 0.95).all() and times[:, -1].min() < 0.97
    assert (times.diff(dim=1) > 0).all()


def test_resample_reads_whole_positions_exactly_and_interpolates_between() -> None:
    signals = torch.randn(2, 3, 10)
    torch.testing.assert_close(resample(signals, torch.arange(10.0).expand(2, 10)), signals, atol=0, rtol=0)
    half = resample(signals, torch.full((2, 1), 2.5))[..., 0]
    torch.testing.assert_close(half, (signals[..., 2] + signals[..., 3]) / 2)


def test_rotation_turns_the_positions_only_and_derives_the_rest_from_them() -> None:
    x = trajectories()
    out = augment(rotation=20)(x, gen(3))
    assert torch.equal(out[:, PRESSURE], x[:, PRESSURE]) and torch.equal(out[:, PEN], x[:, PEN])
    # velocity, direction and speed are those of the new positions, exactly as the reader derives them
    torch.testing.assert_close(out, derive_features(out[:, X], out[:, Y], out[:, PRESSURE], out[:, PEN]))
    angles = []
    for before, after in zip(x, out, strict=True):
        # the map from old to new positions is a rotation (times the renormalisation's scale)
        a = torch.linalg.lstsq(before[[X, Y]].T.double(), after[[X, Y]].T.double()).solution.T
        torch.testing.assert_close(a[[0, 0], [0, 1]], torch.stack([a[1, 1], -a[1, 0]]), atol=1e-4, rtol=0)
        angles.append(math.degrees(math.atan2(a[1, 0], a[0, 0])))
    assert all(0 < abs(t) <= 20 for t in angles) and len({round(t, 3) for t in angles}) == len(angles)  # per item


def test_shear_and_scale_change_the_shape_not_the_pressure() -> None:
    x = trajectories()
    out = augment(shear=0.3, scale=(0.7, 1.3))(x, gen())
    assert torch.equal(out[:, PRESSURE], x[:, PRESSURE]) and torch.equal(out[:, PEN], x[:, PEN])
    ratio = out[:, X].std(1) / x[:, X].std(1)  # y keeps std 1 (normalisation): x's spread changes
    assert (ratio - 1).abs().max() > 0.05


def test_augmented_items_are_normalised_like_read_ones() -> None:
    out = TrajectoryAugment(TrajectoryAugmentConfig(**ON))(trajectories(16), gen())
    assert out[:, X].mean(1).abs().max() < 1e-4 and out[:, Y].mean(1).abs().max() < 1e-4
    torch.testing.assert_close(out[:, Y].std(1, unbiased=False), torch.ones(16))
    torch.testing.assert_close(out[:, PRESSURE].amax(1), torch.ones(16))
    assert (out[:, PRESSURE] >= 0).all()
    torch.testing.assert_close(out[:, COS] ** 2 + out[:, SIN] ** 2, torch.ones_like(out[:, COS]), atol=1e-4, rtol=0)


def test_pressure_distortion_keeps_pen_up_at_zero_and_absent_pressure_absent() -> None:
    x = trajectories()
    out = augment(pressure_gamma=0.8, pressure_noise=0.2)(x, gen())
    lifted = x[:, PRESSURE] == 0
    assert lifted.any() and (out[:, PRESSURE][lifted] == 0).all()
    assert not torch.allclose(out[:, PRESSURE], x[:, PRESSURE], atol=1e-3)
    torch.testing.assert_close(out[:, [X, Y]], x[:, [X, Y]], atol=2e-5, rtol=1e-5)  # positions untouched
    # a tablet that records no pressure: the channel stays zero whatever is switched on
    none = trajectories(pressure=False)
    assert (none[:, PRESSURE] == 0).all()
    assert (TrajectoryAugment(TrajectoryAugmentConfig(**ON))(none, gen())[:, PRESSURE] == 0).all()


def test_jitter_moves_the_positions_by_about_its_size() -> None:
    x = trajectories(32, 256)
    out = augment(jitter=0.02)(x, gen())
    assert 0.01 < (out[:, X] - x[:, X]).std().item() < 0.04


# -- seeding, shapes, configuration -----------------------------------------------------------------


def test_the_same_seed_gives_the_same_batch_and_another_seed_another() -> None:
    x = trajectories()
    aug = TrajectoryAugment(TrajectoryAugmentConfig(**ON))
    assert torch.equal(aug(x, gen(7)), aug(x, gen(7)))
    assert not torch.allclose(aug(x, gen(7)), aug(x, gen(8)))
    # every item draws its own distortion: two copies of one item in a batch come out different
    pair = aug(x[[0, 0]], gen(7))
    assert not torch.allclose(pair[0], pair[1])


def test_other_shapes_are_refused_with_the_layout_named() -> None:
    with pytest.raises(DataError, match="pressure"):
        TrajectoryAugment(TrajectoryAugmentConfig())(torch.randn(2, 3, 50), gen())


def test_the_trajectory_section_is_validated_naming_the_field() -> None:
    def check(trajectory: dict[str, object], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            parse_config({"data": {"augment": {"enabled": True, "trajectory": trajectory}}})

    check({"rotation": 90}, r"data\.augment\.trajectory\.rotation: Input should be less than or equal to 45")
    check({"time_warp": 1.0}, r"data\.augment\.trajectory\.time_warp: Input should be less than 1")
    check({"jitter": -0.1}, r"data\.augment\.trajectory\.jitter: Input should be greater than or equal to 0")
    check({"crop": 0.5}, r"data\.augment\.trajectory\.crop: Input should be less than or equal to 0.25")
    check({"scale": [1.2, 0.8]}, r"data\.augment\.trajectory\.scale: Value error, the smallest scale comes first")
    check({"pressure_gamma": float("nan")}, r"data\.augment\.trajectory\.pressure_gamma")
    check({"warp": 0.1}, r"data\.augment\.trajectory\.warp: unknown key")
    cfg = parse_config({"data": {"augment": {"enabled": True, "trajectory": {"crop": 0.05, "rotation": 0}}}})
    assert cfg.data.augment.trajectory.crop == 0.05 and cfg.data.augment.trajectory.time_warp == 0.2


def test_sequence_models_get_trajectory_augmentation() -> None:
    built = build_augmenter(AugmentConfig(enabled=True, trajectory={"jitter": 0.03}), "sequence")
    assert isinstance(built, TrajectoryAugment) and built.config.jitter == 0.03
    assert build_augmenter(AugmentConfig(enabled=False), "sequence") is None
    assert len(TRAJECTORY_FEATURES) == 9 and TRAJECTORY_FEATURES[PRESSURE] == "pressure"


# -- on real SVC2004 trajectories -------------------------------------------------------------------


def test_real_signatures_stay_normalised_and_close_to_the_original(tmp_path, shared_data) -> None:
    task2 = shared_data / "svc2004" / "Task2"
    for name in ("U1S1.TXT", "U1S2.TXT", "U1S21.TXT", "U2S1.TXT"):
        shutil.copy(task2 / name, tmp_path / name)
    x = read_online_signatures(tmp_path).load(np.arange(4))
    out = build_augmenter(AugmentConfig(enabled=True), "sequence")(x, gen())  # the defaults
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out[:, Y].std(1, unbiased=False), torch.ones(4))
    assert not torch.allclose(out, x, atol=1e-2)
    # the default affine part and jitter are small: positions move by a fraction of the writing's
    # height (its standard deviation is 1), not beyond recognition
    shape_only = build_augmenter(AugmentConfig(enabled=True, trajectory={"time_warp": 0}), "sequence")(x, gen())
    moved = (shape_only[:, [X, Y]] - x[:, [X, Y]]).norm(dim=1).mean(1)
    assert (moved > 0.02).all() and (moved < 0.5).all()
