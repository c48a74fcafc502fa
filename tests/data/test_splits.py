"""twinnet.data.splits: splits by class and by item."""

import numpy as np
import pytest
import torch
from PIL import Image

from twinnet.config import AugmentConfig, InputSpec
from twinnet.data import (
    PairSampler,
    PKBatchSampler,
    RandomAffine,
    balanced_pairs,
    from_arrays,
    image_folder,
    read_pairs_file,
    sample_triplets,
    split_by_class,
    split_by_item,
)
from twinnet.data.images import load_image
from twinnet.errors import DataError

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
