import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from twinnet import ContrastiveLoss, Trainer, TripletLoss, build_model, from_arrays, load
from twinnet.compare import MahalanobisDistance
from twinnet.config import ModelConfig, TrainConfig, ValidationConfig, parse_config
from twinnet.data.pairs import Pairs
from twinnet.data.sources import Dataset
from twinnet.data.text import TextPairs, text_items
from twinnet.errors import ConfigError, DataError, TrainingError
from twinnet.losses import (
    LOSSES,
    BinaryCrossEntropyLoss,
    CoSENTLoss,
    MultipleNegativesRankingLoss,
    PairLoss,
    TwinLoss,
)
from twinnet.protocols import EvaluationProtocol, register_protocol
from twinnet.train import build_loss
from twinnet.training import BATCH_PLANS, LabelledBatch, PairBatch
from twinnet.training.data import hold_out_pairs


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


# -- a loss with a parameter, and a protocol whose metric is better when smaller, both registered here --


@LOSSES.register("test_learned_margin")
class LearnedMarginContrastive(PairLoss):
    """Contrastive loss whose margin is learned (a parameter of the loss, not of the model).

    Inputs: ``distance`` ``(n,)``. Labels: ``same`` ``(n,)`` bool.

    Example::

        >>> import torch
        >>> LearnedMarginContrastive(1.0)(torch.tensor([0.5]), torch.tensor([True])).item()
        0.25
    """

    input = "distance"

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.log_margin = nn.Parameter(torch.tensor(math.log(margin)))

    def forward(self, distance, same):
        margin = self.log_margin.exp()
        loss = torch.where(same, distance.pow(2), (margin - distance).clamp_min(0).pow(2)).mean()
        return loss + 0.1 * (1.0 - margin).pow(2)  # keeps the margin from collapsing to 0


SCRIPT = {"values": [], "calls": 0, "weights": []}


@register_protocol("test-lower-is-better")
class ScriptedLowerIsBetter(EvaluationProtocol):
    """Reports scripted values, one per call, as a metric that is better when smaller."""

    primary_metric = "error"
    greater_is_better = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def evaluate(self, model, data):
        values = SCRIPT["values"]
        value = values[min(SCRIPT["calls"], len(values) - 1)]
        SCRIPT["calls"] += 1
        SCRIPT["weights"].append({k: v.clone() for k, v in model.state_dict().items()})
        return self.result({"error": value})


# -- training works --------------------------------------------------------------------------------


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
    assert result.calibration is not None and result.calibration.orientation == model.comparator.orientation


def test_run_directory_logs_checkpoints_and_model(tmp_path):
    model = vector_model()
    result = Trainer(model, ContrastiveLoss(), TRAIN, config(), val_items=VAL, run_dir=tmp_path / "run").fit()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    for key in ("train_loss", "lr", "val_roc_auc", "val_eer", "val_primary", "items_per_s", "model_share", "seconds"):
        assert key in lines[0]
    assert lines[0]["val_primary_metric"] == "roc_auc" and lines[0]["val_primary"] == lines[0]["val_roc_auc"]
    assert 0.0 < lines[0]["model_share"] <= 1.0
    last = tmp_path / "run" / "checkpoints" / "last"
    for name in (
        "model.safetensors",
        "loss.json",
        "optimizer.safetensors",
        "scheduler.json",
        "plan.json",
        "state.json",
    ):
        assert (last / name).exists(), name
    assert not list(last.glob("*.pt")) and not list(last.glob("*.pkl"))
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.safetensors").exists()
    loaded = load(tmp_path / "run" / "model")
    assert loaded.calibration is not None
    best = max(lines, key=lambda x: x["val_primary"])
    assert result.best_epoch == best["epoch"]
    assert loaded.metrics["validation"]["roc_auc"] == pytest.approx(best["val_roc_auc"])


# -- checkpoints and resuming ----------------------------------------------------------------------


