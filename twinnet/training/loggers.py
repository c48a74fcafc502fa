"""Run loggers: where the trainer's per-epoch record goes (``train.loggers``).

``jsonl`` appends it to ``RUN/metrics.jsonl`` (one JSON line per epoch; what ``twinnet report``
draws the training curves from), ``tensorboard`` writes TensorBoard event files to
``RUN/tensorboard/`` (``tensorboard --logdir RUN/tensorboard``; needs the ``report`` extra),
``mlflow`` logs the run to MLflow's local file store in ``RUN/mlruns/`` (``mlflow ui
--backend-store-uri RUN/mlruns``; needs ``mlflow`` or ``mlflow-skinny``). A logger is one class
and one registration::

    @LOGGERS.register("stdout")
    class StdoutLogger(RunLogger):
        def log(self, record): print(record)

Every logger gets the run directory and whether the run starts afresh (``fresh``: epoch 0, not a
resume); numeric fields of the record are the metrics, ``epoch`` the step.
"""

from __future__ import annotations

import json
import math
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twinnet.errors import ConfigError
from twinnet.registry import LOGGERS

__all__ = ["LOGGERS", "RunLogger", "RunLoggers", "numeric_fields", "open_loggers"]


def numeric_fields(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a record (booleans and the ``epoch`` step left out)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class RunLogger:
    """One destination of per-epoch records. Subclasses implement :meth:`log`; :meth:`close` is
    called when training ends (and, failing that, when the logger is collected)."""

    def __init__(self, run_dir: Path, fresh: bool) -> None:
        self.run_dir = run_dir
        self.fresh = fresh

    def log(self, record: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release what the logger holds (files, a run)."""


@LOGGERS.register("jsonl")
class JsonlLogger(RunLogger):
    """``RUN/metrics.jsonl``: the whole record, one JSON line per epoch, written and closed at once
    (a killed run keeps every finished epoch). A fresh run replaces an old file; a resumed run appends."""

    def __init__(self, run_dir: Path, fresh: bool) -> None:
        super().__init__(run_dir, fresh)
        self.path = run_dir / "metrics.jsonl"
        if fresh and self.path.exists():
            self.path.unlink()

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


@LOGGERS.register("tensorboard")
class TensorBoardLogger(RunLogger):
    """TensorBoard scalars in ``RUN/tensorboard/`` (``train/loss``-style tags: ``train_loss`` →
    ``train/loss``, ``val_roc_auc`` → ``val/roc_auc``), one step per epoch, flushed every epoch."""

    def __init__(self, run_dir: Path, fresh: bool) -> None:
        super().__init__(run_dir, fresh)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.loggers: tensorboard needs the tensorboard package "
                              "(pip install 'twinnet[report]')") from None  # fmt: skip
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), flush_secs=30)
        self._finalizer = weakref.finalize(self, self.writer.close)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("epoch", 0))
        for key, value in numeric_fields(record).items():
            head, _, tail = key.partition("_")
            self.writer.add_scalar(f"{head}/{tail}" if tail and head in ("train", "val") else key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self._finalizer()


@LOGGERS.register("mlflow")
class MlflowLogger(RunLogger):
    """One MLflow run in the local file store ``RUN/mlruns/`` (experiment ``twinnet``), its metrics
    logged per epoch; a resumed run continues the same MLflow run (its id is kept in
    ``RUN/mlruns/twinnet_run_id``). Nothing is sent anywhere: the store is a folder."""

    def __init__(self, run_dir: Path, fresh: bool) -> None:
        super().__init__(run_dir, fresh)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("train.loggers: mlflow needs the mlflow package (pip install mlflow-skinny)") from None
        # MLflow 3 keeps the file store (a plain folder, nothing to set up) behind this opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        store = (run_dir / "mlruns").resolve()
        store.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=store.as_uri())
        id_file = store / "twinnet_run_id"
        run_id = None if fresh or not id_file.exists() else id_file.read_text().strip()
        if run_id is None:
            experiment = self.client.get_experiment_by_name("twinnet")
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("twinnet")
            run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            id_file.write_text(run_id + "\n")
        self.run_id = run_id
        self._finalizer = weakref.finalize(self, self.client.set_terminated, run_id)

    def log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, now = int(record.get("epoch", 0)), _millis()
        metrics = [Metric(key, value, now, step) for key, value in numeric_fields(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self._finalizer()


def _millis() -> int:
    import time

    return int(time.time() * 1000)


class RunLoggers:
    """The configured loggers of one run, fed together."""

    def __init__(self, loggers: Sequence[RunLogger]) -> None:
        self.loggers = list(loggers)

    def log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def open_loggers(run_dir: Path | None, names: Sequence[str], *, fresh: bool) -> RunLoggers:
    """The loggers ``names`` (``train.loggers``) for ``run_dir``; none without a run directory."""
    if run_dir is None:
        return RunLoggers([])
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunLoggers([LOGGERS.get(name, field="train.loggers")(run_dir, fresh) for name in names])
