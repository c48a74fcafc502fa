"""``twinnet export MODEL --format onnx --out DIR``: a model as ONNX graphs, servable without torch weights.

Export layout (written under a temporary name and renamed into place, manifest last)::

    DIR/
      twinnet.json            manifest: format "twinnet-onnx", files and their SHA-256 (written last)
      onnx.json               what was exported: graphs, inputs, dynamic axes, opset, quantisation,
                              parity with PyTorch, fingerprints
      onnx/encoder.onnx       the encoder (side a; both sides of a twin)
      onnx/encoder_b.onnx     a half-twin's second encoder
      onnx/comparator.onnx    a learned comparator (mlp, mahalanobis, weighted_l1): (a, b) → native value
      comparator.safetensors  its parameters, for the runtime's galleries and normaliser (no encoder weights)
                              and for a tracking model's head (below)
      whitening.safetensors   a model's fitted whitening (:mod:`twinnet.whitening`), applied by the runtime
                              in PyTorch after the encoder's graph, as the torch model does
      config.json, calibration.json, metrics.json, normalizer.*, assets/   as in a saved model

The graphs are traced with the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
it runs offline with no further package, takes ``dynamic_axes`` for batch and sequence length,
and traces what the encoders use (packed GRU sequences, Hugging Face BERT attention masks), which
the ``torch.export``-based exporter (it needs ``onnxscript``) does not all handle with dynamic shapes.

A tracking model exports its backbone alone: its comparator compares feature *maps* (``xcorr``, a
box head), a correlation whose grouped convolution has one group per pair of the batch, which a
traced graph would fix. The backbone's graph takes any image size (the exemplar and the search
image); the head's weights go to ``comparator.safetensors``, and the ONNX Runtime backend runs the
head in PyTorch on the backbone's maps (``onnx.json`` says so under ``comparator``).

Every graph is checked against PyTorch after export, on its example and on inputs of another batch
size (and length): a graph that differs is refused, never written. ``quantize="int8"`` applies ONNX
Runtime dynamic quantisation to the encoders (weights int8, activations quantised on the fly): the
embeddings change, so the export says so in ``onnx.json`` and in each graph's metadata, and gets
its own fingerprint (a gallery enrolled with the float model refuses it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from twinnet._version import __version__
from twinnet.errors import ConfigError, ModelFormatError
from twinnet.io import (
    MANIFEST,
    atomic_directory,
    load,
    resolve_model_dir,
    sha256_file,
    weights_fingerprint,
    write_companions,
    write_json,
    write_manifest,
)
from twinnet.model import AnyTwin, encoders_by_role
from twinnet.onnx.spec import OUTPUT, ExportSpec, OnnxExportError, describe_inputs, encoder_name, export_spec

FORMAT = "twinnet-onnx"
META = "onnx.json"
COMPARATOR_WEIGHTS = "comparator.safetensors"
WHITENING_WEIGHTS = "whitening.safetensors"
DEFAULT_OPSET = 17
QUANTIZATIONS = ("int8",)
#: Largest |ONNX − PyTorch| accepted at export, relative to the output's scale (fp32 graphs).
TOLERANCE = 1e-4
SIDE_OF_ROLE = {"encoder": "a", "encoder_b": "b"}
#: What to do about an encoder or a comparator that does not trace, said in their errors.
ENCODER_HINT = "give the encoder an onnx_export_spec method, or an onnx_unsupported attribute saying why"
COMPARATOR_HINT = "give the comparator an onnx_unsupported attribute saying why"


def require_onnx() -> tuple[Any, Any]:
    """``onnx`` and ``onnxruntime``, or a one-line error saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "ONNX export and the ONNX Runtime backend need the packages onnx and onnxruntime: "
            "pip install 'twinnet[onnx]'"
        ) from None
    return onnx, onnxruntime


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _session(path: Path) -> Any:
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session: Any, names: tuple[str, ...], inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    feed: dict[str, np.ndarray | None] = {i.name: None for i in session.get_inputs()}
    for name, t in zip(names, inputs):
        if name in feed:
            feed[name] = t.detach().cpu().numpy()
    return session.run(None, feed)[0]