def triplet_with_metric():
    """A P×K loss whose distance is a learned Mahalanobis metric inside the loss: the loss has parameters."""
    torch.manual_seed(5)
    return TripletLoss(0.3, "semi_hard", distance=MahalanobisDistance(dim=8))


def fit_killed_at_validation(trainer, epoch, monkeypatch):
    """``trainer.fit()`` killed when it validates ``epoch`` (after its training steps, before its checkpoint)."""
    real_validate = Trainer.validate

    def dying_validate(self):
        if self.state.epoch == epoch:
            raise KeyboardInterrupt
        return real_validate(self)

    monkeypatch.setattr(Trainer, "validate", dying_validate)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.setattr(Trainer, "validate", real_validate)


@pytest.mark.parametrize("make_loss", [triplet_with_metric, lambda: LearnedMarginContrastive(0.7)],
                         ids=["pk-triplet-mahalanobis", "pairs-learned-margin"])  # fmt: skip
def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, monkeypatch, make_loss):
    cfg4 = config(epochs=4, schedule="cosine", warmup_steps=5, early_stopping={"patience": None})
    straight_loss = make_loss()
    straight = Trainer(vector_model(), straight_loss, TRAIN, cfg4, val_items=VAL, run_dir=tmp_path / "a").fit()
    # the same run killed during epoch 3 (after its training steps, before its checkpoint) ...
    interrupted = Trainer(vector_model(), make_loss(), TRAIN, cfg4, val_items=VAL, run_dir=tmp_path / "b")
    fit_killed_at_validation(interrupted, 3, monkeypatch)
    last = tmp_path / "b" / "checkpoints" / "last"
    assert json.loads((last / "plan.json").read_text())["next_epoch"] == 2
    steps = 2 * interrupted.steps_per_epoch
    assert json.loads((last / "scheduler.json").read_text())["last_epoch"] == steps
    assert json.loads((last / "state.json").read_text())["step"] == steps
    # ... and resumed by a fresh process: other initial weights of model *and loss*, overwritten from the checkpoint
    torch.manual_seed(99)
    fresh_loss = make_loss()
    for p in fresh_loss.parameters():
        nn.init.normal_(p)
    resumed = Trainer(vector_model(seed=99), fresh_loss, TRAIN, cfg4, val_items=VAL,
                      run_dir=tmp_path / "b").fit(resume=True)  # fmt: skip
    assert resumed.epochs_run == 4
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert list(straight_loss.state_dict()) and list(fresh_loss.state_dict()) == list(straight_loss.state_dict())
    for (k, a), b in zip(straight_loss.state_dict().items(), fresh_loss.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    assert [h["lr"] for h in straight.history] == [h["lr"] for h in resumed.history]


def test_resuming_on_other_data_is_refused(tmp_path):
    cfg = config(epochs=1)
    Trainer(vector_model(), ContrastiveLoss(), TRAIN, cfg, run_dir=tmp_path / "r").fit()
    other = clusters(n_classes=20, seed=3)  # other classes: the plan would draw other batches
    with pytest.raises(DataError, match="cannot resume.*planned with"):
        Trainer(vector_model(), ContrastiveLoss(), other, config(epochs=2), run_dir=tmp_path / "r").fit(resume=True)


def test_same_seed_same_result_other_seed_differs():
    runs = [Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(seed=s), val_items=VAL).fit() for s in (1, 1, 2)]
    assert runs[0].history[-1]["train_loss"] == runs[1].history[-1]["train_loss"]
    assert runs[0].history[-1]["train_loss"] != runs[2].history[-1]["train_loss"]


# -- model selection and early stopping ------------------------------------------------------------


