"""Training: the :class:`Trainer` loop and :func:`train_from_config`, which the CLI calls.

The trainer does one thing: run the optimisation loop. What it trains from is the loss's batch plan
(:mod:`twinnet.training.plans`), what a step computes is ``loss.compute(model, batch)``, how it
validates is an evaluation protocol (:mod:`twinnet.training.validation`), and what a checkpoint holds
is :mod:`twinnet.training.checkpoint`.

A run directory holds::

    RUN/
      config.yaml          the whole run config, as resolved (logged at start)
      metrics.jsonl        one JSON line per epoch (loss, lr, validation metrics, speed)
      checkpoints/last/    model, loss, optimiser, scheduler and batch-plan state after the latest
                           epoch (resume from it)
      checkpoints/best/    model and loss weights of the best epoch by the validation protocol
      model/               the final saved model (best weights, calibrated thresholds)

With several processes (``torchrun``, :mod:`twinnet.training.distributed`) the step runs under
DistributedDataParallel, each process trains on its share of every batch, the loss sees the global
batch, and rank 0 alone validates, calibrates, logs, writes the checkpoints and saves the model.

Every random stream is seeded from ``(seed, purpose, epoch)`` (:class:`twinnet.runtime.Stream`), so a
run resumed from ``checkpoints/last`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from twinnet.calibrate import Calibration
from twinnet.config import AugmentConfig, Config, TrainConfig, dump_config
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.data.sources import Dataset
from twinnet.data.transforms import build_augmenter
from twinnet.embedding import fit_whitening
from twinnet.errors import ConfigError, DataError, TrainingError
from twinnet.io import atomic_directory, init_encoders, save
from twinnet.losses import LOSSES, TwinLoss
from twinnet.model import SIDES, AnyTwin, build_model
from twinnet.protocols.base import ProtocolResult
from twinnet.runtime import Stream, generator, seed_everything
from twinnet.training.autopick import pick_input
from twinnet.training.batch import Batch
from twinnet.training.checkpoint import Resumable, TrainerState, load_checkpoint, load_weights, save_checkpoint
from twinnet.training.data import load_datasets, load_training_data, vocabulary_texts
from twinnet.training.distributed import World, broadcast, lost_contact, reduce_sum, setup, teardown
from twinnet.training.loggers import open_loggers
from twinnet.training.plans import BatchPlan, build_plan, plan_for
from twinnet.training.precision import Precision
from twinnet.training.prefetch import Prefetcher
from twinnet.training.schedule import lr_factor, make_scheduler
from twinnet.training.spread import embedding_spread, probe_indices
from twinnet.training.validation import ValidationOutcome, Validator

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "Trainer", "build_loss", "load_training_data", "train_from_config"]


@dataclass
class TrainResult:
    model: AnyTwin
    best_metric: float | None
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    calibration: Calibration | None
    validation: dict[str, Any]
    model_dir: Path | None = None
    run_dir: Path | None = None
    train_seconds: float = 0.0
    start_metric: float | None = None
    """The starting weights' primary validation metric (epoch 0), with ``train.validation.before_training``."""
    is_main: bool = True
    """False on the processes other than rank 0 of a distributed run (they save and report nothing)."""


class _Step(nn.Module):
    """The model and the loss as one module whose forward is a training step's loss, so
    DistributedDataParallel sees every parameter the step uses (the model's and the loss's)."""

    def __init__(self, model: AnyTwin, loss: TwinLoss) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss.compute(self.model, batch)


_GO_ON, _BUDGET_SPENT, _NO_IMPROVEMENT, _COLLAPSED = 0, 1, 2, 3  # rank 0's decision after an epoch


