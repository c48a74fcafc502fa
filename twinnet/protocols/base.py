"""The evaluation-protocol interface and registry.

A protocol is an object with a ``name``, a ``primary_metric`` and whether that metric is better when
greater (``greater_is_better``). ``twinnet evaluate`` and the trainer's validation both use it:
the trainer selects checkpoints and stops early on the primary metric, in the protocol's direction.
Adding a protocol is one class plus ``@PROTOCOLS.register(name)``; its constructor's keyword
arguments are its options (``--ways``, ``train.validation.params``), checked by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from twinnet.calibrate import NATIVE, OperatingPoint
from twinnet.data.sources import Dataset
from twinnet.errors import DataError
from twinnet.model import AnyTwin
from twinnet.registry import PROTOCOLS


@dataclass
class ProtocolResult:
    """What a protocol measured: ``metrics`` (flat, JSON-able), and which of them is primary."""

    protocol: str
    metrics: dict[str, Any]
    primary_metric: str
    greater_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    """Nested figures that are not metrics (e.g. the decisions at the calibrated threshold)."""

    @property
    def primary(self) -> float:
        return float(self.metrics[self.primary_metric])

    def improves_on(self, other: float | None, min_delta: float = 0.0) -> bool:
        """Whether this result's primary metric beats ``other`` by more than ``min_delta``."""
        if other is None:
            return True
        return self.primary > other + min_delta if self.greater_is_better else self.primary < other - min_delta

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, **self.metrics, **self.details, "primary_metric": self.primary_metric}


@dataclass
class DecisionScores:
    """What a protocol that makes accept/reject decisions compares: one native comparator value per
    trial (a pair, or a questioned signature against a writer's references), whether the trial is
    genuine, how many identities took part, and the settings that produced the values (they go into
    an operating point's provenance, and must match for a stored point to apply). ``scale`` says
    what the values are: ``native`` comparator values, or scores after a normalisation (named; a
    similarity scale, :func:`twinnet.calibrate.scale_orientation`); ``groups``, when known, the
    identity each trial belongs to (for intervals that resample identities); ``other_scales``, the
    same trials on other scales the protocol also scored (a model with a cohort normaliser: its
    native values too), so that points fitted on either can be checked."""

    native: np.ndarray
    genuine: np.ndarray
    identities: int
    settings: dict[str, Any] = field(default_factory=dict)
    scale: str = NATIVE
    groups: np.ndarray | None = None
    other_scales: dict[str, np.ndarray] = field(default_factory=dict)

    def on(self, scale: str) -> np.ndarray | None:
        """The trials' values on ``scale``, or None when the protocol did not score them so."""
        return self.native if scale == self.scale else self.other_scales.get(scale)


class EvaluationProtocol(ABC):
    """An evaluation protocol. Subclasses set ``name`` (by registration), ``primary_metric``,
    ``greater_is_better`` and ``needs`` and implement :meth:`evaluate`."""

    name: ClassVar[str] = ""
    primary_metric: ClassVar[str] = ""
    greater_is_better: ClassVar[bool] = True
    #: What the data must hold: ``labels`` (labelled items), ``pairs`` (given pairs), ``runs`` (one-shot
    #: runs) or ``labels_or_pairs``.
    needs: ClassVar[str] = "labels"
    #: One line for ``twinnet evaluate --help`` and error messages.
    summary: ClassVar[str] = ""
    #: Whether validation also scores balanced same/different pairs of the data (verification figures
    #: and calibrated thresholds beside the protocol); False where the model compares no embedding
    #: vectors (``tracking``: score maps).
    scores_pairs: ClassVar[bool] = True

    def check_data(self, data: Dataset) -> None:
        """A clear error when ``data`` is not what this protocol measures on."""
        where = data.source or "this data"
        if self.needs == "pairs" and data.pairs is None:
            raise DataError(f"{where}: the {self.name} protocol needs a pairs file")
        if self.needs == "runs" and not data.runs:
            raise DataError(f"{where}: the {self.name} protocol needs a folder of one-shot runs")
        if self.needs == "labels" and (data.pairs is not None or data.runs):
            raise DataError(f"{where}: the {self.name} protocol needs labelled items (a folder of classes), "
                            "not a pairs file or runs")  # fmt: skip
        if self.needs == "labels_or_pairs" and data.runs:
            raise DataError(f"{where}: the {self.name} protocol needs labelled items or pairs, not one-shot runs")

    @abstractmethod
    def evaluate(self, model: AnyTwin, data: Dataset) -> ProtocolResult:
        """Measure ``model`` on ``data`` (at the model's calibrated threshold where one applies)."""

    #: Settings (keys of :attr:`DecisionScores.settings`) a stored operating point must share with this
    #: protocol to decide for it (``signature``: ``references`` and ``aggregate``).
    decision_keys: ClassVar[Sequence[str]] = ()

    def decision_scores(self, model: AnyTwin, data: Dataset) -> DecisionScores | None:
        """The native values and genuine flags this protocol decides on, scored with its own pairing
        (what :func:`twinnet.calibrate.recalibrate` fits thresholds on); None for protocols that make
        no accept/reject decision (episodes, correlations, retrieval)."""
        return None

    @classmethod
    def makes_decisions(cls) -> bool:
        return cls.decision_scores is not EvaluationProtocol.decision_scores

    def decision_settings(self) -> dict[str, Any]:
        """The settings a stored operating point is matched on (:attr:`decision_keys`)."""
        return {k: getattr(self, k) for k in self.decision_keys}

    def stored_operating_point(self, model: AnyTwin) -> tuple[str, OperatingPoint] | None:
        """The model's operating point for this protocol: the default if it was fitted with this
        protocol and settings, else the first other one that was; None when there is none. Never
        chosen on the data being evaluated."""
        if model.calibration is None:
            return None
        return model.calibration.find(self.name, self.decision_settings(), self.decision_keys)

    def calibrate(self, model: AnyTwin, data: Dataset) -> dict[str, Any] | None:
        """Protocol-specific decision thresholds chosen on validation ``data`` (stored in the model's
        ``calibration.extra[name]``), or None when the protocol has none of its own."""
        return None

    def result(self, metrics: dict[str, Any], primary_metric: str | None = None, **details: Any) -> ProtocolResult:
        return ProtocolResult(self.name, metrics, primary_metric or self.primary_metric, self.greater_is_better,
                              details)  # fmt: skip


def register_protocol(name: str) -> Any:
    """Class decorator: register a protocol under ``name`` (and set its ``name``)."""

    def decorator(cls: type[EvaluationProtocol]) -> type[EvaluationProtocol]:
        cls.name = name
        PROTOCOLS.register(name)(cls)
        return cls

    return decorator


def build_protocol(name: str, params: dict[str, Any] | None = None, *, field: str = "protocol") -> EvaluationProtocol:
    """The protocol registered as ``name`` with its options ``params`` (unknown options are errors
    naming ``field``)."""
    return PROTOCOLS.build(name, params, field=field)


def protocol_names() -> list[str]:
    return PROTOCOLS.names()


def decision_protocol_names() -> list[str]:
    """The registered protocols that make accept/reject decisions (and so can be calibrated)."""
    return [name for name, factory in PROTOCOLS.items()
            if isinstance(factory, type) and issubclass(factory, EvaluationProtocol)
            and factory.makes_decisions()]  # fmt: skip
