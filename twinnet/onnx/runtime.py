"""The ONNX Runtime backend: ``twinnet.load(path, runtime="onnx")`` on a directory from ``twinnet export``.

The loaded model is the same :class:`~twinnet.model.TwinNetwork` (or half-twin) as with torch, with
each encoder replaced by an :class:`OnnxEncoder`: a module that runs an ONNX Runtime session and
returns the same ``(batch, dim)`` tensor. Comparators, calibration, normalisation, protocols,
galleries and the service use it through the same calls (``model.embed(x, side)`` and the one
embedding loop in :mod:`twinnet.embedding`), with no branch on the runtime.

What an encoder needs besides its weights (a tokenizer, a vocabulary) comes from the export's
``assets/``, as for a saved model: the torch encoder is built from its config for that, then its
tensors are dropped (moved to the ``meta`` device), so no encoder weights are read or held.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from twinnet.errors import ConfigError, DataError, ModelFormatError
from twinnet.io import MANIFEST, read_companions, read_manifest, read_model_config, resolve_model_dir
from twinnet.model import AnyTwin, build_model, encoders_by_role, replace_encoders
from twinnet.onnx.export import COMPARATOR_WEIGHTS, FORMAT, META, WHITENING_WEIGHTS, require_onnx
from twinnet.registry import RUNTIMES

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
                "tensor(double)": np.float64, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}  # fmt: skip


def fixed_threads() -> int | None:
    """``$TWINNET_ORT_THREADS``: a fixed intra-op thread count for every session, else None."""
    env = os.environ.get("TWINNET_ORT_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options with ``threads`` intra-op threads (default: torch's count)."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = max(1, int(threads or torch.get_num_threads()))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxEncoder(nn.Module):
    """An encoder run by ONNX Runtime, in place of a torch encoder of the same interface.

    ``forward`` takes what the torch encoder took: a batch tensor, a tokenized batch (a mapping of
    named tensors) or, for text encoders, a list of strings. Attributes that are not tensors or
    modules (``tokenize``, ``count_tokens``, ``max_length``, a vocabulary) are those of the source
    encoder, whose own tensors were dropped; asking for one of its modules or tensors is an error.
    """

    def __init__(
        self, path: Path, output_dim: int, source: nn.Module | None = None, role: str = "encoder",
        threads: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.output_dim = int(output_dim)
        self.role = role
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        session = self.session()
        self.inputs = [(i.name, _NUMPY_TYPES.get(i.type, np.float32)) for i in session.get_inputs()]
        self.output_name = session.get_outputs()[0].name
        object.__setattr__(self, "_source", source)  # not a sub-module: its (meta) tensors are no parameters

    def session(self) -> Any:
        """The session for this thread's torch thread count (or the fixed ``threads``).

        The embedding loop runs text batches on one worker per core, each worker with one torch
        thread: a session per thread count lets ONNX Runtime follow the same setting (on 2 cores two
        1-thread workers are faster than one 2-thread stream here too). Sessions are thread-safe."""
        n = self.threads or fixed_threads() or torch.get_num_threads()
        found = self._sessions.get(n)
        if found is None:
            with self._lock:
                found = self._sessions.get(n)
                if found is None:
                    _, ort = require_onnx()
                    try:
                        found = ort.InferenceSession(str(self.path), session_options(n),
                                                     providers=["CPUExecutionProvider"])  # fmt: skip
                    except Exception as err:  # onnxruntime raises its own exception types for bad graphs
                        raise ModelFormatError(f"{self.path}: ONNX Runtime cannot load it "
                                               f"({str(err).strip()[:200]})") from None  # fmt: skip
                    self._sessions[n] = found
        return found

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            source = self.__dict__.get("_source")
            if source is None or name.startswith("_"):
                raise
            value = getattr(source, name)
            if isinstance(value, (nn.Module, torch.Tensor)):
                raise AttributeError(f"{type(source).__name__}.{name} is part of the torch encoder, which an "
                                     "ONNX Runtime model does not hold") from None  # fmt: skip
            return value

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("an ONNX Runtime encoder cannot be copied or pickled; load the export again")

    def _feed(self, x: Any) -> dict[str, np.ndarray]:
        if isinstance(x, Mapping):
            missing = [n for n, _ in self.inputs if n not in x]
            if missing:
                raise DataError(f"the ONNX encoder needs the inputs {missing}, got {sorted(map(str, x))}")
            return {n: _array(x[n], t) for n, t in self.inputs}
        if isinstance(x, (torch.Tensor, np.ndarray)):
            if len(self.inputs) != 1:
                raise DataError(
                    f"the ONNX encoder takes the named inputs {[n for n, _ in self.inputs]}, not one tensor"
                )
            name, dtype = self.inputs[0]
            return {name: _array(x, dtype)}
        tokenize = getattr(self, "tokenize", None)
        if callable(tokenize) and isinstance(x, Sequence) and not isinstance(x, str):
            return self._feed(tokenize(x))
        raise DataError(f"the ONNX encoder cannot take a {type(x).__name__}")

    def forward(self, x: Any) -> torch.Tensor:
        feed = self._feed(x)
        if any(v.shape[0] == 0 for v in feed.values() if v.ndim):
            return torch.zeros(0, self.output_dim)
        return torch.from_numpy(self.session().run([self.output_name], feed)[0])

    def extra_repr(self) -> str:
        return f"role={self.role}, output_dim={self.output_dim}, inputs={[n for n, _ in self.inputs]}"


def _array(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=dtype)


def read_export_meta(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{directory}: incomplete ONNX export, {META} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{directory / META}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("graphs"), dict):
        raise ModelFormatError(f"{directory / META}: has no 'graphs'")
    return meta


def _check_is_export(directory: Path) -> None:
    manifest = directory / MANIFEST
    if manifest.is_file():
        try:
            kind = json.loads(manifest.read_text(encoding="utf-8")).get("format")
        except (ValueError, AttributeError, UnicodeDecodeError):
            kind = None
        if kind == "twinnet-model":
            raise ModelFormatError(
                f"{directory}: a saved torch model, not an ONNX export; export it first with "
                f"`twinnet export {directory} --format onnx --out DIR`, then load DIR with the onnx runtime"
            )


@RUNTIMES.register("onnx")
def load_onnx(
    path: str | Path, *, device: str | torch.device = "cpu", verify: bool = True, threads: int | None = None
) -> AnyTwin:
    """Load an ONNX export (``twinnet export``) as a model whose encoders run on ONNX Runtime (CPU)."""
    if torch.device(device).type != "cpu":
        raise ConfigError(f"device: the onnx runtime runs on the CPU here, not {device}")
    require_onnx()
    directory = resolve_model_dir(path)
    _check_is_export(directory)
    read_manifest(directory, kind=FORMAT, verify=verify)
    meta = read_export_meta(directory)
    config = read_model_config(directory)
    try:
        model = build_model(config, assets=directory / "assets")
    except ConfigError as err:
        raise ModelFormatError(f"{directory}: cannot rebuild the model: {err}") from None
    replacements: dict[str, nn.Module] = {}
    for role, source in encoders_by_role(model).items():
        info = meta["graphs"].get(role)
        if not isinstance(info, dict) or not isinstance(info.get("file"), str):
            raise ModelFormatError(f"{directory / META}: no graph for the {role}")
        file = directory / info["file"]
        if Path(info["file"]).is_absolute() or ".." in Path(info["file"]).parts or not file.is_file():
            raise ModelFormatError(f"{directory}: graph file {info['file']!r} is missing or outside the export")
        source.to_empty(device="meta")  # the torch encoder keeps only its preprocessing (tokenizer, vocabulary)
        replacements[role] = OnnxEncoder(file, int(info.get("output_dim") or 0), source, role, threads)
    replace_encoders(model, replacements)
    weights = directory / COMPARATOR_WEIGHTS
    if weights.exists():
        from safetensors.torch import load_model

        try:
            load_model(model.comparator, str(weights), strict=True)
        except Exception as err:  # safetensors and torch raise several types for a file that does not fit
            raise ModelFormatError(f"{weights}: does not fit the comparator ({str(err).strip()[:200]})") from None
    if model.whitening is not None:
        from safetensors.torch import load_model

        weights = directory / WHITENING_WEIGHTS
        try:
            load_model(model.whitening, str(weights), strict=True)
        except Exception as err:  # a missing file or one that does not fit
            raise ModelFormatError(
                f"{weights}: the model's whitening cannot be read ({str(err).strip()[:200]})"
            ) from None
    read_companions(model, directory)
    model.fingerprint = str(meta.get("fingerprint") or "") or None
    model.runtime = "onnx"  # type: ignore[assignment]
    model.export_info = meta  # type: ignore[assignment]
    return model.eval()
