"""Using a trained model: read inputs as the model expects them, embed, verify."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twinnet.config import InputSpec
from twinnet.data.images import is_image_file, load_image, to_float
from twinnet.errors import DataError
from twinnet.model import AnyTwin
from twinnet.protocols import model_device

Input = str | Path | torch.Tensor | np.ndarray


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the image files inside any folder (sorted, recursively)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and (is_image_file(f) or f.suffix == ".npy"))
            if not found:
                raise DataError(f"{p}: no input files in this folder")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"input not found: {p}")
    return out


def read_input(item: Input, spec: InputSpec) -> torch.Tensor:
    """One input as a float tensor of the model's input shape (no batch dimension)."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        if spec.kind == "vector" or path.suffix == ".npy":
            if path.suffix != ".npy":
                raise DataError(f"{path}: a vector model reads .npy files")
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise DataError(f"{path}: not a readable .npy array ({err})") from None
            tensor = torch.as_tensor(array, dtype=torch.float32)
        else:
            tensor = to_float(load_image(path, spec))
    else:
        tensor = torch.as_tensor(item)
        tensor = to_float(tensor) if tensor.dtype == torch.uint8 else tensor.float()
    expected = spec.example_shape()
    if tuple(tensor.shape) != expected:
        name = item if isinstance(item, (str, Path)) else "input"
        raise DataError(f"{name}: shape {tuple(tensor.shape)} does not match the model's input {expected}")
    return tensor


def _spec(model: AnyTwin) -> InputSpec:
    if model.config is None:
        raise DataError("this model has no input specification; pass tensors")
    return model.config.input


@torch.no_grad()
def embed(model: AnyTwin, inputs: Sequence[Input] | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embeddings of files or tensors, batched, on the CPU."""
    if isinstance(inputs, torch.Tensor):
        batch = inputs
    else:
        spec = _spec(model) if any(isinstance(i, (str, Path)) for i in inputs) else None
        batch = torch.stack([read_input(i, spec) if spec else torch.as_tensor(i).float() for i in inputs])
    device = model_device(model)
    model.eval()
    return torch.cat(
        [model.embed(batch[i : i + batch_size].to(device)).cpu() for i in range(0, len(batch), batch_size)]
    )


@dataclass
class Verification:
    value: float
    """The comparator's native value: a distance, or a probability of "same"."""
    is_distance: bool
    threshold: float | None
    same: bool | None
    rule: str

    def to_dict(self) -> dict[str, Any]:
        key = "distance" if self.is_distance else "score"
        return {key: self.value, "threshold": self.threshold, "same": self.same, "rule": self.rule}


@torch.no_grad()
def verify(model: AnyTwin, a: Input, b: Input, threshold: float | None = None) -> Verification:
    """Compare two inputs; decide with ``threshold`` (native scale) or the model's calibration."""
    spec = model.config.input if model.config else None
    xa = read_input(a, spec) if spec else torch.as_tensor(a).float()
    xb = read_input(b, model.config.input_b or spec) if spec else torch.as_tensor(b).float()
    device = model_device(model)
    model.eval()
    value = float(model(xa.unsqueeze(0).to(device), xb.unsqueeze(0).to(device))[0])
    is_distance = model.comparator.is_distance
    rule = "same if distance <= threshold" if is_distance else "same if score >= threshold"
    if threshold is None and model.calibration is not None:
        threshold = model.calibration.native_threshold()
    same = None if threshold is None else (value <= threshold if is_distance else value >= threshold)
    return Verification(value, is_distance, threshold, same, rule)


def embed_files(
    model_path: str | Path, inputs: Sequence[str | Path], out_file: str | Path, batch_size: int = 256
) -> tuple[int, int]:
    """Embed files (folders expand to their files) with a saved model; write ``out_file`` (.npy,
    float32, one row per input) and ``out_file`` + ``.txt`` (the input names, one per line),
    each written to a temporary file and renamed."""
    import os

    from twinnet.io import load

    model = load(model_path)
    files = expand_inputs(inputs)
    spec = _spec(model)
    rows = []
    for i in range(0, len(files), batch_size):
        batch = torch.stack([read_input(f, spec) for f in files[i : i + batch_size]])
        rows.append(embed(model, batch, batch_size))
    array = torch.cat(rows).numpy().astype(np.float32)
    out_file = Path(out_file)
    if out_file.suffix != ".npy":
        raise DataError(f"--out {out_file}: the embeddings file must end in .npy")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, out_file)
    names = out_file.with_suffix(".txt")
    tmp_names = names.with_name(f".{names.name}.tmp")
    tmp_names.write_text("".join(f"{p}\n" for p in files), encoding="utf-8")
    os.replace(tmp_names, names)
    return array.shape[0], array.shape[1]