def test_model_selection_follows_the_protocol_direction():
    SCRIPT.update(values=[0.5, 0.2, 0.4, 0.3, 0.9], calls=0, weights=[])
    cfg = config(epochs=4, validation=ValidationConfig(protocol="test-lower-is-better", pairs=400),
                 early_stopping={"patience": None})  # fmt: skip
    result = Trainer(vector_model(), ContrastiveLoss(), TRAIN, cfg, val_items=VAL).fit()
    assert result.best_epoch == 2 and result.best_metric == 0.2  # the lowest, not the highest
    assert [h["val_primary"] for h in result.history] == [0.5, 0.2, 0.4, 0.3]
    assert result.history[0]["val_primary_metric"] == "error" and result.history[0]["val_error"] == 0.5
    assert "val_roc_auc" in result.history[0]  # the validation pairs' verification figures, every epoch
    for k, v in result.model.state_dict().items():  # the returned model is the one of epoch 2
        assert torch.equal(v, SCRIPT["weights"][1][k]), k


def test_early_stopping_counts_in_the_protocol_direction():
    SCRIPT.update(values=[0.5, 0.6, 0.7, 0.8, 0.9, 1.0], calls=0, weights=[])
    cfg = config(epochs=6, validation=ValidationConfig(protocol="test-lower-is-better", pairs=400),
                 early_stopping={"patience": 2})  # fmt: skip
    result = Trainer(vector_model(), ContrastiveLoss(), TRAIN, cfg, val_items=VAL).fit()
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_starting_weights_validated_before_training_are_kept_when_no_epoch_beats_them(tmp_path):
    SCRIPT.update(values=[0.1, 0.5, 0.4, 0.3], calls=0, weights=[])  # epoch 0 (the start) is the best
    validation = ValidationConfig(protocol="test-lower-is-better", pairs=400, before_training=True)
    model = vector_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    result = Trainer(model, ContrastiveLoss(), TRAIN, config(epochs=6, validation=validation,
                     early_stopping={"patience": 2}), val_items=VAL, run_dir=tmp_path).fit()  # fmt: skip
    assert result.start_metric == 0.1 and result.best_epoch == 0 and result.best_metric == 0.1
    assert result.stopped_early and result.epochs_run == 2  # patience counts from the start
    assert [h["epoch"] for h in result.history] == [1, 2]  # epoch 0 trains nothing: no record of its own
    assert any(not torch.equal(v, start[k]) for k, v in SCRIPT["weights"][2].items())  # the epochs did train
    saved = load(result.model_dir)
    for k, v in result.model.state_dict().items():  # returned and saved: the starting weights
        assert torch.equal(v, start[k]) and torch.equal(saved.state_dict()[k], start[k]), k
    assert saved.metrics["best_epoch"] == 0


def test_an_epoch_that_beats_the_starting_weights_is_kept():
    SCRIPT.update(values=[0.5, 0.2, 0.4], calls=0, weights=[])
    validation = ValidationConfig(protocol="test-lower-is-better", pairs=400, before_training=True)
    result = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(epochs=2, validation=validation,
                     early_stopping={"patience": None}), val_items=VAL).fit()  # fmt: skip
    assert result.start_metric == 0.5 and result.best_epoch == 1 and result.best_metric == 0.2
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, SCRIPT["weights"][1][k]), k
    # without the option the start is not validated
    SCRIPT.update(values=[0.5, 0.2, 0.4], calls=0, weights=[])
    plain = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(epochs=1, validation=ValidationConfig(
        protocol="test-lower-is-better", pairs=400)), val_items=VAL).fit()  # fmt: skip
    assert plain.start_metric is None and plain.best_epoch == 1 and plain.best_metric == 0.5


def test_validating_before_training_needs_validation_data():
    with pytest.raises(ConfigError, match="train.validation.before_training: there is no validation data"):
        Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(validation=ValidationConfig(before_training=True)))


def test_nan_loss_stops_with_a_clear_message():
    bad = TRAIN.subset(np.arange(len(TRAIN)))
    bad.data[3, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"the loss became nan at epoch 1.*lower train.lr"):
        Trainer(vector_model(), ContrastiveLoss(), bad, config(samples_per_epoch=4096), val_items=VAL).fit()


