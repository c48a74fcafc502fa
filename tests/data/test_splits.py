"""twinnet.data.splits: splits by class and by item."""

import numpy as np

from twinnet.data import (
    split_by_class,
    split_by_item,
)

LABELS = np.repeat(np.arange(7), [2, 3, 5, 8, 13, 4, 2])


def test_split_by_class_never_shares_a_class():
    keep, held = split_by_class(LABELS, 0.3, seed=0)
    assert set(LABELS[keep]).isdisjoint(LABELS[held])
    assert len(keep) + len(held) == len(LABELS)
    assert len(set(LABELS[held])) == 2  # 30% of 7 classes


def test_split_by_item_is_stratified():
    labels = np.repeat(np.arange(3), 10)
    keep, held = split_by_item(labels, 0.2, seed=0)
    assert np.array_equal(np.bincount(labels[held]), [2, 2, 2])
    assert set(keep).isdisjoint(held)
