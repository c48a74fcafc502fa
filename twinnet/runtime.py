"""Seeding and device selection."""

from __future__ import annotations

import os
import random
from enum import IntEnum
from pathlib import Path

import numpy as np
import torch


class Stream(IntEnum):
    """The purposes of a run's random streams, each mixed into its seed (``generator(seed, Stream.X,
    epoch)``): named here, in one place, so no two purposes share a stream by accident. The values
    are part of what makes a run reproducible: never renumber them."""

    TRAIN_PAIRS = 1
    PK_BATCHES = 2
    VALIDATION_PAIRS = 3
    AUGMENT = 5
    PAIR_ORDER = 6
    EVAL_PAIRS = 7
    DROPOUT = 8
    EPISODES = 11
    WITHIN_GROUP_EPISODES = 13
    SIGNATURE_REFERENCES = 21
    TEXT_SPLIT = 21  # the text pair split and the signature references never meet in one run
    TRACKING_PAIRS = 41  # tracking: which frames pair up, and how each crop is shifted, scaled, coloured
    ITEM_ORDER = 31  # the items batch plan's order of training items
    PAIR_FOLDS = 33  # k-fold pairs protocol: the folds of pairs files without their own sets
    OPEN_SET = 34  # open-set protocol: who is enrolled, and which of their images
    VIEWS = 35  # the views plan: which words each text view deletes
    PSEUDO_LABELS = 36  # pseudo-label plan: k-means initialisation, and the items probed for spread


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and further integers (epoch, purpose), so every
    random stream of a run is reproducible on its own and independent of the others."""
    mixed = np.random.SeedSequence([seed, *parts]).generate_state(1, dtype=np.uint64)[0]
    g = torch.Generator()
    g.manual_seed(int(mixed) & ((1 << 63) - 1))
    return g


def numpy_rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *parts]))


def data_root() -> Path:
    """Where the shared real data sets are: ``$TWINNET_DATA``, else ``../shared/data`` (beside the checkout)."""
    return Path(os.environ.get("TWINNET_DATA") or Path("..") / "shared" / "data")


def expand_data_path(path: str) -> str:
    """Replace ``${TWINNET_DATA}`` (or ``$TWINNET_DATA``) in a config path with :func:`data_root`."""
    root = str(data_root())
    return path.replace("${TWINNET_DATA}", root).replace("$TWINNET_DATA", root)