def test_early_stopping_stops_when_the_metric_stalls():
    cfg = config(epochs=30, early_stopping={"patience": 2, "min_delta": 1.0})  # nothing can improve by 1.0
    result = Trainer(vector_model(), ContrastiveLoss(), TRAIN, cfg, val_items=VAL).fit()
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


@pytest.mark.parametrize("validation", [
    ValidationConfig(protocol="nway", params={"ways": 5, "shots": 1, "episodes": 100}),
    ValidationConfig.model_validate({"metric": "oneshot", "ways": 5, "shots": 1, "episodes": 100}),  # older configs
])  # fmt: skip
def test_oneshot_validation_protocol(validation):
    result = Trainer(vector_model(), TripletLoss(0.3), TRAIN, config(epochs=12, lr=1e-2, validation=validation),
                     val_items=VAL).fit()  # fmt: skip
    assert result.validation["primary_metric"] == "accuracy"
    assert result.validation["primary"] == result.validation["accuracy"] > 0.6  # chance: 0.2
    assert result.validation["episodes"] == 100 and result.validation["ways"] == 5 and "roc_auc" in result.validation


def test_protocol_figures_that_share_a_name_with_pair_figures_are_prefixed():
    class PairLike(ScriptedLowerIsBetter):
        def evaluate(self, model, data):
            return self.result({"eer": 0.3, "roc_auc": 0.6, "writers": 4}, primary_metric="eer")

    outcome = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(), val_items=VAL).validate()
    outcome.result = PairLike().evaluate(None, None)
    figures = outcome.figures()
    assert figures["eer"] == outcome.pairs.metrics["eer"] and figures["test-lower-is-better_eer"] == 0.3
    assert figures["writers"] == 4 and figures["primary_metric"] == "test-lower-is-better_eer"
    assert figures["primary"] == 0.3


def test_calibration_protocols_add_their_thresholds(monkeypatch):
    calls = []

    def fake_calibrate(self, model, data):
        calls.append((self.seed, len(data.items)))
        return {"threshold": 0.5}

    monkeypatch.setattr(ScriptedLowerIsBetter, "calibrate", fake_calibrate)
    SCRIPT.update(values=[0.5], calls=0, weights=[])
    result = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(epochs=1, seed=4), val_items=VAL,
                     calibration_protocols=["test-lower-is-better"]).fit()  # fmt: skip
    assert calls == [(4, len(VAL))]
    assert result.calibration.extra == {"test-lower-is-better": {"threshold": 0.5}}
    trainer = Trainer.from_datasets(vector_model(), ContrastiveLoss(), Dataset(TRAIN), config(epochs=1),
                                    val=Dataset(VAL, calibration_protocols=["test-lower-is-better"]))  # fmt: skip
    assert trainer.validator.calibration_protocols == ["test-lower-is-better"]


# -- losses and plans ------------------------------------------------------------------------------


def test_a_loss_registered_elsewhere_trains_from_an_existing_plan():
    assert LearnedMarginContrastive.batch_plan == "pairs" and "pairs" in BATCH_PLANS
    cfg = parse_config({"loss": {"name": "test_learned_margin", "params": {"margin": 0.8}}})
    loss = build_loss(cfg)
    start = loss.log_margin.item()
    result = Trainer(vector_model(), loss, TRAIN, config(epochs=2, samples_per_epoch=256)).fit()
    assert len(result.history) == 2 and all(math.isfinite(h["train_loss"]) for h in result.history)
    assert loss.log_margin.item() != start  # the loss's own parameter trained with the model


