"""The tracking pair plan: the target lands where the batch says, and epochs are reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twinnet.config import TrainConfig
from twinnet.errors import ConfigError
from twinnet.tracking.items import SequenceItems
from twinnet.tracking.plan import TrackingPairsPlan
from twinnet.tracking.sequences import read_sequences
from twinnet.training.plans import build_plan


def _plan(root, **options) -> TrackingPairsPlan:
    items = SequenceItems.from_sequences(read_sequences(root))
    config = TrainConfig(batch_size=6, samples_per_epoch=12, plan={"colour": 0.0, "gray": 0.0, **options})
    plan = build_plan("tracking_pairs", items, None, config)
    assert isinstance(plan, TrackingPairsPlan)
    return plan


def _red_centre(images: torch.Tensor) -> np.ndarray:
    """Per image, the centre (x, y) of its red pixels, in pixels from the image centre."""
    red = (images[:, 0] > 0.7) & (images[:, 1] < 0.35)
    out = []
    for mask in red:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        out.append([xs.float().mean() + 0.5 - mask.shape[1] / 2, ys.float().mean() + 0.5 - mask.shape[0] / 2])
    return np.asarray(out)


def test_target_lands_at_the_batch_offsets(otb_sequence) -> None:
    root, _ = otb_sequence
    plan = _plan(root, shift=24.0, scale_jitter=0.05, hflip=0.5)
    batch = plan.epoch_jobs(0)[0]()
    assert batch.exemplars.shape == (6, 3, 127, 127) and batch.searches.shape == (6, 3, 255, 255)
    found = _red_centre(batch.searches)
    np.testing.assert_allclose(found, batch.offsets.numpy(), atol=1.5)
    assert np.abs(batch.offsets.numpy()).max() > 2  # the crops were shifted
    np.testing.assert_allclose(_red_centre(batch.exemplars), 0.0, atol=4.5)  # exemplar shift ≤ 4 px


def test_epochs_are_reproducible_and_differ(otb_sequence) -> None:
    root, _ = otb_sequence
    a, b = _plan(root), _plan(root)
    first = a.epoch_jobs(1)[1]()
    again = b.epoch_jobs(1)[1]()
    other = b.epoch_jobs(2)[1]()
    assert torch.equal(first.searches, again.searches) and torch.equal(first.offsets, again.offsets)
    assert not torch.equal(first.offsets, other.offsets)


def test_plan_options_are_checked(otb_sequence) -> None:
    root, _ = otb_sequence
    with pytest.raises(ConfigError, match="max_gapp"):
        _plan(root, max_gapp=3)
    with pytest.raises(ConfigError, match="stills"):
        _plan(root, stills_share=0.5)


def test_a_pair_loss_on_tracking_data_is_a_clear_error(tmp_path) -> None:
    from tests.tracking.conftest import square_frames, write_otb
    from twinnet.errors import DataError

    for k in range(2):
        write_otb(tmp_path / f"seq{k}", *square_frames(seed=k))
    items = SequenceItems.from_sequences(read_sequences(tmp_path))
    with pytest.raises(DataError, match="score_map_logistic"):
        build_plan("pairs", items, None, TrainConfig(batch_size=4, samples_per_epoch=8)).epoch_jobs(0)[0]()


def test_batch_sizes_are_the_target_size_in_the_search_image(otb_sequence) -> None:
    root, _ = otb_sequence
    plan = _plan(root, shift=16.0, scale_jitter=0.2, hflip=0.5)
    batch = plan.epoch_jobs(0)[0]()
    red = (batch.searches[:, 0] > 0.7) & (batch.searches[:, 1] < 0.35)
    extent = np.array([[m.any(0).sum().item(), m.any(1).sum().item()] for m in red], dtype=np.float64)
    # a 20×20 square; its exemplar region 40 px, 127 in the crop: 63.5 px, divided by the scale jitter
    np.testing.assert_allclose(extent, batch.sizes.numpy(), atol=2.0)
    assert batch.sizes.min() < 60 < 67 < batch.sizes.max()


def test_batches_carry_a_reproducible_seed_for_the_loss(otb_sequence) -> None:
    root, _ = otb_sequence
    a, b = _plan(root), _plan(root)
    seeds = [job().seed for job in a.epoch_jobs(1)]
    assert seeds == [job().seed for job in b.epoch_jobs(1)]  # the same run, the same seeds
    assert len(set(seeds)) == len(seeds) and seeds != [job().seed for job in b.epoch_jobs(2)]
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)
