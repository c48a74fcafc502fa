"""Run loggers: metrics.jsonl as before, TensorBoard event files and MLflow's file store read back
with the tools' own readers, the config field, and a real training run through them."""

import json

import numpy as np
import pytest

from twinnet import Trainer, TripletLoss, build_model, from_arrays
from twinnet.config import ModelConfig, TrainConfig, ValidationConfig, parse_config
from twinnet.errors import ConfigError
from twinnet.training.loggers import LOGGERS, RunLogger, numeric_fields, open_loggers

RECORDS = [
    {"epoch": 1, "step": 10, "train_loss": 0.9, "lr": 1e-3, "val_roc_auc": 0.7, "note": "x", "flag": True},
    {"epoch": 2, "step": 20, "train_loss": 0.5, "lr": 5e-4, "val_roc_auc": 0.8, "val_eer": float("nan")},
]


def test_numeric_fields_keep_finite_numbers_only():
    assert numeric_fields(RECORDS[1]) == {"step": 20.0, "train_loss": 0.5, "lr": 5e-4, "val_roc_auc": 0.8}
    assert "flag" not in numeric_fields(RECORDS[0]) and "note" not in numeric_fields(RECORDS[0])


def test_jsonl_replaces_on_a_fresh_run_and_appends_on_resume(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 99}\n')
    loggers = open_loggers(tmp_path, ["jsonl"], fresh=True)
    loggers.log(RECORDS[0])
    loggers.close()
    loggers = open_loggers(tmp_path, ["jsonl"], fresh=False)
    loggers.log({"epoch": 2, "train_loss": 0.5})
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert lines[0] == RECORDS[0]


def test_tensorboard_scalars_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loggers = open_loggers(tmp_path, ["tensorboard"], fresh=True)
    for record in RECORDS:
        loggers.log(record)
    loggers.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/roc_auc", "lr", "step"} <= tags
    assert "val/eer" not in tags  # NaN is not a point
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2]
    assert np.allclose([e.value for e in loss], [0.9, 0.5])


def test_mlflow_file_store_reads_back_and_resume_continues_the_run(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    loggers = open_loggers(tmp_path, ["mlflow"], fresh=True)
    loggers.log(RECORDS[0])
    run_id = loggers.loggers[0].run_id
    loggers.close()
    resumed = open_loggers(tmp_path, ["mlflow"], fresh=False)
    assert resumed.loggers[0].run_id == run_id
    resumed.log(RECORDS[1])
    resumed.close()
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    history = client.get_metric_history(run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.9), (2, 0.5)]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_unknown_logger_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"train\.loggers.*unknown run logger.*tb.*known: jsonl"):
        parse_config({"train": {"loggers": ["jsonl", "tb"]}})
    assert parse_config({}).train.loggers == ["jsonl"]


def test_a_registered_logger_receives_every_epoch(tmp_path):
    seen: list[dict] = []

    @LOGGERS.register("test_memory")
    class MemoryLogger(RunLogger):
        def log(self, record):
            seen.append(record)

    try:
        rng = np.random.default_rng(0)
        centres = rng.normal(0, 3, (8, 6))
        x = (centres.repeat(12, 0) + rng.normal(0, 0.3, (96, 6))).astype(np.float32)
        items = from_arrays(x, np.arange(8).repeat(12))
        model = build_model(
            ModelConfig.model_validate(
                {
                    "input": {"kind": "vector", "features": 6},
                    "encoder": {"name": "mlp", "params": {"hidden": [16], "embedding_dim": 4}},
                }
            )
        )
        config = TrainConfig(
            epochs=2,
            samples_per_epoch=64,
            classes_per_batch=4,
            items_per_class=4,
            progress=False,
            validation=ValidationConfig(pairs=100),
            loggers=["jsonl", "test_memory", "tensorboard"],
        )
        Trainer(
            model,
            TripletLoss(margin=0.3),
            items.subset(np.arange(64)),
            config,
            val_items=items.subset(np.arange(64, 96)),
            run_dir=tmp_path,
        ).fit()
    finally:
        LOGGERS.unregister("test_memory")
    assert [r["epoch"] for r in seen] == [1, 2]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == seen
    assert any((tmp_path / "tensorboard").iterdir())
