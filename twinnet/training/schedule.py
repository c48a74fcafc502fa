"""Learning-rate schedules: linear warm-up, then constant, cosine decay or step decay.

The schedule is a :class:`torch.optim.lr_scheduler.LambdaLR` over global steps, so its position is
part of a checkpoint (``scheduler.state_dict()``) rather than recomputed by the trainer.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from twinnet.config import TrainConfig


def lr_factor(config: TrainConfig, steps_per_epoch: int, step: int, epoch: int | None = None) -> float:
    """The learning-rate multiplier at global ``step`` (0-based) of epoch ``epoch`` (default: the
    epoch that step falls in)."""
    c = config
    if epoch is None:
        epoch = step // max(1, steps_per_epoch)
    if c.warmup_steps and step < c.warmup_steps:
        return (step + 1) / c.warmup_steps
    if c.schedule == "cosine":
        total = max(1, c.epochs * steps_per_epoch - c.warmup_steps)
        progress = min(1.0, (step - c.warmup_steps) / total)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if c.schedule == "step":
        return c.step_gamma ** (epoch // max(1, c.step_epochs))
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> LambdaLR:
    """A scheduler stepped once per optimiser step: before step ``s`` the rate is ``lr · lr_factor(s)``.

    The factor is a plain function (not a callable object), so LambdaLR's ``state_dict`` holds only
    the position (plain numbers, JSON-able), never the function.
    """

    def factor(step: int) -> float:
        return lr_factor(config, steps_per_epoch, step)

    return LambdaLR(optimizer, factor)
