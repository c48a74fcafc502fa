import json

import numpy as np
import pytest
import torch

from twinnet import ContrastiveLoss, Trainer, TripletLoss, build_model, from_arrays, load
from twinnet.config import ModelConfig, TrainConfig, ValidationConfig
from twinnet.errors import ConfigError, TrainingError
from twinnet.losses import BinaryCrossEntropyLoss


def clusters(n_classes=24, per_class=10, dim=16, informative=4, noise=0.3, nuisance=2.0, seed=0):
    """A class = a random centre in ``informative`` dimensions; the other dimensions are large
    noise, so raw distance is poor and the model has to learn which dimensions matter.
    Held-out classes (another seed) are new centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_classes, informative))
    n = n_classes * per_class
    signal = centres.repeat(per_class, 0) + rng.normal(0, noise, (n, informative))
    x = np.concatenate([signal, rng.normal(0, nuisance, (n, dim - informative))], 1)
    y = np.arange(n_classes).repeat(per_class)
    return from_arrays(x.astype(np.float32), y)


def vector_model(comparator="euclidean", normalize=False, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig.model_validate({
        "input": {"kind": "vector", "features": 16},
        "encoder": {"name": "mlp", "params": {"hidden": [32], "embedding_dim": 8}},
        "comparator": {"name": comparator}, "normalize": normalize,
    }))  # fmt: skip


def config(**kw):
    base = dict(epochs=3, samples_per_epoch=512, batch_size=32, classes_per_batch=8, items_per_class=4,
                lr=3e-3, progress=False, validation=ValidationConfig(pairs=400))  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


TRAIN, VAL = clusters(seed=0), clusters(n_classes=10, seed=1)


def untrained_auc(model):
    from twinnet.protocols import evaluate_verification

    return evaluate_verification(model, VAL, n_pairs=400, seed=0)[0].metrics["roc_auc"]


@pytest.mark.parametrize(
    ("loss", "comparator"),
    [(ContrastiveLoss(1.0), "euclidean"), (TripletLoss(0.3, "batch_hard"), "euclidean"),
     (BinaryCrossEntropyLoss(), "weighted_l1"), (ContrastiveLoss(1.0), "mahalanobis")],
)  # fmt: skip
def test_training_beats_the_untrained_model_on_unseen_classes(loss, comparator):
    model = vector_model(comparator)
    before = untrained_auc(model)
    result = Trainer(model, loss, TRAIN, config(epochs=12, lr=1e-2), val_items=VAL).fit()
    assert before < 0.7
    assert result.validation["roc_auc"] > 0.85
    assert result.calibration is not None and result.calibration.is_distance == model.comparator.is_distance


def test_run_directory_logs_checkpoints_and_model(tmp_path):
    model = vector_model()
    result = Trainer(model, ContrastiveLoss(), TRAIN, config(), val_items=VAL, run_dir=tmp_path / "run").fit()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    for key in ("train_loss", "lr", "val_roc_auc", "val_eer", "items_per_s", "model_share", "seconds"):
        assert key in lines[0]
    assert 0.0 < lines[0]["model_share"] <= 1.0
    assert (tmp_path / "run" / "checkpoints" / "last" / "optimizer.safetensors").exists()
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.safetensors").exists()
    loaded = load(tmp_path / "run" / "model")
    assert loaded.calibration is not None
    best = max(lines, key=lambda x: x["val_primary"])
    assert result.best_epoch == best["epoch"]
    assert loaded.metrics["validation"]["roc_auc"] == pytest.approx(best["val_roc_auc"])


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg4 = config(epochs=4, schedule="cosine", early_stopping={"patience": None})
    straight = Trainer(vector_model(), TripletLoss(0.3, "semi_hard"), TRAIN, cfg4, val_items=VAL,
                       run_dir=tmp_path / "a").fit()  # fmt: skip
    # the same run killed during epoch 3 (after its training steps, before its checkpoint) ...
    interrupted = Trainer(vector_model(), TripletLoss(0.3, "semi_hard"), TRAIN, cfg4, val_items=VAL,
                          run_dir=tmp_path / "b")  # fmt: skip
    real_validate = Trainer.validate

    def dying_validate(self):
        if self.state.epoch == 3:
            raise KeyboardInterrupt
        return real_validate(self)

    monkeypatch.setattr(Trainer, "validate", dying_validate)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    monkeypatch.setattr(Trainer, "validate", real_validate)
    # ... and resumed by a fresh process (other initial weights, overwritten from the checkpoint)
    resumed = Trainer(vector_model(seed=99), TripletLoss(0.3, "semi_hard"), TRAIN, cfg4, val_items=VAL,
                      run_dir=tmp_path / "b").fit(resume=True)  # fmt: skip
    assert resumed.epochs_run == 4
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


def test_same_seed_same_result_other_seed_differs():
    runs = [Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(seed=s), val_items=VAL).fit() for s in (1, 1, 2)]
    assert runs[0].history[-1]["train_loss"] == runs[1].history[-1]["train_loss"]
    assert runs[0].history[-1]["train_loss"] != runs[2].history[-1]["train_loss"]


def test_nan_loss_stops_with_a_clear_message():
    bad = TRAIN.subset(np.arange(len(TRAIN)))
    bad.data[3, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"the loss became nan at epoch 1.*lower train.lr"):
        Trainer(vector_model(), ContrastiveLoss(), bad, config(samples_per_epoch=4096), val_items=VAL).fit()


def test_early_stopping_stops_when_the_metric_stalls():
    cfg = config(epochs=30, early_stopping={"patience": 2, "min_delta": 1.0})  # nothing can improve by 1.0
    result = Trainer(vector_model(), ContrastiveLoss(), TRAIN, cfg, val_items=VAL).fit()
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_oneshot_validation_metric():
    cfg = config(epochs=12, lr=1e-2, validation=ValidationConfig(metric="oneshot", ways=5, shots=1, episodes=100))
    result = Trainer(vector_model(), TripletLoss(0.3), TRAIN, cfg, val_items=VAL).fit()
    assert result.validation["primary"] == result.validation["oneshot_5way_1shot"] > 0.6  # chance: 0.2


def test_incompatible_loss_and_comparator_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a distance comparator"):
        Trainer(vector_model("cosine"), ContrastiveLoss(), TRAIN, config())
    with pytest.raises(ConfigError, match="needs a comparator that gives logits"):
        Trainer(vector_model("euclidean"), BinaryCrossEntropyLoss(), TRAIN, config())


def test_lr_schedules():
    t = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(epochs=2, warmup_steps=4, schedule="cosine"))
    steps = 2 * t.steps_per_epoch
    assert t.lr_factor(0, 0) == pytest.approx(0.25)
    assert t.lr_factor(4, 0) == pytest.approx(1.0)
    assert t.lr_factor(steps, 1) == pytest.approx(0.0, abs=1e-9)
    s = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(schedule="step", step_epochs=1, step_gamma=0.5))
    assert [s.lr_factor(0, e) for e in range(3)] == [1.0, 0.5, 0.25]


def test_instance_weight_needs_augmentation():
    with pytest.raises(ConfigError, match="augment"):
        Trainer(vector_model(), TripletLoss(), TRAIN, config(instance_weight=1.0))