class Trainer:
    """Trains a twin network with any registered loss, from the batches its plan gives.

    Args:
        model: a :class:`~twinnet.TwinNetwork` or :class:`~twinnet.HalfTwinNetwork`.
        loss: a :class:`~twinnet.losses.TwinLoss` (pair, embedding, ranking or a registered one).
        train_items: the training items (with class labels).
        config: optimisation, schedule, validation and early-stopping settings.
        val_items: held-out items (by class) for validation, calibration and early stopping.
        augment: ``data.augment``: how training items are distorted, by the kind of input the model
            takes (images: random affine; pen trajectories: time warp, affine, jitter, pressure).
        train_pairs / val_pairs: fixed pairs (e.g. from a pairs file) instead of sampled ones.
        run_dir: where checkpoints, the metrics log and the final model go; ``None`` keeps all in memory.
        calibration_protocols: protocols whose ``calibrate`` adds thresholds to the model after
            training (e.g. ``["signature"]``); :meth:`from_datasets` takes them from the validation data.
        log_interval: seconds between plain progress lines (step, loss, items/s, time left in the
            epoch) when the console is not a terminal (CI, a log file), where a live progress bar
            would show nothing until the epoch ends; one more line closes each epoch.
    """

    def __init__(
        self,
        model: AnyTwin,
        loss: TwinLoss,
        train_items: ItemSet,
        config: TrainConfig | None = None,
        *,
        val_items: ItemSet | None = None,
        augment: AugmentConfig | None = None,
        train_pairs: Pairs | None = None,
        val_pairs: Pairs | None = None,
        run_dir: str | Path | None = None,
        run_config: Config | None = None,
        console: Console | None = None,
        calibration_protocols: Sequence[str] = (),
        log_interval: float = 30.0,
    ) -> None:
        self.config = c = config or TrainConfig()
        if log_interval <= 0:
            raise ConfigError(f"log_interval must be positive, not {log_interval}")
        self.log_interval = float(log_interval)
        self.model = model
        self.loss = loss
        self.train_items = train_items
        self.val_items = val_items
        self.run_dir = Path(run_dir) if run_dir else None
        self.run_config = run_config
        self.world = World.current()
        # the other processes of a distributed run say nothing (errors still reach their stderr)
        self.console = (console or Console(stderr=True)) if self.world.is_main else Console(stderr=True, quiet=True)
        self.device = self.world.device(c.device)
        self.precision = Precision(c.precision, self.device)
        if c.threads:
            torch.set_num_threads(c.threads)
        self.augment = build_augmenter(augment, _input_kind(model))  # by model.input.kind; None when off
        loss.check_comparator(model.comparator)
        if model.whitening is not None:  # fitted on the training items after training: refused now if it cannot be
            model.whitening.check_labels(train_items.labels[train_items.labelled])
        plan_name = getattr(type(loss), "batch_plan", None)
        if not isinstance(plan_name, str):
            raise ConfigError(f"loss {type(loss).__name__} names no batch plan: set its class attribute "
                              "batch_plan (pairs, scored_pairs, positive_pairs, pk, or a registered plan)")  # fmt: skip
        plan_name = plan_for(plan_name, c, type(loss).__name__)  # train.batch_plan may stand in for it
        self.plan: BatchPlan = build_plan(plan_name, train_items, train_pairs, c, augment=self.augment,
                                          loss_name=type(loss).__name__)  # fmt: skip
        self.validator = None if val_items is None else Validator(val_items, val_pairs, c, calibration_protocols)
        if c.validation.before_training and self.validator is None:
            raise ConfigError("train.validation.before_training: there is no validation data to validate the starting "
                              "weights on")  # fmt: skip
        try:  # a loss with parameters sized by the data (class centres) makes them before the optimiser
            loss.prepare(train_items, model.embedding_dim)
        except ValueError as err:
            raise ConfigError(f"loss {type(loss).__name__}: {err}") from None
        loss.attach(model)  # a loss that keeps a copy of a model side (a momentum target) makes it now
        # the collapse guard's fixed sample of training items (none: switched off)
        n_probe = c.collapse.probe_items if train_items.loads_whole_items else 0
        self.probe = probe_indices(len(train_items), n_probe, c.seed)
        self.params = _unique_parameters(model, loss)
        self.optimizer = self._make_optimizer()
        self.scheduler = make_scheduler(self.optimizer, c, self.plan.steps_per_epoch)
        self.state = TrainerState()
        self.best_weights: dict[str, dict[str, torch.Tensor]] | None = None  # model and loss of the best epoch
        self.start_metric: float | None = None  # the starting weights' (train.validation.before_training)
        self.start_weights: dict[str, torch.Tensor] | None = None  # train.wise_ft: the weights fit() started from
        self._step: nn.Module = _Step(model, loss)  # fit() wraps it in DDP when there are several processes

    @classmethod
    def from_datasets(
        cls, model: AnyTwin, loss: TwinLoss, train: Dataset, config: TrainConfig | None = None, *,
        val: Dataset | None = None, **kwargs: Any,
    ) -> Trainer:  # fmt: skip
        """A trainer on data sources' :class:`~twinnet.data.sources.Dataset`\\ s; the validation data's
        ``calibration_protocols`` run after training."""
        return cls(
            model, loss, train.items, config, train_pairs=train.pairs, val_items=None if val is None else val.items,
            val_pairs=None if val is None else val.pairs,
            calibration_protocols=() if val is None else val.calibration_protocols, **kwargs,
        )  # fmt: skip

    # -- set-up ---------------------------------------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                self.params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.momentum > 0
            )
        return torch.optim.AdamW(self.params, lr=c.lr, weight_decay=c.weight_decay)

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    def lr_factor(self, step: int, epoch: int | None = None) -> float:
        """The learning-rate multiplier at global ``step`` (what the scheduler applies)."""
        return lr_factor(self.config, self.steps_per_epoch, step, epoch)

    # -- validation -----------------------------------------------------------------------------

    def validate(self) -> ValidationOutcome | None:
        """The validation protocol's result and the validation pairs' figures (``None`` without
        validation data)."""
        return None if self.validator is None else self.validator.run(self.model)

    # -- checkpoints ----------------------------------------------------------------------------

    def _checkpoint_dir(self, name: str) -> Path | None:
        return self.run_dir / "checkpoints" / name if self.run_dir else None

    def _resumable(self) -> Resumable:
        return Resumable(self.optimizer, self.scheduler, self.plan, self.precision)

    def _save_checkpoint(self, name: str, *, resumable: bool) -> None:
        target = self._checkpoint_dir(name)
        if target is not None and self.world.is_main:
            save_checkpoint(target, self.model, self.loss, self.state, self._resumable() if resumable else None)

    def _resume(self, path: Path) -> None:
        self.state = load_checkpoint(path, self.model, self.loss, self._resumable())
        self.console.print(f"resumed from {path} after epoch {self.state.epoch}")

    # -- the loop -------------------------------------------------------------------------------

    def fit(self, resume: bool | str | Path = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (or until early stopping) and return the best model.

        ``resume=True`` continues from ``run_dir/checkpoints/last`` when it exists; a path
        resumes from that checkpoint directory.
        """
        c = self.config
        seed_everything(c.seed)
        self.model.to(self.device)
        self.loss.to(self.device)
        if self.run_dir and self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.run_config is not None:
                (self.run_dir / "config.yaml").write_text(yaml.safe_dump(dump_config(self.run_config), sort_keys=False))
        if c.wise_ft is not None:  # the starting weights, before a resumed run overwrites them
            self.start_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        if resume:
            path = Path(resume) if not isinstance(resume, bool) else self._checkpoint_dir("last")
            if path is not None and path.exists():
                self._resume(path)
            elif not isinstance(resume, bool):
                raise DataError(f"cannot resume: checkpoint {path} not found")
            if (first := broadcast(self.state.epoch, self.device)) != self.state.epoch:  # several processes
                raise DataError(f"rank {self.world.rank} resumes after epoch {self.state.epoch}, rank 0 after epoch "
                                f"{first}: every process must read the same checkpoint ({path}); with several "
                                "machines, --out must be a folder all of them see")  # fmt: skip
        self._keep_start_weights()
        if self.world.distributed:  # DDP averages the gradients; the module is on this process's device (no
            step = _Step(self.model, self.loss)  # device_ids), and a parameter a loss leaves unused is allowed
            self._step = DistributedDataParallel(step, find_unused_parameters=True)
        started = time.perf_counter()
        stopped_early = False
        # train.loggers (metrics.jsonl, TensorBoard, MLflow); rank 0 only
        loggers = open_loggers(self.run_dir if self.world.is_main else None, c.loggers, fresh=self.state.epoch == 0)
        if c.validation.before_training and self.state.epoch == 0 and self.world.is_main:
            self._validate_start()
        for epoch in range(self.state.epoch, c.epochs):
            try:
                record = self._train_epoch(epoch)
            except RuntimeError as err:
                if (lost := lost_contact(err)) is None:
                    raise
                raise lost from None  # another process is gone: say so, and how to go on
            self.state.epoch = epoch + 1
            collapsed = self._measure_spread(record) if self.world.is_main else False
            outcome = self.validate() if self.world.is_main else None  # rank 0 validates, the others wait
            if outcome is not None:
                record.update({f"val_{k}": v for k, v in outcome.figures().items()})
            selection = outcome.result if outcome is not None else _train_loss_result(record["train_loss"])
            if selection.improves_on(self.state.best_metric, c.early_stopping.min_delta):
                self.state.best_metric, self.state.best_epoch, self.state.bad_epochs = selection.primary, epoch + 1, 0
                self.best_weights = {"model": _clone(self.model.state_dict()), "loss": _clone(self.loss.state_dict())}
                self._save_checkpoint("best", resumable=False)
            else:
                self.state.bad_epochs += 1
            record["best_epoch"] = self.state.best_epoch
            self.state.history.append(record)
            loggers.log(record)
            self._save_checkpoint("last", resumable=True)
            self._print_epoch(record, outcome)
            patience = c.early_stopping.patience
            decision = _GO_ON
            if c.max_minutes is not None and (time.perf_counter() - started) / 60 >= c.max_minutes:
                decision = _BUDGET_SPENT
            elif patience is not None and self.state.bad_epochs >= patience and epoch + 1 < c.epochs:
                decision = _NO_IMPROVEMENT
            elif collapsed and c.collapse.stop and epoch + 1 < c.epochs:
                decision = _COLLAPSED
            decision = broadcast(decision, self.device)  # rank 0's clock and validation decide for all
            if decision != _GO_ON:
                self.console.print({
                    _BUDGET_SPENT: f"stopping: the budget of {c.max_minutes or 0:g} minutes is spent",
                    _NO_IMPROVEMENT: f"early stopping: no improvement for {patience} epochs",
                    _COLLAPSED: "stopping: the embeddings collapsed (train.collapse.stop)",
                }[decision])  # fmt: skip
                stopped_early = True
                break
        return self._finish(stopped_early, time.perf_counter() - started)

    def _validate_start(self) -> None:
        """The starting weights as epoch 0 (``train.validation.before_training``): the best so far,
        so a run whose epochs all score lower keeps them."""
        outcome = self.validate()
        assert outcome is not None  # __init__ refuses before_training without validation data
        self.start_metric = outcome.result.primary
        self.state.best_metric, self.state.best_epoch, self.state.bad_epochs = outcome.result.primary, 0, 0
        self.best_weights = {"model": _clone(self.model.state_dict()), "loss": _clone(self.loss.state_dict())}
        self._save_checkpoint("best", resumable=False)
        if self.config.progress:
            self.console.print(
                f"epoch 0 (the starting weights) · val {outcome.primary_key} {outcome.result.primary:.4f}"
            )

    def _measure_spread(self, record: dict[str, Any]) -> bool:
        """Log the embedding spread of the probe items into ``record``; True (after a warning) when
        the embeddings have collapsed."""
        if not len(self.probe):
            return False
        figures = embedding_spread(self.model, self.train_items, self.probe)
        record.update(figures)
        guard = self.config.collapse
        low = [f"{name} {figures[name]:.3g} is below train.collapse.min_{name} {limit:g}"
               for name, limit in (("normalised_std", guard.min_normalised_std),
                                   ("effective_rank", guard.min_effective_rank)) if figures[name] < limit]  # fmt: skip
        if not low:
            return False
        message = (f"warning: the embeddings are collapsing at epoch {record['epoch']}: {'; '.join(low)} (mean "
                   f"per-dimension std {figures['embedding_std']:.2g}); a label-free loss needs stronger augmentation, "
                   "a lower learning rate, or its anti-collapse term (variance, negatives, predictor)")  # fmt: skip
        log.warning("%s", message)
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)
        return True

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        c = self.config
        self.plan.before_epoch(self.model, epoch)  # a plan that looks at the model (pseudo-labels) does it now
        self.model.train()
        self.loss.train()
        # dropout and the like; one stream per process when there are several
        torch.manual_seed(int(generator(c.seed, Stream.DROPOUT, epoch, *self.world.stream).initial_seed()))
        jobs = self.plan.epoch_jobs(epoch)
        total_loss, n_steps, n_items = 0.0, 0, 0
        t_model = t_wait = 0.0
        epoch_start = time.perf_counter()
        # a live bar on a console that is not a terminal shows nothing until the epoch ends: print lines
        plain = c.progress and not self.console.is_terminal
        next_line, lined_step = epoch_start + self.log_interval, 0
        progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{c.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.0f} items/s"),
            TimeElapsedColumn(), console=self.console, disable=not c.progress or plain, transient=True,
        )  # fmt: skip
        prefetcher = Prefetcher(jobs)
        cuda = self.device.type == "cuda"
        try:
            with progress:
                task = progress.add_task("train", total=len(jobs), loss=float("nan"), speed=0.0)
                t0 = time.perf_counter()
                for batch in prefetcher:
                    t1 = time.perf_counter()
                    t_wait += t1 - t0
                    with self.precision.autocast():
                        loss = self._step(batch.to(self.device))
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"the loss became {loss.item()} at epoch {epoch + 1}, step {self.state.step + 1}: "
                            "lower train.lr, set train.grad_clip, or check the inputs for NaN/inf"
                        )
                    self.optimizer.zero_grad(set_to_none=True)
                    self.precision.backward(loss)  # several processes: DDP averages the gradients here
                    self.precision.step(self.optimizer, self.params, c.grad_clip)
                    self.loss.after_step(self.model)  # a momentum target follows the model
                    self.scheduler.step()
                    value = loss.item()  # synchronises with the device, so the timing below is honest
                    if cuda:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    t_model += t0 - t1
                    total_loss += value
                    n_steps += 1
                    n_items += batch.n_items
                    self.state.step += 1
                    progress.update(
                        task, advance=1, loss=total_loss / n_steps, speed=n_items / max(1e-9, t0 - epoch_start)
                    )
                    if plain and t0 >= next_line:
                        self._progress_line(epoch, n_steps, len(jobs), total_loss / n_steps, n_items, t0 - epoch_start)
                        next_line, lined_step = t0 + self.log_interval, n_steps
            if plain and n_steps and lined_step != n_steps:  # the epoch's last line
                self._progress_line(epoch, n_steps, len(jobs), total_loss / n_steps, n_items,
                                    time.perf_counter() - epoch_start)  # fmt: skip
        finally:
            prefetcher.close()
        if self.world.distributed:  # the epoch's figures over all processes
            summed_loss, summed_items = reduce_sum([total_loss, n_items], self.device)
            total_loss, n_items = summed_loss / self.world.size, int(summed_items)
        seconds = time.perf_counter() - epoch_start
        return {
            "epoch": epoch + 1,
            "step": self.state.step,
            "train_loss": total_loss / max(1, n_steps),
            "lr": c.lr * self.lr_factor(max(0, self.state.step - 1)),  # the rate of the epoch's last step
            "seconds": seconds,
            "items_per_s": n_items / max(seconds, 1e-9),
            "model_share": t_model / max(t_model + t_wait, 1e-9),
        }

    def _progress_line(self, epoch: int, done: int, total: int, loss: float, items: int, seconds: float) -> None:
        """One plain progress line: epoch, step in the epoch (and overall), mean loss, items/s, and
        the time left in the epoch at the pace so far."""
        left = (total - done) * seconds / max(done, 1)
        self.console.print(
            f"epoch {epoch + 1}/{self.config.epochs} · step {done}/{total} (total {self.state.step}) · "
            f"loss {loss:.4f} · {items / max(seconds, 1e-9):.0f} items/s · {_clock(left)} left in epoch",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip

    def _print_epoch(self, record: dict[str, Any], outcome: ValidationOutcome | None) -> None:
        if not self.config.progress:
            return
        parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4f}"]
        if outcome is not None:
            parts.append(f"val {outcome.primary_key} {outcome.result.primary:.4f}")
            if outcome.pairs is not None and outcome.primary_key != "eer":
                parts.append(f"EER {outcome.pairs.metrics['eer']:.4f}")
        parts += [f"{record['items_per_s']:.0f} items/s", f"model share {record['model_share']:.2f}"]
        self.console.print(" · ".join(parts))

    def _keep_start_weights(self) -> None:
        """``train.wise_ft``: the weights the run started from, kept beside its checkpoints, so that a
        resumed run interpolates toward them and not toward whatever the resuming process built."""
        start = self._checkpoint_dir("start")
        if self.start_weights is None or start is None:
            return
        file = start / "model.safetensors"
        if self.state.epoch > 0:  # resumed
            if not file.exists():
                raise DataError(f"cannot resume with train.wise_ft: the starting weights ({file}) are missing")
            self.start_weights = load_file(str(file))
        elif self.world.is_main:
            with atomic_directory(start) as tmp:
                save_file({k: v.contiguous() for k, v in self.start_weights.items()}, str(tmp / file.name))

    def _restore_best(self) -> None:
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights["model"])
            self.loss.load_state_dict(self.best_weights["loss"])
        elif (ckpt := self._checkpoint_dir("best")) is not None and (ckpt / "model.safetensors").exists():
            load_weights(ckpt, self.model, self.loss)  # a resumed run whose best epoch came before the break

    def _finish(self, stopped_early: bool, seconds: float) -> TrainResult:
        if not self.world.is_main:  # rank 0 validates, calibrates and saves the model
            return TrainResult(
                model=self.model, best_metric=self.state.best_metric, best_epoch=self.state.best_epoch,
                epochs_run=self.state.epoch, stopped_early=stopped_early, history=self.state.history,
                calibration=None, validation={}, run_dir=self.run_dir, train_seconds=seconds, is_main=False,
            )  # fmt: skip
        self._restore_best()
        if self.start_weights is not None and self.config.wise_ft is not None:  # kept only for train.wise_ft
            self.model.load_state_dict(interpolate_weights(self.start_weights, self.model.state_dict(),
                                                           self.config.wise_ft))  # fmt: skip
        fit_whitening(self.model, self.train_items, self.config.seed)  # before validation and calibration
        calibration = None
        validation: dict[str, Any] = {}
        outcome = self.validate()
        if outcome is not None and self.validator is not None:
            validation = outcome.figures()
            calibration = self.validator.calibrate(self.model, outcome)
        self.model.metrics = {"validation": validation, "best_epoch": self.state.best_epoch}
        model_dir = None
        if self.run_dir and self.model.config is not None:
            model_dir = save(self.model, self.run_dir / "model")
        return TrainResult(
            model=self.model, best_metric=self.state.best_metric, best_epoch=self.state.best_epoch,
            epochs_run=self.state.epoch, stopped_early=stopped_early, history=self.state.history,
            calibration=calibration, validation=validation, model_dir=model_dir, run_dir=self.run_dir,
            train_seconds=seconds, start_metric=self.start_metric,
        )  # fmt: skip


def interpolate_weights(start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:  # fmt: skip
    """WiSE-FT: ``alpha`` × ``trained`` + (1 − ``alpha``) × ``start`` for each floating-point tensor;
    the others (counters, integer buffers) as trained."""
    return {k: torch.lerp(start[k].to(v.device, v.dtype), v, alpha) if v.is_floating_point() else v
            for k, v in trained.items()}  # fmt: skip


def _clock(seconds: float) -> str:
    """``H:MM:SS``."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _input_kind(model: AnyTwin) -> str:
    """The kind of input the model takes (``model.input.kind``), which says how its items are augmented;
    a model built by hand, without a config, takes texts or image tensors."""
    if model.config is not None:
        kinds = {model.input_spec(side).kind for side in SIDES}
        if len(kinds) > 1:
            return "/".join(sorted(kinds))  # no augmentation is registered for a mix: an error if it is on
        return kinds.pop()
    return "text" if any(model.takes_texts(side) for side in SIDES) else "image"


def _unique_parameters(*modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable parameters of the model and the loss, each once (a loss may hold a module
    of the model), in a fixed order, which the optimiser state's indices depend on."""
    seen: set[int] = set()
    params = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _train_loss_result(train_loss: float) -> ProtocolResult:
    """Without validation data the best epoch is the one of the lowest training loss."""
    return ProtocolResult("train", {"train_loss": train_loss}, "train_loss", greater_is_better=False)


def build_loss(config: Config) -> TwinLoss:
    """The loss ``config.loss`` names; a bad parameter is a one-line ConfigError naming ``loss.params``."""
    name = config.loss.name
    return LOSSES.build(name, config.loss.params, field=f"loss.params (loss {name!r})")


def train_from_config(
    config: Config, run_dir: str | Path, *, resume: bool = False, console: Console | None = None
) -> TrainResult:
    """Load the data, build model and loss, train, calibrate and save: what ``twinnet train`` does.
    An ``auto`` encoder is picked from the data first (:func:`twinnet.training.autopick.pick_input`).
    Launched by ``torchrun`` as one of several processes, it joins their process group first
    (:func:`twinnet.training.distributed.setup`) and leaves it at the end."""
    world = setup(config.train.device, config.train.dist_timeout_s)
    finished = False
    try:
        config, picked = pick_input(config)
        if picked is not None and world.is_main:
            (console or Console(stderr=True)).print(picked, markup=False, highlight=False, soft_wrap=True)
        data = load_datasets(config)
        seed_everything(config.train.seed)  # before building, so initial weights are reproducible too
        model = build_model(config.model, texts=vocabulary_texts(data.train))  # vocabularies are built from these
        if config.train.init_from:  # pretrained (e.g. without labels), now fine-tuned
            init_encoders(model, config.train.init_from, field="train.init_from")
        loss = build_loss(config)
        trainer = Trainer.from_datasets(
            model, loss, data.train, config.train, val=data.val, augment=config.data.augment, run_dir=run_dir,
            run_config=config, console=console,
        )  # fmt: skip
        result = trainer.fit(resume=resume)
        finished = True
        return result
    finally:
        teardown(finished)
