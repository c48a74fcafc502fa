"""The handwritten digits that ship inside scikit-learn (8×8, 1,797 images), as an item set."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from twinnet.data.items import ItemSet


def digits_items() -> ItemSet:
    """All 1,797 digits as ``uint8`` images ``(1, 8, 8)`` scaled from 0–16 to 0–255, class = digit."""
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return ItemSet(
        data=torch.from_numpy(images),
        labels=bunch.target.astype(np.int64),
        class_names=[str(d) for d in range(10)],
        names=[f"digits[{i}]" for i in range(len(images))],
    )