class CentreLoss(TwinLoss):
    """Not a pair, embedding or ranking loss: it only declares a plan and computes from its batch."""

    batch_plan = "pk"

    def compute(self, model, batch):
        z = model.embed(batch.inputs)
        centres = torch.stack([z[batch.labels == c].mean(0) for c in batch.labels.unique()])
        spread = (z - centres[torch.searchsorted(batch.labels.unique(), batch.labels)]).pow(2).sum(1).mean()
        return spread + (1.0 - torch.pdist(centres)).clamp_min(0).pow(2).mean()


def test_a_loss_that_only_declares_a_plan_trains():
    result = Trainer(vector_model(), CentreLoss(), TRAIN, config(epochs=3), val_items=VAL).fit()
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_losses_name_their_plans():
    assert ContrastiveLoss.batch_plan == "pairs" and CoSENTLoss.batch_plan == "scored_pairs"
    assert MultipleNegativesRankingLoss.batch_plan == "positive_pairs" and TripletLoss.batch_plan == "pk"


def test_plans_build_typed_batches():
    pair_plan = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config()).plan
    batch = pair_plan.epoch_jobs(0)[0]()
    assert isinstance(batch, PairBatch) and batch.inputs_a.shape == (32, 16) and batch.same.dtype == torch.bool
    pk = Trainer(vector_model(), TripletLoss(), TRAIN, config()).plan
    batch = pk.epoch_jobs(0)[0]()
    assert isinstance(batch, LabelledBatch) and batch.n_items == 32 and batch.instances is None
    assert [b().labels.tolist() for b in pk.epoch_jobs(1)] == [b().labels.tolist() for b in pk.epoch_jobs(1)]


def test_losses_and_data_that_do_not_fit_are_config_errors():
    same = TRAIN.labels[::2] == TRAIN.labels[1::2]
    labelled_pairs = Pairs(np.arange(0, len(TRAIN), 2), np.arange(1, len(TRAIN), 2), same)
    with pytest.raises(ConfigError, match="learns from graded scores"):
        Trainer(vector_model("cosine"), CoSENTLoss(), TRAIN, config())
    with pytest.raises(ConfigError, match="learns from graded scores"):
        Trainer(vector_model("cosine"), CoSENTLoss(), TRAIN, config(), train_pairs=labelled_pairs)
    with pytest.raises(ConfigError, match=r"trains from \(query, positive\) pairs: give a pairs file"):
        Trainer(vector_model("cosine"), MultipleNegativesRankingLoss(), TRAIN, config())
    with pytest.raises(ConfigError, match="cannot train from a pairs file"):
        Trainer(vector_model(), TripletLoss(), TRAIN, config(), train_pairs=labelled_pairs)
    positives_only = Pairs(np.arange(0, 10, 2), np.arange(1, 10, 2), np.ones(5, bool))
    with pytest.raises(ConfigError, match="every training pair is same"):
        Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(), train_pairs=positives_only)
    # ranking losses train from positive pairs only: no refusal there
    Trainer(vector_model("cosine"), MultipleNegativesRankingLoss(), TRAIN, config(), train_pairs=positives_only)
    odd = type("Odd", (PairLoss,), {"batch_plan": "nope"})
    with pytest.raises(ConfigError, match="unknown batch plan 'nope'"):
        Trainer(vector_model(), odd(), TRAIN, config())


def test_incompatible_loss_and_comparator_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a distance comparator"):
        Trainer(vector_model("cosine"), ContrastiveLoss(), TRAIN, config())
    with pytest.raises(ConfigError, match="needs a comparator that gives logits"):
        Trainer(vector_model("euclidean"), BinaryCrossEntropyLoss(), TRAIN, config())


@pytest.mark.parametrize("params", [{"margin": "wide"}, {"margin": -1.0}])
def test_a_bad_loss_parameter_is_a_one_line_config_error(params):
    with pytest.raises(ConfigError, match=r"^loss\.params \(loss 'contrastive'\): margin must be") as err:
        build_loss(parse_config({"loss": {"name": "contrastive", "params": params}}))
    assert "\n" not in str(err.value) and err.value.__cause__ is None


