"""Training checkpoints: everything a resumed run needs to continue bit for bit, and nothing pickled.

A checkpoint directory holds::

    model.safetensors              the model's weights
    loss.json + loss.safetensors   the loss's state (a learned margin, a comparator inside the loss)
    optimizer.json + .safetensors  the optimiser's state (moments, step counts)         [last only]
    scheduler.json                 the learning-rate schedule's position                [last only]
    plan.json                      the batch plan's state (seed, next epoch, data digest) [last only]
    precision.json                 the training precision and the fp16 loss scale      [last only]
    state.json                     epoch, step, best metric and epoch, history, model config, and
                                   the number of training processes (resuming needs as many)

Tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from twinnet.errors import ConfigError, DataError
from twinnet.io import atomic_directory, load_module_weights, load_tree, save_module_weights, save_tree, write_json
from twinnet.model import AnyTwin
from twinnet.training.distributed import World
from twinnet.training.plans import BatchPlan
from twinnet.training.precision import Precision


@dataclass
class TrainerState:
    """Where training is: epochs and steps done, the best epoch so far and the per-epoch records."""

    epoch: int = 0
    step: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Resumable:
    """What a ``last`` checkpoint restores besides the model and the loss."""

    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    plan: BatchPlan
    precision: Precision | None = None


def save_checkpoint(
    target: Path, model: AnyTwin, loss: nn.Module, state: TrainerState, resumable: Resumable | None = None
) -> None:
    """Write a checkpoint atomically (a crash leaves the previous one whole)."""
    with atomic_directory(target) as tmp:
        save_module_weights(model, tmp / "model.safetensors")
        save_tree(loss.state_dict(), tmp, "loss")
        if resumable is not None:
            save_tree(resumable.optimizer.state_dict(), tmp, "optimizer")
            write_json(tmp / "scheduler.json", resumable.scheduler.state_dict())
            write_json(tmp / "plan.json", resumable.plan.state_dict())
            if resumable.precision is not None:
                write_json(tmp / "precision.json", resumable.precision.state_dict())
        write_json(tmp / "state.json", {
            **asdict(state), "model_config": model.config.model_dump(mode="json") if model.config else None,
            "world_size": World.current().size,
        })  # fmt: skip


def load_weights(path: Path, model: AnyTwin, loss: nn.Module) -> None:
    """The model's and the loss's weights from checkpoint ``path``."""
    load_module_weights(model, path / "model.safetensors")
    if (path / "loss.json").exists():
        loss.load_state_dict(load_tree(path, "loss"))


def load_checkpoint(path: Path, model: AnyTwin, loss: nn.Module, resumable: Resumable) -> TrainerState:
    """Restore model, loss, optimiser, scheduler and plan from ``path``; returns the trainer state."""
    state_file = path / "state.json"
    if not state_file.is_file():
        raise DataError(f"cannot resume: {path} is not a checkpoint (no state.json)")
    missing = [n for n in ("loss.json", "optimizer.json", "scheduler.json", "plan.json") if not (path / n).exists()]
    if missing:
        raise DataError(f"cannot resume from {path}: it lacks {', '.join(missing)} (a checkpoint of an older "
                        "twinnet, or not a 'last' checkpoint); start a fresh run")  # fmt: skip
    saved = json.loads(state_file.read_text(encoding="utf-8"))
    model_config = saved.pop("model_config", None)
    trained_on, now = int(saved.pop("world_size", 1)), World.current().size
    if trained_on != now:
        raise ConfigError(f"cannot resume from {path}: it was trained on {_processes(trained_on)}, this run has "
                          f"{_processes(now)}; resume with the same number (torchrun --nnodes × --nproc_per_node = "
                          f"{trained_on}), or start a fresh run in another --out")  # fmt: skip
    if model.config is not None and model_config not in (None, model.config.model_dump(mode="json")):
        raise ConfigError(f"cannot resume from {path}: it was trained with a different model config")
    resumable.plan.load_state_dict(json.loads((path / "plan.json").read_text(encoding="utf-8")))
    load_weights(path, model, loss)
    resumable.optimizer.load_state_dict(load_tree(path, "optimizer"))
    resumable.scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text(encoding="utf-8")))
    if resumable.precision is not None and (path / "precision.json").exists():
        resumable.precision.load_state_dict(json.loads((path / "precision.json").read_text(encoding="utf-8")))
    return TrainerState(**saved)


def _processes(n: int) -> str:
    return f"{n} process{'es' if n > 1 else ''}"
