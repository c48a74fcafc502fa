"""The encoder registry: config names → encoder classes.

Register your own ``torch.nn.Module`` to make it selectable in a config::

    from twinnet.encoders import register_encoder

    @register_encoder("tiny")
    class Tiny(torch.nn.Module):
        def __init__(self, in_features: int, embedding_dim: int = 16): ...

An encoder maps a batch of inputs to a ``(batch, output_dim)`` tensor. It may accept the
keyword arguments ``in_channels`` and ``input_size`` (images) or ``in_features`` (vectors); the
model builder fills them from the model's input specification.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from twinnet.registry import Registry

ENCODERS: Registry[nn.Module] = Registry("encoder")


def register_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class decorator: make an encoder selectable as ``model.encoder.name: <name>``."""
    return ENCODERS.register(name)


def build_encoder(
    name: str, params: dict[str, Any] | None, input_args: dict[str, Any], *, field: str = "model.encoder"
) -> nn.Module:
    """Build encoder ``name``; ``input_args`` (from the input spec) fill parameters it accepts
    and the config left unset. Errors name ``field`` (``model.encoder`` or ``model.encoder_b``)."""
    factory = ENCODERS.get(name, field=f"{field}.name")
    accepted = inspect.signature(factory).parameters
    merged = {k: v for k, v in input_args.items() if k in accepted}
    merged.update(params or {})
    return ENCODERS.build(name, merged, field=f"{field}.params (encoder {name!r})")


@torch.no_grad()
def infer_output_dim(encoder: nn.Module, example: torch.Tensor) -> int:
    """The embedding size of ``encoder``: its ``output_dim`` attribute, else one probe forward pass."""
    dim = getattr(encoder, "output_dim", None)
    if isinstance(dim, int):
        return dim
    was_training = encoder.training
    encoder.eval()
    out = encoder(example)
    encoder.train(was_training)
    return int(out.shape[-1])
