"""Validation during training: the configured evaluation protocol, verification figures of the
validation pairs, and calibration at the end.

- The protocol (``train.validation.protocol`` with ``params``) selects the best epoch and drives
  early stopping, in its own direction (``greater_is_better``).
- Every epoch also logs verification figures (ROC AUC, EER, …) of the validation pairs: the fixed
  pairs of the validation data, or ``train.validation.pairs`` balanced pairs drawn from its labels.
- At the end, thresholds are calibrated on those pairs, and every protocol named in the data's
  ``calibration_protocols`` adds its own (``calibration.extra[name]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinnet.calibrate import Calibration, calibrate
from twinnet.config import TrainConfig
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs, balanced_pairs
from twinnet.data.sources import Dataset
from twinnet.errors import ConfigError, DataError
from twinnet.model import AnyTwin
from twinnet.protocols.base import EvaluationProtocol, ProtocolResult, build_protocol
from twinnet.protocols.verification import VerificationProtocol
from twinnet.runtime import Stream


@dataclass
class ValidationOutcome:
    """One validation: the protocol's result, the verification result of the validation pairs
    (``None`` when they are all of one kind) and the pairs' native comparator values."""

    result: ProtocolResult
    pairs: ProtocolResult | None
    native: np.ndarray | None

    def _key(self, name: str) -> str:
        """Where the protocol's metric ``name`` goes in :meth:`figures`: its own name, unless that is
        also a verification figure of the pairs (``eer``, ``roc_auc``, …), then ``<protocol>_<name>``."""
        if self.result is self.pairs or self.pairs is None or name not in self.pairs.metrics:
            return name
        return f"{self.result.protocol}_{name}"

    @property
    def primary_key(self) -> str:
        """The name of the primary metric in :meth:`figures`."""
        return self._key(self.result.primary_metric)

    def figures(self) -> dict[str, Any]:
        """Flat figures: the pairs' verification metrics, the protocol's metrics (under their own
        names, or ``<protocol>_<name>`` where a pairs' figure has that name), ``primary`` and
        ``primary_metric`` (the key of the primary metric)."""
        out: dict[str, Any] = {} if self.pairs is None else dict(self.pairs.metrics)
        if self.result is not self.pairs:
            out.update({self._key(k): v for k, v in self.result.metrics.items()})
        out["primary"] = self.result.primary
        out["primary_metric"] = self.primary_key
        return out


class Validator:
    """Validation of one model on held-out data, per ``config.validation``.

    Args:
        items: the validation items.
        pairs: fixed validation pairs into ``items`` (a pairs file), or ``None`` to draw balanced
            pairs from the labels (``validation.pairs`` of them, stream ``Stream.VALIDATION_PAIRS``).
        config: the training settings (``seed`` and ``validation``).
        calibration_protocols: protocols whose ``calibrate`` adds thresholds after training.
    """

    def __init__(
        self, items: ItemSet, pairs: Pairs | None, config: TrainConfig, calibration_protocols: Sequence[str] = ()
    ) -> None:
        v = config.validation
        self.seed = config.seed
        self.far_targets = [f for f in v.far_targets if f < 0.5]
        self.calibration_protocols = list(calibration_protocols)
        # The data as it is (fixed pairs only where it has them): what protocols check and calibrate on.
        self.source = Dataset(items, pairs, calibration_protocols=self.calibration_protocols)
        self.protocol: EvaluationProtocol = build_protocol(v.protocol, {"seed": self.seed, **v.params},
                                                           field="train.validation.params")  # fmt: skip
        try:
            self.protocol.check_data(self.source)
        except DataError as err:
            raise ConfigError(f"train.validation.protocol: {err}") from None
        self.pair_protocol: VerificationProtocol | None = None
        if not self.protocol.scores_pairs:  # e.g. tracking: nothing to pair up or calibrate
            self.pair_settings: dict[str, Any] = {}
            self.pairs: Pairs | None = None
            self.data = self.source
            return
        #: How the validation pairs were made: what training's operating points record in their provenance.
        self.pair_settings = {"pairs": "given"} if pairs is not None else \
            {"pairs": "balanced", "n_pairs": v.pairs, "seed": self.seed}  # fmt: skip
        if pairs is None:
            items.require_min_per_class(2, "validation pairs")
            pairs = balanced_pairs(items.labels, v.pairs, self.seed, Stream.VALIDATION_PAIRS)
        self.pairs = pairs
        self.data = Dataset(items, pairs, calibration_protocols=self.calibration_protocols)
        if pairs.same.any() and not pairs.same.all():  # verification and thresholds need both kinds
            if isinstance(self.protocol, VerificationProtocol):
                self.pair_protocol = self.protocol  # the protocol measures these very pairs: run it once
            else:
                self.pair_protocol = VerificationProtocol(n_pairs=max(2, len(pairs)), seed=self.seed,
                                                          far_targets=v.far_targets)  # fmt: skip

    def run(self, model: AnyTwin) -> ValidationOutcome:
        pairs = native = None
        if self.pair_protocol is not None:
            pairs, native, _ = self.pair_protocol.run(model, self.data)
        result = pairs if self.protocol is self.pair_protocol else self.protocol.evaluate(model, self.data)
        assert result is not None
        return ValidationOutcome(result, pairs, native)

    def calibrate(self, model: AnyTwin, outcome: ValidationOutcome) -> Calibration | None:
        """Thresholds on the validation pairs (native scale), then each calibration protocol's own
        in ``calibration.extra``; sets ``model.calibration``. ``None`` without both kinds of pair."""
        if outcome.native is None or self.pairs is None:
            return None
        calibration = calibrate(outcome.native, self.pairs.same, model.comparator.orientation,
                                far_targets=self.far_targets, data=self.data, protocol="verification",
                                settings=self.pair_settings)  # fmt: skip
        model.calibration = calibration
        for name in self.calibration_protocols:
            extra = build_protocol(name, {"seed": self.seed}).calibrate(model, self.source)
            if extra is not None:
                calibration.extra[name] = extra
        return calibration
