"""Mixed precision (``train.precision``): autocast on CUDA by default, on the CPU only when asked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from twinnet import Trainer, TripletLoss, build_model, from_arrays
from twinnet.config import ModelConfig, TrainConfig, parse_config
from twinnet.errors import ConfigError
from twinnet.training.precision import Precision, resolve_precision

CPU = torch.device("cpu")


def test_auto_is_float32_on_the_cpu_and_half_precision_on_cuda(monkeypatch):
    assert resolve_precision("auto", CPU) == "fp32" and Precision("auto", CPU).dtype is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "fp16"
    assert resolve_precision("fp32", torch.device("cuda", 0)) == "fp32"


def test_asked_for_on_the_cpu_the_step_autocasts_to_bfloat16():
    layer = torch.nn.Linear(4, 4)
    with Precision("bf16", CPU).autocast():
        assert layer(torch.ones(2, 4)).dtype == torch.bfloat16
    with Precision("fp32", CPU).autocast():
        assert layer(torch.ones(2, 4)).dtype == torch.float32
    with pytest.raises(ConfigError, match="train.precision: fp16 autocast is for CUDA devices, not cpu"):
        Precision("fp16", CPU)


def test_an_unknown_precision_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="train.precision"):
        parse_config({"train": {"precision": "fp8"}})


def test_bfloat16_training_on_the_cpu_follows_the_float32_run(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (6, 8))
    x = (centres.repeat(8, 0) + rng.normal(0, 0.3, (48, 8))).astype(np.float32)
    items = from_arrays(x, np.repeat(np.arange(6), 8))
    spec = {"input": {"kind": "vector", "features": 8}, "comparator": {"name": "euclidean"},
            "encoder": {"name": "mlp", "params": {"hidden": [16], "embedding_dim": 4}}}  # fmt: skip
    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(ModelConfig.model_validate(spec))
        config = TrainConfig(epochs=3, samples_per_epoch=48, classes_per_batch=4, items_per_class=4, lr=3e-3,
                             progress=False, precision=precision, early_stopping={"patience": None})  # fmt: skip
        result = Trainer(
            model, TripletLoss(margin=0.5, mining="all"), items, config, run_dir=tmp_path / precision
        ).fit()
        curves[precision] = [r["train_loss"] for r in result.history]
        assert next(model.parameters()).dtype == torch.float32  # the weights (and the saved model) stay float32
    np.testing.assert_allclose(curves["bf16"], curves["fp32"], atol=0.01)  # bf16 rounding, not another run
    state = json.loads((tmp_path / "bf16/checkpoints/last/precision.json").read_text())
    assert state == {"precision": "bf16", "scaler": None}
