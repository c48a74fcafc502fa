"""Evaluate a saved model on a data path: what ``twinnet evaluate`` does.

The protocol comes from the protocol registry and the data from the data-source registry; this
module only joins them, so a newly registered protocol or format works here with no change.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any

import torch

from twinnet.data.sources import ReadOptions, read_dataset
from twinnet.errors import ConfigError, ModelFormatError
from twinnet.io import load
from twinnet.model import AnyTwin
from twinnet.operating import drift_report
from twinnet.protocols.base import ProtocolResult, build_protocol


def evaluate_model(
    model: AnyTwin,
    data: str | Path,
    protocol: str = "verification",
    params: dict[str, Any] | None = None,
    *,
    format: str = "auto",
    options: ReadOptions | None = None,
    drift: bool = False,
) -> ProtocolResult:
    """Run the registered ``protocol`` (with its options ``params``) on the data at ``data``, read by
    the registered ``format`` (``auto``: recognised from the path).

    With ``drift``, a calibrated model and a protocol that decides, the result's
    ``details["operating_points"]`` holds the drift report of the stored operating points on the
    same data (:func:`twinnet.operating.drift_report`): the data are read once for both."""
    evaluator = build_protocol(protocol, params, field="--protocol")
    check_finite_weights(model)
    dataset = read_dataset(data, model.input_spec("a"), format, options, field="--format")
    evaluator.check_data(dataset)
    result = evaluator.evaluate(model, dataset)
    if drift and model.calibration is not None and model.calibration.points and evaluator.makes_decisions():
        result.details["operating_points"] = drift_report(model, dataset, protocol, params).to_json()
    return result


def check_finite_weights(model: torch.nn.Module) -> None:
    """A :class:`ModelFormatError` naming the first parameter or buffer holding NaN or infinity.

    NaN weights embed everything to NaN: episodes then pick the first class every time and report
    a chance-level accuracy with exit status 0, and pair metrics fail deep inside scikit-learn.
    """
    for name, tensor in chain(model.named_parameters(), model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFormatError(f"the model's weights are corrupt: {name} holds NaN or infinite values")


def evaluate_path(
    model_path: str | Path,
    data: str | Path,
    protocol: str = "verification",
    params: dict[str, Any] | None = None,
    *,
    format: str = "auto",
    options: ReadOptions | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_model` for a saved model directory; the result as a JSON-able dict."""
    result = evaluate_model(load(model_path), data, protocol, params, format=format, options=options)
    return {**result.to_dict(), "source": str(data)}


def load_model_or_config(path: str | Path, runtime: str = "torch") -> AnyTwin:
    """A saved model directory, or — for a YAML/JSON config file — its model built untrained (e.g.
    to measure a pretrained text encoder before fine-tuning it). ``runtime="onnx"``: an ONNX export."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml", ".json"):
        if runtime != "torch":
            raise ConfigError(f"--runtime {runtime}: a config file builds a torch model; export a saved model to ONNX")
        from twinnet.config import load_config
        from twinnet.model import build_model

        return build_model(load_config(path).model)
    return load(path, runtime=runtime)