def _parity(module: nn.Module, session: Any, names: tuple[str, ...], inputs: tuple[torch.Tensor, ...]) -> float:
    with torch.no_grad():
        reference = module(*inputs).float().cpu().numpy()
    got = _run(session, names, inputs)
    if got.shape != reference.shape:
        return float("inf")
    return float(np.abs(got.astype(np.float64) - reference).max()) if reference.size else 0.0


def _scale(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    with torch.no_grad():
        out = module(*inputs).float()
    return max(1.0, float(out.abs().max())) if out.numel() else 1.0


def export_graph(
    spec: ExportSpec, path: Path, what: str, opset: int = DEFAULT_OPSET, hint: str = ENCODER_HINT
) -> dict[str, Any]:
    """Trace ``spec.module`` to ``path`` and check the graph against PyTorch; the graph's metadata.
    Its errors name ``what`` and end with ``hint`` (what its owner can do)."""
    module = spec.module
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
            torch.onnx.export(
                module, spec.example, str(path), input_names=list(spec.input_names), output_names=[spec.output_name],
                dynamic_axes=spec.dynamic_axes, opset_version=opset, dynamo=False, do_constant_folding=True,
            )  # fmt: skip
        session = _session(path)
        inputs = [i.name for i in session.get_inputs()]
        errors = {"example": _parity(module, session, spec.input_names, spec.example)}
        if spec.probe is not None:
            errors["probe"] = _parity(module, session, spec.input_names, spec.probe)
        scale = _scale(module, spec.probe if spec.probe is not None else spec.example)
    except OnnxExportError:
        raise
    except Exception as err:  # the tracer and ONNX Runtime raise many kinds; all mean "cannot export"
        raise OnnxExportError(
            f"{what} cannot be exported to ONNX: {type(err).__name__}: {_first_line(err)} ({hint})"
        ) from None
    finally:
        for m, mode in modes:  # the exporter restores only the top module's mode, onto every child
            m.train(mode)
    worst = max(errors.values())
    if not worst <= TOLERANCE * scale:
        sizes = "another batch size or length" if "probe" in errors else "its example"
        raise OnnxExportError(
            f"{what} cannot be exported to ONNX: the traced graph differs from PyTorch by {worst:.3g} on "
            f"{sizes} (its forward depends on the input's size or on Python control flow the tracer "
            f"fixed; {hint})"
        )
    described = {n["name"]: n for n in describe_inputs(spec)}
    return {
        "inputs": [described.get(n, {"name": n}) for n in inputs],
        "output": spec.output_name,
        "dynamic_axes": {k: {str(a): v for a, v in axes.items()} for k, axes in spec.dynamic_axes.items()},
        "parity_max_abs_error": errors,
        **({"notes": spec.notes} if spec.notes else {}),
    }


class _PairValues(nn.Module):
    """A comparator as a graph of two embedding batches → native values."""

    def __init__(self, comparator: nn.Module) -> None:
        super().__init__()
        self.comparator = comparator

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.comparator(a, b)


#: What dynamic quantisation rewrites: matrix products (Linear layers, attention) and embedding
#: lookups. Convolutions stay float: ONNX Runtime's CPU ConvInteger takes no int8 weights.
QUANTIZED_OPS = ("MatMul", "Gemm", "Attention", "Gather")


def _quantize(onnx: Any, src: Path, dst: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the graph is logged on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(QUANTIZED_OPS), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    graph = onnx.load(str(dst), load_external_data=False)
    integer = sum(1 for n in graph.graph.node if "Integer" in n.op_type or n.op_type.startswith("DynamicQuantize"))
    out: dict[str, Any] = {"ops": list(QUANTIZED_OPS), "integer_nodes": integer}
    if integer == 0:
        out["note"] = "nothing to quantise (no matrix products or lookups): the int8 graph computes as the float one"
    return out


def _set_metadata(onnx: Any, path: Path, entries: dict[str, str]) -> None:
    graph = onnx.load(str(path))
    for key, value in entries.items():
        prop = graph.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(graph, str(path))


def _check_target(out: Path, source: Path | None) -> None:
    if source is not None and out.resolve() == source.resolve():
        raise ConfigError(f"--out {out}: is the model directory itself; choose another directory")
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if any(out.iterdir()):
        manifest = out / MANIFEST
        try:
            kind = json.loads(manifest.read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != FORMAT:
            raise ConfigError(f"--out {out}: exists and is not an ONNX export (it would be replaced); "
                              "choose a new directory")  # fmt: skip


def export_onnx(
    model: AnyTwin,
    out: str | Path,
    *,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    source: Path | None = None,
) -> dict[str, Any]:
    """Export ``model``'s encoders (and learned comparator) to ONNX under ``out``; the ``onnx.json`` written.

    ``quantize="int8"``: ONNX Runtime dynamic quantisation of the encoders (never implied)."""
    onnx, ort = require_onnx()
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize: {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 13 <= opset <= 20:
        raise ConfigError(f"--opset: {opset!r} is not an opset between 13 and 20")
    config = model.config
    if config is None:
        raise ConfigError("this network has no ModelConfig (it was built by hand): build it with "
                          "twinnet.build_model so that the export can say what its inputs are")  # fmt: skip
    comparator = model.comparator
    reason = getattr(comparator, "onnx_unsupported", None)
    if isinstance(reason, str) and reason:
        raise OnnxExportError(f"comparator {config.comparator.name} ({encoder_name(comparator)}) cannot be "
                              f"exported to ONNX: {reason}")  # fmt: skip
    out = Path(out)
    _check_target(out, source)
    fingerprint = model.fingerprint or weights_fingerprint(model)
    was_training = model.training
    model.eval()
    graphs: dict[str, Any] = {}
    try:
        with atomic_directory(out) as tmp:
            (tmp / "onnx").mkdir()
            for role, encoder in encoders_by_role(model).items():
                side = SIDE_OF_ROLE[role]
                what = f"{role} ({encoder_name(encoder)})"
                spec = export_spec(encoder, model.input_spec(side))  # type: ignore[arg-type]
                path = tmp / "onnx" / f"{role}.onnx"
                info = export_graph(spec, path, what, opset)
                info.update({"file": f"onnx/{role}.onnx", "side": side, "class": encoder_name(encoder),
                             "output_dim": int(model.embedding_dim), "dtype": "float32"})  # fmt: skip
                if quantize == "int8":
                    qpath = tmp / "onnx" / f"{role}.int8.onnx"
                    info["quantization"] = _quantize(onnx, path, qpath)
                    session = _session(qpath)
                    names = spec.input_names
                    probe = spec.probe if spec.probe is not None else spec.example
                    info["int8_max_abs_error_vs_float"] = _parity(spec.module, session, names, probe)
                    path.unlink()
                    path = qpath
                    info.update({"file": f"onnx/{role}.int8.onnx", "dtype": "int8 (dynamic quantisation)"})
                _set_metadata(onnx, path, {"twinnet.role": role, "twinnet.quantization": quantize or "none",
                                           "twinnet.version": __version__})  # fmt: skip
                graphs[role] = info
            head: dict[str, Any] | None = None
            if comparator.compares == "maps":  # a tracking head: the backbone alone is a graph (module docstring)
                from safetensors.torch import save_model

                head = {"name": config.comparator.name, "class": encoder_name(comparator), "compares": "maps",
                        "graph": None, "weights": COMPARATOR_WEIGHTS if comparator.has_weights else None,
                        "note": "compares feature maps (one group per pair in its correlation, which a traced graph "
                                "would fix): not a graph; twinnet's ONNX runtime runs it in PyTorch on the "
                                "backbone's maps"}  # fmt: skip
                if comparator.has_weights:
                    save_model(comparator, str(tmp / COMPARATOR_WEIGHTS))
            elif comparator.has_weights:
                dim = int(model.embedding_dim)
                g = torch.Generator().manual_seed(1)
                pair = _PairValues(comparator)
                example = (torch.randn(2, dim, generator=g), torch.randn(2, dim, generator=g))
                probe = (torch.randn(5, dim, generator=g), torch.randn(5, dim, generator=g))
                axes = {"a": {0: "batch"}, "b": {0: "batch"}, "value": {0: "batch"}}
                spec = ExportSpec(pair, ("a", "b"), example, axes, probe, output_name="value")
                path = tmp / "onnx" / "comparator.onnx"
                info = export_graph(spec, path, f"comparator {config.comparator.name} ({type(comparator).__name__})",
                                    opset, hint=COMPARATOR_HINT)  # fmt: skip
                _set_metadata(onnx, path, {"twinnet.role": "comparator", "twinnet.quantization": "none",
                                           "twinnet.orientation": comparator.orientation.to_json()})  # fmt: skip
                from safetensors.torch import save_model

                save_model(comparator, str(tmp / COMPARATOR_WEIGHTS))
                info.update({"file": "onnx/comparator.onnx", "class": encoder_name(comparator),
                             "orientation": comparator.orientation.to_json(), "dtype": "float32",
                             "weights": COMPARATOR_WEIGHTS})  # fmt: skip
                graphs["comparator"] = info
            if model.whitening is not None:
                from safetensors.torch import save_model

                save_model(model.whitening, str(tmp / WHITENING_WEIGHTS))
            write_companions(model, tmp, config, getattr(model, "calibration", None), getattr(model, "metrics", None))
            if quantize == "int8":
                h = hashlib.sha256(f"{fingerprint}|onnx-int8|".encode())
                for role in encoders_by_role(model):
                    h.update(sha256_file(tmp / graphs[role]["file"]).encode())
                export_fingerprint = h.hexdigest()
            else:
                export_fingerprint = fingerprint  # the same embeddings (within 1e-5): galleries stay valid
            meta = {
                "format": FORMAT,
                "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)",
                "opset": opset,
                "torch_version": torch.__version__.split("+")[0],
                "onnx_version": onnx.__version__,
                "onnxruntime_version": ort.__version__,
                "twinnet_version": __version__,
                "quantization": None if quantize is None else {
                    "dtype": "int8", "method": "onnxruntime.quantization.quantize_dynamic (weights int8, activations "
                    "quantised per batch)", "applies_to": [r for r in encoders_by_role(model)],
                    "note": "embeddings differ from the float model: calibration thresholds were chosen on the "
                    "float model; re-run `twinnet calibrate` on the quantised model's embeddings if that matters"},
                "source_fingerprint": fingerprint,
                "fingerprint": export_fingerprint,
                "normalize": bool(model.normalize),
                **({"whitening": {"name": config.whitening.name, "weights": WHITENING_WEIGHTS,
                                  "note": "applied in PyTorch after the encoder's graph"}}
                   if config.whitening is not None else {}),
                "graphs": graphs,
                **({"comparator": head} if head is not None else {}),
            }  # fmt: skip
            write_json(tmp / META, meta)
            write_manifest(tmp, kind=FORMAT)
    finally:
        model.train(was_training)
    return meta


def export_path(
    model_path: str | Path,
    out: str | Path,
    *,
    format: str = "onnx",
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """:func:`export_onnx` for a saved model (or run) directory."""
    if format != "onnx":
        raise ConfigError(f"--format: {format!r} is not a supported export format (onnx)")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize: {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    require_onnx()
    directory = resolve_model_dir(model_path)
    try:
        model = load(directory)
    except ModelFormatError:
        if (directory / META).exists():
            raise ModelFormatError(
                f"{directory}: is already an ONNX export; export the saved model it came from"
            ) from None
        raise
    return export_onnx(model, out, quantize=quantize, opset=opset, source=directory)


__all__ = ["FORMAT", "META", "OUTPUT", "export_onnx", "export_path", "require_onnx"]
