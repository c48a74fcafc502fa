"""Splits by class (open set: validation/test identities never trained on) and by item (closed set)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from twinnet.errors import DataError


def split_by_class(labels: np.ndarray, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices so that no class is on both sides; ``holdout`` is the share of classes
    (not items) in the second part. Returns ``(keep, held_out)`` index arrays."""
    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    if n_classes < 2:
        raise DataError("a split by class needs at least two classes")
    n_held = max(1, round(holdout * n_classes))
    if n_held >= n_classes:
        raise DataError(f"holding out {n_held} of {n_classes} classes leaves none to train on")
    splitter = GroupShuffleSplit(n_splits=1, test_size=n_held, random_state=seed)
    keep, held = next(splitter.split(labels, groups=labels))
    return np.sort(keep), np.sort(held)


def split_by_item(labels: np.ndarray, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices within each class (stratified), for closed-set use."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    keep, held = train_test_split(idx, test_size=holdout, random_state=seed, stratify=labels)
    return np.sort(keep), np.sort(held)
