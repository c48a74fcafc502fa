"""How an encoder becomes an ONNX graph: its example inputs, their names and dynamic axes.

The exporter never looks at encoder names. For each encoder it asks, in this order:

1. the encoder's own ``onnx_export_spec(input_spec) -> ExportSpec`` method, if it has one (for an
   encoder whose ``forward`` takes something else than one tensor or one tokenized batch);
2. its ``onnx_unsupported`` attribute: a string saying why it cannot be exported (a clear error);
3. :data:`EXPORT_SPECS`, a registry of spec builders by encoder class, for encoders one cannot
   edit (``@register_export_spec(TheirEncoder)``);
4. the default, from the model's input specification: a text encoder (one with ``tokenize``) is
   traced on a tokenized batch, every tensor of it named by its key, with dynamic batch and token
   axes; any other encoder on one tensor ``input`` of the input spec's shape, with a dynamic batch
   axis, a dynamic time axis for ``kind: sequence``, and any further axes the encoder names in
   ``onnx_dynamic_axes`` (e.g. ``{2: "height", 3: "width"}`` for a fully convolutional backbone).

So a new encoder exports without any change here: one file and one registration.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from twinnet.config import InputSpec
from twinnet.errors import ConfigError

OUTPUT = "embedding"
#: Texts an encoder is traced on (two) and checked on afterwards (three, of other lengths).
EXAMPLE_TEXTS = ("A man is playing a guitar.", "Two dogs run across a wide field of grass in the sun.")
PROBE_TEXTS = ("Hello.", "A woman slices an onion on a wooden board in the kitchen.", "The cat sleeps.")


class OnnxExportError(ConfigError):
    """An encoder (or comparator) that cannot be exported to ONNX, and why."""


@dataclass
class ExportSpec:
    """What the exporter traces for one encoder.

    ``module`` takes the inputs positionally, in ``input_names`` order, and returns ``(batch, dim)``;
    ``example`` are the tensors it is traced on; ``probe`` (optional) are inputs of another batch
    size (and length) on which the exported graph is checked against PyTorch, so a graph that
    baked a size in is refused rather than written. ``dynamic_axes`` name the variable axes of each
    input (and of the output ``embedding``).
    """

    module: nn.Module
    input_names: tuple[str, ...]
    example: tuple[torch.Tensor, ...]
    dynamic_axes: dict[str, dict[int, str]]
    probe: tuple[torch.Tensor, ...] | None = None
    output_name: str = OUTPUT
    notes: list[str] = field(default_factory=list)


SpecBuilder = Callable[[nn.Module, InputSpec], ExportSpec]
EXPORT_SPECS: dict[type, SpecBuilder] = {}


def register_export_spec(encoder_class: type) -> Callable[[SpecBuilder], SpecBuilder]:
    """Decorator: ``builder(encoder, input_spec) -> ExportSpec`` for encoders of ``encoder_class``."""

    def decorator(builder: SpecBuilder) -> SpecBuilder:
        EXPORT_SPECS[encoder_class] = builder
        return builder

    return decorator


def encoder_name(encoder: nn.Module) -> str:
    return f"{type(encoder).__module__}.{type(encoder).__qualname__}"


def export_spec(encoder: nn.Module, input_spec: InputSpec) -> ExportSpec:
    """The :class:`ExportSpec` of ``encoder`` (see the module docstring for the order asked)."""
    hook = getattr(encoder, "onnx_export_spec", None)
    if callable(hook):
        spec = hook(input_spec)
        if not isinstance(spec, ExportSpec):
            raise OnnxExportError(f"{encoder_name(encoder)}.onnx_export_spec returned {type(spec).__name__}, "
                                  "not an ExportSpec")  # fmt: skip
        return spec
    reason = getattr(encoder, "onnx_unsupported", None)
    if isinstance(reason, str) and reason:
        raise OnnxExportError(f"encoder {encoder_name(encoder)} cannot be exported to ONNX: {reason}")
    for cls in type(encoder).__mro__:
        if cls in EXPORT_SPECS:
            return EXPORT_SPECS[cls](encoder, input_spec)
    return default_spec(encoder, input_spec)


class MappingInputs(nn.Module):
    """Calls an encoder that takes a mapping of named tensors (a tokenized batch) with positional inputs."""

    def __init__(self, encoder: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.encoder(dict(zip(self.names, tensors)))


def _token_axes(t: torch.Tensor) -> dict[int, str]:
    axes = {0: "batch"} if t.dim() >= 1 else {}
    if t.dim() >= 2:
        axes[1] = "tokens"
    return axes


def default_spec(encoder: nn.Module, input_spec: InputSpec) -> ExportSpec:
    """The spec from the input specification: a tokenized batch for text encoders, else one tensor."""
    tokenize = getattr(encoder, "tokenize", None)
    if callable(tokenize):
        example, probe = tokenize(list(EXAMPLE_TEXTS)), tokenize(list(PROBE_TEXTS))
        if not isinstance(example, Mapping) or not all(isinstance(v, torch.Tensor) for v in example.values()):
            raise OnnxExportError(
                f"encoder {encoder_name(encoder)} cannot be exported to ONNX by default: its tokenize() returns "
                f"{type(example).__name__}, not a mapping of tensors; give it an onnx_export_spec method"
            )
        names = tuple(str(k) for k in example)
        token_axes = {n: _token_axes(example[n]) for n in names}
        return ExportSpec(MappingInputs(encoder, names), names, tuple(example[n] for n in names),
                          {**token_axes, OUTPUT: {0: "batch"}}, tuple(probe[n] for n in names))  # fmt: skip
    if input_spec.kind == "text":
        raise OnnxExportError(f"encoder {encoder_name(encoder)} takes texts but has no tokenize() method")
    shape = tuple(input_spec.example_shape())
    axes: dict[int, str] = {0: "batch"}
    probe_shape = list(shape)
    if input_spec.kind == "sequence":
        axes[len(shape)] = "time"
        probe_shape[-1] = max(1, shape[-1] + 7)
    g = torch.Generator().manual_seed(0)
    example = torch.randn(2, *shape, generator=g)
    output_axes: dict[int, str] = {0: "batch"}
    notes: list[str] = []
    extra = getattr(encoder, "onnx_dynamic_axes", None)
    if extra is None and input_spec.kind == "image" and _output_rank(encoder, example) > 2:
        # a feature map, not a vector: a fully convolutional encoder takes any image size
        extra = {len(shape) - 1: "height", len(shape): "width"}
        output_axes.update({2: "map_height", 3: "map_width"})
        notes.append("fully convolutional (a feature map): image height and width are dynamic")
    for axis, name in dict(extra or {}).items():
        axes[int(axis)] = str(name)
        if input_spec.kind == "image" and 2 <= int(axis) <= len(shape):
            probe_shape[int(axis) - 1] = shape[int(axis) - 1] + 16  # the probe checks the declared axes too
    probe = torch.randn(3, *probe_shape, generator=g)
    module: nn.Module = encoder
    if input_spec.kind == "image" and not extra:  # a fixed image size: adaptive pools have fixed windows
        rewritten = fixed_adaptive_pools(encoder, example)
        if rewritten is not None:
            module = rewritten
            notes.append("adaptive average pools over a fixed input size exported as fixed averages")
    return ExportSpec(module, ("input",), (example,), {"input": axes, OUTPUT: output_axes}, (probe,), notes=notes)


def _output_rank(encoder: nn.Module, example: torch.Tensor) -> int:
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    try:
        with torch.no_grad():
            return int(encoder(example).dim())
    except (RuntimeError, ValueError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OnnxExportError(f"encoder {encoder_name(encoder)} cannot run on an example input of shape "
                              f"{tuple(example.shape)} ({text})") from None  # fmt: skip
    finally:
        for m, mode in modes:
            m.train(mode)


class FixedAdaptiveAvgPool2d(nn.Module):
    """``AdaptiveAvgPool2d`` for one input size, as two averaging matrices (``P_h · x · P_wᵀ``): the
    same windows and values, in operations ONNX has (its own adaptive pool needs sizes that divide)."""

    rows: torch.Tensor
    cols: torch.Tensor

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("rows", _averaging_matrix(in_size[0], out_size[0]))
        self.register_buffer("cols", _averaging_matrix(in_size[1], out_size[1]).T.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols)


def _averaging_matrix(n_in: int, n_out: int) -> torch.Tensor:
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):  # PyTorch's windows: [floor(i·n/k), ceil((i+1)·n/k))
        start, stop = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:stop] = 1.0 / (stop - start)
    return m


def fixed_adaptive_pools(encoder: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """A copy of ``encoder`` whose 2-D adaptive average pools with sizes that do not divide their
    input (which ONNX cannot express) are :class:`FixedAdaptiveAvgPool2d`; None when there are none."""
    pools = [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d) and n]
    if not pools:
        return None
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            sizes[name] = (int(args[0].shape[-2]), int(args[0].shape[-1]))

        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in pools]
    try:
        with torch.no_grad():
            encoder(example)
    finally:
        for h in handles:
            h.remove()
    targets = {}
    for name, m in pools:
        if name not in sizes:
            continue
        raw = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
        out = tuple(sizes[name][i] if raw[i] is None else int(raw[i]) for i in range(2))  # type: ignore[arg-type]
        if any(sizes[name][i] % out[i] for i in range(2)):
            targets[name] = FixedAdaptiveAvgPool2d(sizes[name], (out[0], out[1]))
    if not targets:
        return None
    rewritten = copy.deepcopy(encoder)
    for name, replacement in targets.items():
        parent_name, _, child = name.rpartition(".")
        parent = rewritten.get_submodule(parent_name) if parent_name else rewritten
        setattr(parent, child, replacement)
    return rewritten.eval()


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def describe_inputs(spec: ExportSpec) -> list[dict[str, Any]]:
    """The inputs as the export metadata records them: name, dtype, shape with axis names."""
    rows = []
    for name, t in zip(spec.input_names, spec.example):
        axes = spec.dynamic_axes.get(name, {})
        rows.append({"name": name, "dtype": dtype_name(t),
                     "shape": [axes.get(i, int(n)) for i, n in enumerate(t.shape)]})  # fmt: skip
    return rows
