"""Training: the :class:`Trainer` loop and :func:`train_from_config`, which the CLI calls.

A run directory holds::

    RUN/
      config.yaml          the whole run config, as resolved (logged at start)
      metrics.jsonl        one JSON line per epoch (loss, lr, validation metrics, speed)
      checkpoints/last/    model + optimizer + trainer state after the latest epoch (resume from it)
      checkpoints/best/    model weights of the best epoch by the primary metric
      model/               the final saved model (best weights, calibrated thresholds)

Every random stream is seeded from ``(seed, purpose, epoch)``, so a run resumed from
``checkpoints/last`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from twinnet.calibrate import Calibration, calibrate
from twinnet.config import AugmentConfig, Config, TrainConfig, dump_config
from twinnet.data.archives import read_items, with_rotated_classes
from twinnet.data.items import ItemSet, load_images
from twinnet.data.pairs import Pairs, PairSampler, balanced_pairs, read_pairs_file
from twinnet.data.samplers import PKBatchSampler
from twinnet.data.signatures import read_offline_signatures, read_online_signatures
from twinnet.data.splits import split_by_class
from twinnet.data.text import TEXT_FORMATS, TextItemSet, TextPairs, read_text_pair_file
from twinnet.data.transforms import RandomAffine
from twinnet.errors import ConfigError, DataError, TrainingError
from twinnet.io import (
    atomic_directory,
    load_module_weights,
    load_tree,
    save,
    save_module_weights,
    save_tree,
    write_json,
)
from twinnet.losses import LOSSES, EmbeddingLoss, PairLoss, RankingLoss
from twinnet.metrics import calc_correlations, calc_mean_ci95, calc_verification_metrics
from twinnet.model import AnyTwin, HalfTwinNetwork, build_model
from twinnet.protocols import (
    classify_episodes,
    embed_batches,
    native_thresholds,
    pair_similarities,
    sample_episodes,
    score_pairs,
)
from twinnet.runtime import generator, pick_device, seed_everything

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: AnyTwin
    best_metric: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]
    calibration: Calibration | None
    validation: dict[str, Any]
    model_dir: Path | None = None
    run_dir: Path | None = None
    train_seconds: float = 0.0


@dataclass
class _Batch:
    inputs: torch.Tensor | list[str]
    same: torch.Tensor | None = None  # pair batches: first half vs second half of `inputs`
    score: torch.Tensor | None = None  # graded pair batches (STS): gold similarity in [0, 1]
    labels: torch.Tensor | None = None  # labelled batches
    instances: torch.Tensor | None = None  # instance ids of the views, with train.instance_weight
    n_items: int = 0


@dataclass
class _State:
    epoch: int = 0  # epochs completed
    step: int = 0
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class _Prefetcher:
    """Builds batches on a background thread, one or two ahead, so the model rarely waits.

    The time the training loop spends blocked in ``next`` is the data-wait time it reports.
    """

    def __init__(self, jobs: list[Callable[[], _Batch]], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(jobs,), daemon=True)
        self._thread.start()

    def _run(self, jobs: list[Callable[[], _Batch]]) -> None:
        for job in jobs:
            if self._stop.is_set():
                return
            try:
                item: Any = job()
            except BaseException as err:  # handed to the consumer, raised there
                item = err
            self._queue.put(item)
            if isinstance(item, BaseException):
                return
        self._queue.put(None)

    def __iter__(self) -> Iterator[_Batch]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # drain, so a producer blocked on a full queue can exit
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)


class Trainer:
    """Trains a twin network with a pair loss (balanced pairs) or an embedding loss (P×K batches).

    Args:
        model: a :class:`~twinnet.TwinNetwork`.
        loss: a :class:`~twinnet.losses.PairLoss` or :class:`~twinnet.losses.EmbeddingLoss`.
        train_items: the training items (with class labels).
        config: optimisation, schedule, validation and early-stopping settings.
        val_items: held-out items (by class) for validation, calibration and early stopping.
        augment: random affine distortions applied to training images.
        train_pairs / val_pairs: fixed pairs (e.g. from a pairs file) instead of sampled ones.
        run_dir: where checkpoints, the metrics log and the final model go; ``None`` keeps all in memory.
    """

    def __init__(
        self,
        model: AnyTwin,
        loss: PairLoss | EmbeddingLoss,
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
    ) -> None:
        self.config = config or TrainConfig()
        self.model = model
        self.loss = loss
        self.train_items = train_items
        self.val_items = val_items
        self.augment = RandomAffine(augment) if augment and augment.enabled else None
        self.run_dir = Path(run_dir) if run_dir else None
        self.run_config = run_config
        self.console = console or Console(stderr=True)
        self.device = pick_device(self.config.device)
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        loss.check_comparator(model.comparator)
        c = self.config
        self.is_text = isinstance(train_items, TextItemSet)
        if self.is_text and self.augment is not None:
            raise ConfigError("data.augment: image augmentation does not apply to texts; set enabled: false")
        needs_score = isinstance(loss, PairLoss) and loss.target == "score"
        if needs_score and (train_pairs is None or train_pairs.score is None):
            raise ConfigError(
                f"loss {type(loss).__name__} learns from graded scores (e.g. STS-B); this training data has "
                "labels only: use contrastive, online_contrastive or multiple_negatives_ranking"
            )
        if isinstance(loss, RankingLoss):
            if train_pairs is None:
                raise ConfigError(f"loss {type(loss).__name__} trains from (query, positive) pairs: give a pairs file")
            positives = train_pairs[train_pairs.same]
            if len(positives) < 2:
                raise ConfigError(f"loss {type(loss).__name__} needs at least 2 positive training pairs")
            self.fixed_pairs = positives
            self.steps_per_epoch = -(-len(positives) // c.batch_size)
        elif isinstance(loss, PairLoss):
            if train_pairs is not None:
                self.fixed_pairs = train_pairs
                self.steps_per_epoch = -(-len(train_pairs) // c.batch_size)
            else:
                self.fixed_pairs = None
                train_items.require_min_per_class(2, "same-class training pairs")
                self.pair_sampler = PairSampler(train_items.labels, c.samples_per_epoch, c.batch_size, c.seed)
                self.steps_per_epoch = len(self.pair_sampler)
        elif isinstance(loss, EmbeddingLoss):
            if train_pairs is not None:
                raise ConfigError(
                    f"loss {type(loss).__name__} mines within labelled batches; it cannot train from a pairs file"
                )
            self.fixed_pairs = None
            if c.instance_weight > 0 and self.augment is None:
                raise ConfigError(
                    "train.instance_weight needs data.augment.enabled: true (two views of an item differ only "
                    "through augmentation)"
                )
            batch = min(c.classes_per_batch, len(np.unique(train_items.labels))) * c.items_per_class
            self.pk_sampler = PKBatchSampler(
                train_items.labels, c.classes_per_batch, c.items_per_class,
                max(1, c.samples_per_epoch // batch), c.seed,
            )  # fmt: skip
            self.steps_per_epoch = len(self.pk_sampler)
        else:
            raise ConfigError(f"{type(loss).__name__} is neither a PairLoss, an EmbeddingLoss nor a RankingLoss")
        if self.is_text and self.fixed_pairs is not None:  # for length-grouped batches: the longer text, in characters
            chars = np.array([len(t) for t in train_items.data])
            self._pair_lengths = np.maximum(chars[self.fixed_pairs.a], chars[self.fixed_pairs.b])
        self._setup_validation(val_pairs)
        self.optimizer = self._make_optimizer()
        self.state = _State()

    # -- set-up ---------------------------------------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in list(self.model.parameters()) + list(self.loss.parameters()) if p.requires_grad]
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.momentum > 0
            )
        return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)

    def _setup_validation(self, val_pairs: Pairs | None) -> None:
        v = self.config.validation
        self.val_pairs = None
        self.val_episodes = None
        if self.val_items is None:
            return
        if val_pairs is not None:
            self.val_pairs = val_pairs
        else:
            self.val_items.require_min_per_class(2, "validation pairs")
            self.val_pairs = balanced_pairs(self.val_items.labels, v.pairs, self.config.seed, 3)
        if v.metric == "oneshot":
            self.val_episodes = sample_episodes(
                self.val_items.labels, v.ways, v.shots, v.episodes, seed=self.config.seed,
                groups=self.val_items.groups if v.within_groups else None,
            )  # fmt: skip

    def lr_factor(self, step: int, epoch: int) -> float:
        """The learning-rate multiplier at global ``step`` (a pure function, so nothing to checkpoint)."""
        c = self.config
        if c.warmup_steps and step < c.warmup_steps:
            return (step + 1) / c.warmup_steps
        if c.schedule == "cosine":
            total = max(1, c.epochs * self.steps_per_epoch - c.warmup_steps)
            progress = min(1.0, (step - c.warmup_steps) / total)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if c.schedule == "step":
            return c.step_gamma ** (epoch // max(1, c.step_epochs))
        return 1.0

    # -- batches --------------------------------------------------------------------------------

    def _epoch_jobs(self, epoch: int) -> list[Callable[[], _Batch]]:
        seed = self.config.seed
        aug_gen = generator(seed, 5, epoch)
        items = self.train_items

        def augment(x: torch.Tensor) -> torch.Tensor:
            return self.augment(x, aug_gen) if self.augment else x

        if isinstance(self.loss, (PairLoss, RankingLoss)):
            if self.fixed_pairs is not None:
                rng = np.random.default_rng([seed, 6, epoch])
                order = rng.permutation(len(self.fixed_pairs))
                bs = self.config.batch_size
                if self.is_text and self.config.group_by_length:
                    order = _group_by_length(order, self._pair_lengths, bs, rng)
                batches = [self.fixed_pairs[order[i : i + bs]] for i in range(0, len(order), bs)]
            else:
                batches = self.pair_sampler.epoch(epoch)

            def pair_job(p: Pairs) -> Callable[[], _Batch]:
                score = None if p.score is None else torch.from_numpy(p.score)
                return lambda: _Batch(
                    augment(items.load(np.concatenate([p.a, p.b]))), same=torch.from_numpy(p.same), score=score,
                    n_items=2 * len(p),
                )  # fmt: skip

            return [pair_job(p) for p in batches]

        def pk_job(idx: np.ndarray) -> Callable[[], _Batch]:
            if self.config.instance_weight > 0:
                views = np.concatenate([idx, idx])
                instances = torch.arange(len(idx)).repeat(2)
                return lambda: _Batch(
                    augment(items.load(views)), labels=torch.from_numpy(items.labels[views]),
                    instances=instances, n_items=len(views),
                )  # fmt: skip
            return lambda: _Batch(
                augment(items.load(idx)), labels=torch.from_numpy(items.labels[idx]), n_items=len(idx)
            )

        return [pk_job(idx) for idx in self.pk_sampler.epoch(epoch)]

    def _loss(self, batch: _Batch) -> torch.Tensor:
        x = batch.inputs if isinstance(batch.inputs, list) else batch.inputs.to(self.device, non_blocking=True)
        if isinstance(self.loss, (PairLoss, RankingLoss)):
            if isinstance(self.model, HalfTwinNetwork):  # first half through f, second through g
                n = len(x) // 2
                z1, z2 = self.model.embed_a(x[:n]), self.model.embed_b(x[n:])
            else:  # one encoder pass over both halves
                z1, z2 = self.model.embed(x).chunk(2)
            comparator = self.model.comparator
            if isinstance(self.loss, RankingLoss):
                return self.loss(z1, z2, comparator)
            values = comparator.logits(z1, z2) if self.loss.input == "logits" else comparator(z1, z2)
            target = batch.score if self.loss.target == "score" else batch.same
            return self.loss(values, target.to(self.device))
        z = self.model.embed(x)
        c = self.config
        total = c.class_weight * self.loss(z, batch.labels.to(self.device), self.model.comparator)
        if batch.instances is not None:
            total = total + c.instance_weight * self.loss(z, batch.instances.to(self.device), self.model.comparator)
        return total

    # -- validation -----------------------------------------------------------------------------

    def validate(self) -> dict[str, Any]:
        """Validation metrics on held-out items; ``primary`` is the early-stopping metric."""
        if self.val_items is None:
            return {}
        v = self.config.validation
        if isinstance(self.model, HalfTwinNetwork) or self.is_text:
            emb = None  # pair_similarities embeds each side with its own encoder
            native, scores = pair_similarities(self.model, self.val_items, self.val_pairs)
        else:
            emb = embed_batches(self.model, self.val_items)
            native = score_pairs(self.model, emb, emb, self.val_pairs)
            scores = -native if self.model.comparator.is_distance else native
        out: dict[str, Any] = native_thresholds(
            calc_verification_metrics(scores, self.val_pairs.same, v.far_targets), self.model.comparator.is_distance
        )
        if v.metric == "spearman":
            if self.val_pairs.score is None:
                raise ConfigError("train.validation.metric: spearman needs graded validation pairs (e.g. STS-B)")
            out.update(calc_correlations(scores, self.val_pairs.score))
            out["primary"] = out["spearman"]
        elif v.metric == "signature":
            from twinnet.signatures import evaluate_signatures

            signature = evaluate_signatures(self.model, self.val_items)
            out["signature_eer"] = signature.eer
            out["primary"] = 1.0 - signature.eer
        elif self.val_episodes is not None:
            emb = embed_batches(self.model, self.val_items) if emb is None else emb
            acc, ci = calc_mean_ci95(classify_episodes(self.model.comparator, emb, self.val_episodes))
            out[f"oneshot_{v.ways}way_{v.shots}shot"] = acc
            out[f"oneshot_{v.ways}way_{v.shots}shot_ci95"] = ci
            out["primary"] = acc
        else:
            out["primary"] = out["roc_auc"]
        out["primary_metric"] = {"oneshot": "oneshot accuracy", "signature": "1 - signature EER",
                                 "spearman": "spearman"}.get(v.metric, "roc_auc")  # fmt: skip
        self._val_native = native
        return out

    # -- checkpoints ----------------------------------------------------------------------------

    def _checkpoint_dir(self, name: str) -> Path | None:
        return self.run_dir / "checkpoints" / name if self.run_dir else None

    def _save_checkpoint(self, name: str, with_optimizer: bool) -> None:
        target = self._checkpoint_dir(name)
        if target is None:
            return
        with atomic_directory(target) as tmp:
            save_module_weights(self.model, tmp / "model.safetensors")
            if with_optimizer:
                save_tree(self.optimizer.state_dict(), tmp, "optimizer")
            write_json(tmp / "state.json", {
                "epoch": self.state.epoch, "step": self.state.step, "best_metric": self.state.best_metric,
                "best_epoch": self.state.best_epoch, "bad_epochs": self.state.bad_epochs,
                "history": self.state.history,
                "model_config": self.model.config.model_dump(mode="json") if self.model.config else None,
            })  # fmt: skip

    def _resume(self, path: Path) -> None:
        state_file = path / "state.json"
        if not state_file.is_file():
            raise DataError(f"cannot resume: {path} is not a checkpoint (no state.json)")
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if self.model.config is not None and state.get("model_config") not in (
            None,
            self.model.config.model_dump(mode="json"),
        ):
            raise ConfigError(f"cannot resume from {path}: it was trained with a different model config")
        load_module_weights(self.model, path / "model.safetensors")
        if (path / "optimizer.json").exists():
            self.optimizer.load_state_dict(load_tree(path, "optimizer"))
        self.state = _State(
            epoch=state["epoch"], step=state["step"], best_metric=state["best_metric"],
            best_epoch=state["best_epoch"], bad_epochs=state["bad_epochs"], history=state["history"],
        )  # fmt: skip
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
        if self.run_dir:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.run_config is not None:
                (self.run_dir / "config.yaml").write_text(yaml.safe_dump(dump_config(self.run_config), sort_keys=False))
        if resume:
            path = Path(resume) if not isinstance(resume, bool) else self._checkpoint_dir("last")
            if path is not None and path.exists():
                self._resume(path)
            elif not isinstance(resume, bool):
                raise DataError(f"cannot resume: checkpoint {path} not found")
        started = time.perf_counter()
        stopped_early = False
        log_file = self.run_dir / "metrics.jsonl" if self.run_dir else None
        if log_file and self.state.epoch == 0 and log_file.exists():
            log_file.unlink()
        first_epoch = self.state.epoch
        for epoch in range(first_epoch, c.epochs):
            record = self._train_epoch(epoch)
            self.state.epoch = epoch + 1
            val = self.validate()
            record.update({f"val_{k}": v for k, v in val.items() if k != "primary_metric"})
            primary = val.get("primary", -record["train_loss"])
            improved = primary > self.state.best_metric + c.early_stopping.min_delta
            if improved:
                self.state.best_metric, self.state.best_epoch, self.state.bad_epochs = primary, epoch + 1, 0
                self._best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self._save_checkpoint("best", with_optimizer=False)
            else:
                self.state.bad_epochs += 1
            record["best_epoch"] = self.state.best_epoch
            self.state.history.append(record)
            if log_file:
                with open(log_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            self._save_checkpoint("last", with_optimizer=True)
            self._print_epoch(record, val)
            if c.max_minutes is not None and (time.perf_counter() - started) / 60 >= c.max_minutes:
                self.console.print(f"stopping: the budget of {c.max_minutes:g} minutes is spent")
                stopped_early = True
                break
            patience = c.early_stopping.patience
            if patience is not None and self.state.bad_epochs >= patience and epoch + 1 < c.epochs:
                self.console.print(f"early stopping: no improvement for {patience} epochs")
                stopped_early = True
                break
        return self._finish(stopped_early, time.perf_counter() - started)

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        c = self.config
        self.model.train()
        torch.manual_seed(int(generator(c.seed, 8, epoch).initial_seed()))  # dropout and the like
        jobs = self._epoch_jobs(epoch)
        total_loss, n_steps, n_items = 0.0, 0, 0
        t_model = t_wait = 0.0
        epoch_start = time.perf_counter()
        progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{c.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.0f} items/s"),
            TimeElapsedColumn(), console=self.console, disable=not c.progress, transient=True,
        )  # fmt: skip
        prefetcher = _Prefetcher(jobs)
        cuda = self.device.type == "cuda"
        try:
            with progress:
                task = progress.add_task("train", total=len(jobs), loss=float("nan"), speed=0.0)
                t0 = time.perf_counter()
                for batch in prefetcher:
                    t1 = time.perf_counter()
                    t_wait += t1 - t0
                    factor = self.lr_factor(self.state.step, epoch)
                    for group in self.optimizer.param_groups:
                        group["lr"] = c.lr * factor
                    loss = self._loss(batch)
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"the loss became {loss.item()} at epoch {epoch + 1}, step {self.state.step + 1}: "
                            "lower train.lr, set train.grad_clip, or check the inputs for NaN/inf"
                        )
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if c.grad_clip:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
                    self.optimizer.step()
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
        finally:
            prefetcher.close()
        seconds = time.perf_counter() - epoch_start
        return {
            "epoch": epoch + 1,
            "step": self.state.step,
            "train_loss": total_loss / max(1, n_steps),
            "lr": c.lr * self.lr_factor(max(0, self.state.step - 1), epoch),
            "seconds": seconds,
            "items_per_s": n_items / max(seconds, 1e-9),
            "model_share": t_model / max(t_model + t_wait, 1e-9),
        }

    def _print_epoch(self, record: dict[str, Any], val: dict[str, Any]) -> None:
        if not self.config.progress:
            return
        parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4f}"]
        if val:
            parts.append(f"val {val['primary_metric']} {val['primary']:.4f}")
            if "eer" in val:
                parts.append(f"EER {val['eer']:.4f}")
        parts += [f"{record['items_per_s']:.0f} items/s", f"model share {record['model_share']:.2f}"]
        self.console.print(" · ".join(parts))

    def _finish(self, stopped_early: bool, seconds: float) -> TrainResult:
        best = getattr(self, "_best_weights", None)
        if best is None and (ckpt := self._checkpoint_dir("best")) and (ckpt / "model.safetensors").exists():
            load_module_weights(self.model, ckpt / "model.safetensors")
        elif best is not None:
            self.model.load_state_dict(best)
        calibration = None
        validation: dict[str, Any] = {}
        if self.val_items is not None:
            validation = self.validate()
            v = self.config.validation
            calibration = calibrate(
                self._val_native, self.val_pairs.same, self.model.comparator.is_distance,
                far_targets=[f for f in v.far_targets if f < 0.5],
            )  # fmt: skip
            self.model.calibration = calibration
        self.model.metrics = {"validation": validation, "best_epoch": self.state.best_epoch}
        model_dir = None
        if self.run_dir and self.model.config is not None:
            model_dir = save(self.model, self.run_dir / "model")
        return TrainResult(
            model=self.model, best_metric=self.state.best_metric, best_epoch=self.state.best_epoch,
            epochs_run=self.state.epoch, stopped_early=stopped_early, history=self.state.history,
            calibration=calibration, validation=validation, model_dir=model_dir, run_dir=self.run_dir,
            train_seconds=seconds,
        )  # fmt: skip


def _group_by_length(order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Reorder a shuffled epoch so each batch holds pairs of similar length (less padding, ~2× faster
    on STS-B), yet stays random: sort within windows of 50 batches, then shuffle whole batches."""
    window = 50 * batch_size
    grouped = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        grouped.append(chunk[np.argsort(-lengths[chunk], kind="stable")])
    flat = np.concatenate(grouped)
    batches = [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


def build_loss(config: Config) -> PairLoss | EmbeddingLoss:
    return LOSSES.build(config.loss.name, config.loss.params, field=f"loss (name {config.loss.name!r})")


def load_training_data(config: Config) -> tuple[ItemSet, ItemSet | None, Pairs | None, Pairs | None]:
    """Items (and fixed pairs, for a pairs file) for training and validation, per ``config.data``.

    An image folder is split **by class**: ``data.val_classes`` of the classes are held out for
    validation, so validation measures verification of identities never trained on.
    """
    d = config.data
    if d.path is None:
        raise ConfigError("data.path: no training data given (use --data DIR)")
    path = Path(d.path)
    spec = config.model.input
    if spec.kind == "text":
        return _load_text_data(config)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        pairs_file = read_pairs_file(path)
        data, kept = load_images(pairs_file.paths, spec, d.skip_bad_images)
        if len(kept) != len(pairs_file.paths):
            raise DataError(f"{path}: some images could not be read; pairs files need every image")
        items = ItemSet(
            data=data, labels=np.zeros(len(data), np.int64), class_names=["?"], names=[str(p) for p in pairs_file.paths]
        )
        pairs = pairs_file.pairs
        order = np.random.default_rng(config.train.seed).permutation(len(pairs))
        n_val = round(d.val_classes * len(pairs))
        if n_val == 0:
            return items, None, pairs, None
        return items, items, pairs[order[n_val:]], pairs[order[:n_val]]
    if d.format == "offline_signatures":
        items = read_offline_signatures(path, spec, d.skip_bad_images)
    elif d.format == "online_signatures":
        items = read_online_signatures(path, spec.length or 256)
    else:
        items = read_items(path, spec, d.class_depth, d.skip_bad_images)
    if d.val_path:
        val = read_items(d.val_path, spec, d.class_depth, d.skip_bad_images)
        train = items
    elif d.val_classes == 0:
        train, val = items, None
    else:
        if d.split == "group":
            if items.groups is None:
                raise ConfigError("data.split: 'group' needs class_depth >= 2 (groups are the first folder level)")
            keep, held = split_by_class(items.groups, d.val_classes, config.train.seed)
        else:
            keep, held = split_by_class(items.labels, d.val_classes, config.train.seed)
        train, val = items.subset(keep), items.subset(held)
    if d.rotate_classes:
        train = with_rotated_classes(train)
    return train, val, None, None


def _read_text_pairs(path: str | Path, config: Config) -> TextPairs:
    d = config.data
    if d.format not in TEXT_FORMATS:
        raise ConfigError(f"data.format: {d.format!r} does not hold texts; use auto, sts, mrpc or text_pairs")
    return read_text_pair_file(path, d.format, score_max=d.score_max, positive_score=d.positive_score)


def _load_text_data(config: Config) -> tuple[ItemSet, ItemSet | None, Pairs | None, Pairs | None]:
    """Text pairs for training and validation: ``data.val_path`` (e.g. STS-B dev, for early
    stopping), else ``data.val_classes`` of the training pairs held out (seeded)."""
    d = config.data
    train = _read_text_pairs(d.path, config)
    if d.val_path:
        val = _read_text_pairs(d.val_path, config)
    elif d.val_classes > 0:
        train, val = train.split(d.val_classes, config.train.seed)
    else:
        return train.items, None, train.pairs, None
    return train.items, val.items, train.pairs, val.pairs


def train_from_config(
    config: Config, run_dir: str | Path, *, resume: bool = False, console: Console | None = None
) -> TrainResult:
    """Load the data, build model and loss, train, calibrate and save: what ``twinnet train`` does."""
    train_items, val_items, train_pairs, val_pairs = load_training_data(config)
    seed_everything(config.train.seed)  # before building, so initial weights are reproducible too
    texts = train_items.data if isinstance(train_items, TextItemSet) else None  # vocabularies are built from these
    model = build_model(config.model, texts=texts)
    loss = build_loss(config)
    trainer = Trainer(
        model, loss, train_items, config.train, val_items=val_items, augment=config.data.augment,
        train_pairs=train_pairs, val_pairs=val_pairs, run_dir=run_dir, run_config=config, console=console,
    )  # fmt: skip
    result = trainer.fit(resume=resume)
    if config.data.format.endswith("_signatures") and val_items is not None and result.model_dir is not None:
        # The protocol's own threshold: R references per writer, min distance, EER on validation writers.
        from twinnet.signatures import calibrate_signature_threshold

        threshold = calibrate_signature_threshold(model, val_items)
        model.calibration.extra["signature"] = {"threshold": threshold, "references": 5, "aggregate": "min",
                                                "criterion": "EER on validation writers"}  # fmt: skip
        save(model, result.model_dir)
    return result
