"""Mixed precision for the training step (``train.precision``).

``auto`` (the default) trains in bfloat16 autocast on CUDA (float16 where the device has no
bfloat16) and in float32 on the CPU; ``fp32`` never autocasts; ``bf16`` autocasts on any device, the
CPU included, when asked; ``fp16`` is for CUDA only (on the CPU a triplet loss under float16
autocast stopped learning in our runs while bf16 followed float32, so it is refused). float16
scales the loss (a gradient scaler, whose state the ``last`` checkpoint carries) so small gradients
do not underflow; bfloat16 needs no scaling.
Only the training step's forward pass autocasts: validation, calibration and the saved model
run in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from twinnet.errors import ConfigError

__all__ = ["Precision", "resolve_precision"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(requested: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16``: what ``requested`` means on ``device`` (``auto`` → bf16 on
    CUDA where supported, else fp16 there; fp32 on any other device)."""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class Precision:
    """The autocast context, loss scaling and optimiser step of one training run."""

    def __init__(self, requested: str, device: torch.device) -> None:
        self.name = resolve_precision(requested, device)
        if self.name == "fp16" and device.type != "cuda":
            raise ConfigError(f"train.precision: fp16 autocast is for CUDA devices, not {device.type}; use bf16 "
                              "(or fp32) there")  # fmt: skip
        self.device = device
        self.dtype = _DTYPES.get(self.name)
        self.scaler = torch.amp.GradScaler(device.type) if self.name == "fp16" else None

    def autocast(self) -> AbstractContextManager[Any]:
        """Where the step's forward pass runs (a no-op for fp32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter], clip: float | None) -> None:
        """Clip the (unscaled) gradients to ``clip`` and step the optimiser; with fp16, a step whose
        gradients overflowed is skipped and the scale lowered."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: the precision and, for fp16, the scaler's scale and growth tracker."""
        return {"precision": self.name, "scaler": None if self.scaler is None else self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
