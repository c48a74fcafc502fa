"""twinnet.data.samplers: P×K batches."""

import numpy as np

from twinnet.data import (
    PKBatchSampler,
)

LABELS = np.repeat(np.arange(7), [2, 3, 5, 8, 13, 4, 2])


def test_pk_sampler_gives_p_classes_of_k():
    sampler = PKBatchSampler(LABELS, classes_per_batch=4, items_per_class=3, batches_per_epoch=10, seed=0)
    for batch in sampler.epoch(0):
        classes, counts = np.unique(LABELS[batch], return_counts=True)
        assert len(classes) == 4 and (counts == 3).all()
    assert all(np.array_equal(x, y) for x, y in zip(sampler.epoch(2), sampler.epoch(2)))