def test_a_bad_loss_parameter_on_the_command_line_prints_no_traceback(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from twinnet.cli import app

    for c in range(2):
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * c + i, np.uint8)).save(tmp_path / "data" / f"c{c}" / f"{i}.png")
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                                      "--quiet", "loss.params.margin=-1"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "loss.params (loss 'contrastive'): margin must be greater than 0" in result.output
    assert "Traceback" not in result.output


# -- schedule --------------------------------------------------------------------------------------


def reference_lr_factor(c, steps_per_epoch, step, epoch):
    """The schedule as the trainer computed it by hand before it used a LambdaLR."""
    if c.warmup_steps and step < c.warmup_steps:
        return (step + 1) / c.warmup_steps
    if c.schedule == "cosine":
        total = max(1, c.epochs * steps_per_epoch - c.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - c.warmup_steps) / total)))
    if c.schedule == "step":
        return c.step_gamma ** (epoch // max(1, c.step_epochs))
    return 1.0


@pytest.mark.parametrize("schedule", [
    {"schedule": "cosine", "warmup_steps": 4}, {"schedule": "step", "step_epochs": 1, "step_gamma": 0.5},
    {"schedule": "constant", "warmup_steps": 3},
])  # fmt: skip
def test_the_scheduler_gives_exactly_the_old_learning_rates(schedule):
    c = config(epochs=3, **schedule)
    t = Trainer(vector_model(), ContrastiveLoss(), TRAIN, c)
    spe = t.steps_per_epoch
    for step in range(3 * spe):
        assert t.optimizer.param_groups[0]["lr"] == c.lr * reference_lr_factor(c, spe, step, step // spe), step
        t.optimizer.step()
        t.scheduler.step()


def test_lr_schedules():
    t = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(epochs=2, warmup_steps=4, schedule="cosine"))
    steps = 2 * t.steps_per_epoch
    assert t.lr_factor(0) == pytest.approx(0.25)
    assert t.lr_factor(4) == pytest.approx(1.0)
    assert t.lr_factor(steps) == pytest.approx(0.0, abs=1e-9)
    s = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(schedule="step", step_epochs=1, step_gamma=0.5))
    assert [s.lr_factor(e * s.steps_per_epoch) for e in range(3)] == [1.0, 0.5, 0.25]


def test_instance_weight_needs_augmentation():
    with pytest.raises(ConfigError, match="augment"):
        Trainer(vector_model(), TripletLoss(), TRAIN, config(instance_weight=1.0))


# -- training data splits --------------------------------------------------------------------------


def test_pairs_are_held_out_as_before():
    pairs = Pairs(np.arange(20), np.arange(20)[::-1].copy(), np.arange(20) % 2 == 0)
    images = Dataset(TRAIN, pairs)
    split = hold_out_pairs(images, 0.25, seed=3)
    order = np.random.default_rng(3).permutation(20)  # image pairs files: one seeded permutation
    assert split.train.items is split.val.items is TRAIN
    assert np.array_equal(split.val.pairs.a, order[:5]) and np.array_equal(split.train.pairs.a, order[5:])
    texts = text_items([f"t{i}" for i in range(20)])
    kept, held = TextPairs(texts, pairs, "x").split(0.25, 3)
    split = hold_out_pairs(Dataset(texts, pairs), 0.25, seed=3)
    assert split.train.items.data == kept.items.data and split.val.items.data == held.items.data
    assert np.array_equal(split.train.pairs.a, kept.pairs.a) and np.array_equal(split.val.pairs.b, held.pairs.b)
    assert hold_out_pairs(images, 0.0, seed=3).val is None


# -- progress a log can read -------------------------------------------------------------------------


