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
import math
import operator
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


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int ≥ 1, else ``ValueError`` naming ``name``.

    Encoders check their sizes with this: torch builds a layer of width 0 without complaint (and
    the model embeds everything to an empty vector) and fails on a negative width with a RuntimeError
    that names no parameter; a ValueError here becomes a ConfigError naming the config field.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive whole number, not {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive whole number, not {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be at least 1, not {number}")
    return number


def optional_positive_int(value: Any, name: str) -> int | None:
    """:func:`positive_int`, where ``None`` (the component's default) passes."""
    return None if value is None else positive_int(value, name)


def positive_ints(values: Any, name: str) -> tuple[int, ...]:
    """A sequence of sizes ≥ 1 (hidden layer widths, channels; may be empty), else ``ValueError``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a list of positive whole numbers, not {values!r}")
    return tuple(positive_int(v, f"{name}[{i}]") for i, v in enumerate(values))


def positive_float(value: Any, name: str) -> float:
    """``value`` as a finite float > 0, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}")
    return float(value)


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
