"""P×K batches with two views of every item: instance ids follow the underlying item, and one
labelled example per class is enough."""

import numpy as np
import pytest
import torch

from twinnet.config import TrainConfig
from twinnet.data.items import from_arrays
from twinnet.errors import DataError
from twinnet.training.plans import BATCH_PLANS


def _identity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:  # an augmenter that changes nothing
    return x


def _images(per_class: list[int]):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(per_class)), per_class)
    return from_arrays(rng.integers(0, 255, (len(labels), 1, 4, 4), dtype=np.uint8), labels)


def _pk_batches(items, **train):
    config = TrainConfig(classes_per_batch=2, items_per_class=4, samples_per_epoch=32, **train)
    return [job() for job in BATCH_PLANS.get("pk")(items, None, config, augment=_identity).epoch_jobs(0)]


def test_copies_of_one_item_share_an_instance_id():
    # classes of 2 items with K = 4: every item is drawn more than once in its class's slot
    for batch in _pk_batches(_images([2, 2, 2]), instance_weight=1.0):
        x, ids = batch.inputs.flatten(1), batch.instances
        same_image = (x[:, None, :] == x[None, :, :]).all(-1)
        assert torch.equal(same_image, ids[:, None] == ids[None, :])  # same id exactly where same item
        assert int(ids.max()) < len(ids)  # numbered within the batch (distributed offsets rely on it)


def test_one_labelled_item_per_class_trains_with_views():
    batches = _pk_batches(_images([1, 1, 1, 1]), instance_weight=1.0)
    assert batches and all(b.n_items == 16 for b in batches)
    for batch in batches:
        assert len(torch.unique(batch.labels)) == 2 and len(torch.unique(batch.instances)) == 2


def test_one_labelled_item_per_class_without_views_is_refused():
    with pytest.raises(DataError, match="two or more items"):
        _pk_batches(_images([1, 1, 1, 1]))
