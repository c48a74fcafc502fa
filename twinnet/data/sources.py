"""Data sources: one registered reader per format, used by training and evaluation alike.

A :class:`DataSource` says how one format is read (``read``) and how to recognise it (``sniff``,
for ``format: auto``); what it returns is a :class:`Dataset`: items, and the fixed pairs or
one-shot runs the format carries. Adding a format is one class plus ``@DATA_SOURCES.register``::

    from twinnet.data.sources import DATA_SOURCES, DataSource, Dataset

    @DATA_SOURCES.register("npz")
    class NpzSource(DataSource):
        def sniff(self, path): return path.suffix == ".npz"
        def read(self, path, spec, options):
            arrays = np.load(path)                      # no pickles: allow_pickle is False by default
            return Dataset(from_arrays(arrays["x"], arrays["y"]), source=str(path))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from twinnet.config import InputSpec
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.errors import ConfigError, DataError
from twinnet.registry import DATA_SOURCES


@dataclass
class ReadOptions:
    """How to read a path, beyond its format (from ``data.*`` in a config, or CLI flags)."""

    class_depth: int | None = None
    """Folder levels that name a class; ``None``: the format's default (2 for Omniglot's layout)."""
    skip_bad: bool = False
    score_max: float | None = None
    positive_score: float | None = None


@dataclass
class Dataset:
    """What a data source gives: ``items`` (with labels), and ``pairs`` into them when the data
    is a list of pairs (a pairs file, STS-B), or ``runs`` (official one-shot runs)."""

    items: ItemSet
    pairs: Pairs | None = None
    runs: list[Any] | None = None
    source: str = ""
    format: str = ""
    calibration_protocols: list[str] = field(default_factory=list)
    """Protocols whose ``calibrate`` runs after training on this kind of data (their thresholds go
    into ``calibration.extra``): e.g. ``signature`` for signature data."""

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.items)

    @property
    def has_pairs(self) -> bool:
        return self.pairs is not None


class DataSource(ABC):
    """One data format: how it is recognised and read."""

    #: Recognised by ``format: auto`` before sources with a lower priority.
    priority: ClassVar[int] = 0
    #: Protocols to calibrate after training on this format (see :attr:`Dataset.calibration_protocols`).
    calibration_protocols: ClassVar[tuple[str, ...]] = ()

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        """Whether ``path`` looks like this format (for ``format: auto``)."""
        return False

    @abstractmethod
    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset: ...


def read_dataset(
    path: str | Path, spec: InputSpec, format: str = "auto", options: ReadOptions | None = None, *,
    field: str = "data.format",
) -> Dataset:  # fmt: skip
    """Read ``path`` with the source registered as ``format`` (``auto``: the first that sniffs it)."""
    path = Path(path)
    options = options or ReadOptions()
    if not path.exists():
        raise DataError(f"data not found: {path}")
    if format == "auto":
        candidates = sorted(DATA_SOURCES.items(), key=lambda kv: -getattr(kv[1], "priority", 0))
        for name, factory in candidates:
            source = factory()
            if source.sniff(path, spec):
                format = name
                break
        else:
            raise DataError(f"{path}: not a format twinnet recognises; name one with {field} "
                            f"({', '.join(DATA_SOURCES.names())})")  # fmt: skip
    elif format not in DATA_SOURCES:
        raise ConfigError(f"{field}: unknown format {format!r}; known: auto, {', '.join(DATA_SOURCES.names())}")
    source = DATA_SOURCES.build(format)
    dataset = source.read(path, spec, options)
    dataset.format = format
    dataset.source = dataset.source or str(path)
    dataset.calibration_protocols = list(source.calibration_protocols)
    return dataset


def format_names() -> list[str]:
    return ["auto", *DATA_SOURCES.names()]
