"""What an epoch is and how long a run may take: one pass over the training data unless
``train.samples_per_epoch`` says otherwise; ``train.max_minutes`` ends a run after the epoch in which
the budget ran out; the items plan trains margin-softmax losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twinnet import Trainer, build_model, from_arrays
from twinnet.config import ModelConfig, TrainConfig, ValidationConfig
from twinnet.losses import CosFaceLoss, TripletLoss
from twinnet.training.plans import build_plan


def _items(n_classes: int = 12, per_class: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_classes, 8))
    x = centres.repeat(per_class, 0) + rng.normal(0, 0.2, (n_classes * per_class, 8))
    return from_arrays(x.astype(np.float32), np.arange(n_classes).repeat(per_class))


def _config(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, classes_per_batch=4, items_per_class=2, progress=False,
                validation=ValidationConfig(pairs=100))  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig.model_validate({
        "input": {"kind": "vector", "features": 8}, "comparator": {"name": "cosine"}, "normalize": True,
        "encoder": {"name": "mlp", "params": {"hidden": [16], "embedding_dim": 8}}}))  # fmt: skip


@pytest.mark.parametrize(("plan", "n", "steps"), [("items", 60, 4), ("pairs", 60, 4), ("pk", 60, 7)])
def test_an_epoch_is_one_pass_over_the_training_data(plan: str, n: int, steps: int) -> None:
    items = _items()
    assert len(items) == n
    built = build_plan(plan, items, None, _config())
    assert built.steps_per_epoch == steps  # items/pairs: ceil(60 / 16); pk: 60 // (4 × 2)
    if plan == "items":
        seen = np.concatenate([b().labels.numpy() for b in built.epoch_jobs(0)])
        assert np.array_equal(np.sort(seen), np.sort(items.labels))  # every item exactly once


def test_samples_per_epoch_is_the_explicit_override() -> None:
    items = _items()
    assert build_plan("items", items, None, _config(samples_per_epoch=160)).steps_per_epoch == 10
    assert build_plan("pairs", items, None, _config(samples_per_epoch=160)).steps_per_epoch == 10
    assert build_plan("pk", items, None, _config(samples_per_epoch=160)).steps_per_epoch == 20


def test_max_minutes_ends_the_run_after_the_epoch_it_ran_out_in() -> None:
    cfg = _config(epochs=50, max_minutes=1e-6, early_stopping={"patience": None})
    result = Trainer(_model(), TripletLoss(), _items(), cfg, val_items=_items(6, 4, seed=1)).fit()
    assert result.epochs_run == 1 and result.stopped_early
    unbounded = Trainer(_model(), TripletLoss(), _items(), _config(epochs=2), val_items=_items(6, 4, seed=1)).fit()
    assert unbounded.epochs_run == 2 and not unbounded.stopped_early


def test_margin_softmax_trains_from_the_items_plan_and_learns() -> None:
    loss = CosFaceLoss(scale=16.0)
    trainer = Trainer(_model(), loss, _items(), _config(epochs=6, lr=3e-3), val_items=_items(6, 4, seed=1))
    assert loss.num_classes == 12  # sized from the training classes before the optimiser was built
    assert any(p is loss.weight for p in trainer.params)
    result = trainer.fit()
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0]