def test_progress_on_a_console_that_is_not_a_terminal_prints_plain_lines():
    import io
    import re

    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    assert not console.is_terminal
    cfg = config(epochs=2, samples_per_epoch=256, progress=True)
    trainer = Trainer(vector_model(), ContrastiveLoss(), TRAIN, cfg, console=console, log_interval=1e-9)
    trainer.fit()
    lines = [line for line in out.getvalue().splitlines() if "left in epoch" in line]
    steps = trainer.steps_per_epoch
    # a line after every step (the interval is tiny), none of them a live bar's control codes
    assert len(lines) == 2 * steps and "\x1b" not in out.getvalue()
    pattern = re.compile(r"^epoch (\d)/2 · step (\d+)/(\d+) \(total (\d+)\) · loss \d+\.\d{4} · \d+ items/s · "
                         r"\d:\d\d:\d\d left in epoch$")  # fmt: skip
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines[:3]
    first, last = parsed[0], parsed[-1]
    assert first is not None and last is not None
    assert first.groups()[:3] == ("1", "1", str(steps)) and last.group(4) == str(2 * steps)
    assert last.group(0).endswith("0:00:00 left in epoch")  # the epoch's last line: nothing left


def test_progress_lines_come_at_the_interval_and_once_at_the_end_of_an_epoch():
    import io

    from rich.console import Console

    out = io.StringIO()
    trainer = Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(epochs=1, progress=True),
                      console=Console(file=out, force_terminal=False), log_interval=3600)  # fmt: skip
    trainer.fit()
    lines = [line for line in out.getvalue().splitlines() if "left in epoch" in line]
    assert len(lines) == 1 and f"step {trainer.steps_per_epoch}/{trainer.steps_per_epoch}" in lines[0]
    quiet = io.StringIO()
    Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(epochs=1, progress=False),
            console=Console(file=quiet, force_terminal=False), log_interval=1e-9).fit()  # fmt: skip
    assert "left in epoch" not in quiet.getvalue()
    with pytest.raises(ConfigError, match="log_interval"):
        Trainer(vector_model(), ContrastiveLoss(), TRAIN, config(), log_interval=0)


def test_wise_ft_interpolates_toward_the_starting_weights_and_survives_a_resume(tmp_path, monkeypatch):
    cfg = config(epochs=2, early_stopping={"patience": None})
    start = {k: v.clone() for k, v in vector_model().state_dict().items()}
    trained = Trainer(vector_model(), TripletLoss(), TRAIN, cfg, val_items=VAL).fit().model.state_dict()
    for alpha in (0.0, 0.5):
        cfg_a = config(epochs=2, early_stopping={"patience": None}, wise_ft=alpha)
        got = Trainer(vector_model(), TripletLoss(), TRAIN, cfg_a, val_items=VAL,
                      run_dir=tmp_path / f"a{alpha}").fit().model.state_dict()  # fmt: skip
        for k, v in got.items():
            expected = alpha * trained[k] + (1 - alpha) * start[k] if v.is_floating_point() else trained[k]
            torch.testing.assert_close(v, expected, atol=1e-6, rtol=0)
    assert (tmp_path / "a0.5" / "checkpoints" / "start" / "model.safetensors").exists()
    # killed after epoch 1, resumed by a process that built other weights: still toward the original start
    cfg_half = config(epochs=2, early_stopping={"patience": None}, wise_ft=0.5)
    killed = Trainer(vector_model(), TripletLoss(), TRAIN, cfg_half, val_items=VAL, run_dir=tmp_path / "b")
    fit_killed_at_validation(killed, 2, monkeypatch)
    resumed = Trainer(vector_model(seed=99), TripletLoss(), TRAIN, cfg_half, val_items=VAL,
                      run_dir=tmp_path / "b").fit(resume=True).model.state_dict()  # fmt: skip
    floats = {k: v for k, v in resumed.items() if v.is_floating_point()}
    assert floats and not torch.allclose(floats[next(iter(floats))], trained[next(iter(floats))])
    for k, v in floats.items():
        torch.testing.assert_close(v, 0.5 * trained[k] + 0.5 * start[k], atol=1e-6, rtol=0)
