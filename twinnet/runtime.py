"""Seeding and device selection."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


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
