"""Using a trained model: read inputs as the model expects them, embed, verify."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twinnet.config import InputSpec
from twinnet.data.images import is_image_file, load_image, to_float
from twinnet.data.text import read_utf8
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


def read_input(item: Input, spec: InputSpec) -> torch.Tensor | str:
    """One input as a float tensor of the model's input shape (no batch dimension); for a text
    model, the text itself (a string is the text, not a file name)."""
    if spec.kind == "text":
        if not isinstance(item, str):
            raise DataError(f"a text model takes strings, got {type(item).__name__}")
        return item
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


def _side_encoder(model: AnyTwin, side: str) -> Any:
    if side not in ("a", "b"):
        raise ValueError("side must be 'a' or 'b'")
    return getattr(model, "encoder", None) or (model.encoder_a if side == "a" else model.encoder_b)


@torch.no_grad()
@torch.no_grad()  # worker threads set their own mode: grad mode is per thread
def embed_texts(
    model: AnyTwin, texts: Sequence[str], batch_size: int = 32, side: str = "a", prefetch: int = 2
) -> torch.Tensor:
    """Embeddings of ``texts`` on the CPU, in input order.

    Texts are encoded longest first, so each batch pads to similar lengths. On a CPU with several
    threads, batches are shared out to one worker per thread, each running its batches with a
    single intra-op thread (on 2 cores about 7% faster than one stream of 2-thread batches, whose
    small matrix products synchronise often); otherwise the next batches are tokenized on a
    background thread while the model runs. ``side="b"`` uses a half-twin's second (document) encoder.
    """
    texts = list(texts)
    encoder = _side_encoder(model, side)
    embed_side = model.embed_a if side == "a" else model.embed_b
    if not hasattr(encoder, "tokenize"):
        raise DataError("this model does not take texts")
    if not texts:
        return torch.zeros(0, int(getattr(encoder, "output_dim", 0)))
    lengths = [len(t) if isinstance(t, str) else 0 for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    dim = getattr(encoder, "output_dim", None)
    threads = torch.get_num_threads()
    workers = min(4, threads) if model_device(model).type == "cpu" and len(chunks) >= 4 else 1
    was_training = model.training
    model.eval()
    try:
        if workers > 1 and isinstance(dim, int):
            out = torch.empty(len(texts), dim)

            def work(k: int) -> None:
                torch.set_num_threads(max(1, threads // workers))  # this worker thread's own setting
                with torch.inference_mode():
                    for chunk in chunks[k::workers]:
                        z = embed_side(encoder.tokenize([texts[i] for i in chunk]))
                        out[torch.tensor(chunk)] = z.float().cpu()

            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(work, range(workers)))
            return out
        return _embed_prefetching(embed_side, encoder, texts, chunks, prefetch)
    finally:
        model.train(was_training)


def _embed_prefetching(
    embed_side: Any, encoder: Any, texts: list[str], chunks: list[list[int]], prefetch: int
) -> torch.Tensor:
    """One stream of batches; the next ``prefetch`` batches are tokenized on a background thread."""
    rows: list[torch.Tensor] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(encoder.tokenize, [texts[i] for i in c]) for c in chunks[:prefetch]]
        for n in range(len(chunks)):
            batch = pending[n].result()
            if n + prefetch < len(chunks):
                pending.append(pool.submit(encoder.tokenize, [texts[i] for i in chunks[n + prefetch]]))
            rows.append(embed_side(batch).float().cpu())
    out = torch.empty(len(texts), rows[0].shape[1])
    out[torch.tensor([i for c in chunks for i in c])] = torch.cat(rows)
    return out


def is_text_model(model: AnyTwin) -> bool:
    return model.config is not None and model.config.input.kind == "text"


@torch.no_grad()
def embed(
    model: AnyTwin, inputs: Sequence[Input] | torch.Tensor, batch_size: int = 256, side: str = "a"
) -> torch.Tensor:
    """Embeddings of files, tensors or (for text models) texts, batched, on the CPU.
    ``side="b"`` uses a half-twin's second encoder."""
    if is_text_model(model) and not isinstance(inputs, torch.Tensor):
        spec = model.config.input_b if side == "b" and model.config.input_b else model.config.input
        return embed_texts(model, [read_input(t, spec) for t in inputs], min(batch_size, 64), side)  # type: ignore[misc]
    if isinstance(inputs, torch.Tensor):
        batch = inputs
    else:
        spec = _spec(model) if any(isinstance(i, (str, Path)) for i in inputs) else None
        batch = torch.stack([read_input(i, spec) if spec else torch.as_tensor(i).float() for i in inputs])
    device = model_device(model)
    model.eval()
    embed_side = model.embed_a if side == "a" else model.embed_b
    return torch.cat([embed_side(batch[i : i + batch_size].to(device)).cpu() for i in range(0, len(batch), batch_size)])


@dataclass
class Verification:
    value: float
    """The comparator's native value: a distance, or a probability of "same"."""
    is_distance: bool
    threshold: float | None
    same: bool | None
    rule: str
    notes: list[str] = field(default_factory=list)
    """E.g. that a text was longer than the model's ``max_length`` and was truncated."""

    def to_dict(self) -> dict[str, Any]:
        key = "distance" if self.is_distance else "score"
        out = {key: self.value, "threshold": self.threshold, "same": self.same, "rule": self.rule}
        if self.notes:
            out["notes"] = self.notes
        return out


@torch.no_grad()
def verify(model: AnyTwin, a: Input, b: Input, threshold: float | None = None) -> Verification:
    """Compare two inputs; decide with ``threshold`` (native scale) or the model's calibration."""
    spec = model.config.input if model.config else None
    xa = read_input(a, spec) if spec else torch.as_tensor(a).float()
    xb = read_input(b, model.config.input_b or spec) if spec else torch.as_tensor(b).float()
    device = model_device(model)
    model.eval()
    notes = []
    if isinstance(xa, str):
        value = float(model([xa], [xb])[0])
        notes = truncation_notes(model, {"A": xa}, "a") + truncation_notes(model, {"B": xb}, "b")
    else:
        value = float(model(xa.unsqueeze(0).to(device), xb.unsqueeze(0).to(device))[0])
    is_distance = model.comparator.is_distance
    rule = "same if distance <= threshold" if is_distance else "same if score >= threshold"
    if threshold is None and model.calibration is not None:
        threshold = model.calibration.native_threshold()
    same = None if threshold is None else (value <= threshold if is_distance else value >= threshold)
    return Verification(value, is_distance, threshold, same, rule, notes)


def truncation_notes(model: AnyTwin, texts: dict[str, str], side: str = "a") -> list[str]:
    """A note for each named text longer than the encoder's ``max_length`` (it was truncated)."""
    encoder = _side_encoder(model, side)
    limit = getattr(encoder, "max_length", None)
    if limit is None or not hasattr(encoder, "count_tokens"):
        return []
    counts = encoder.count_tokens(list(texts.values()))
    return [f"{name}: {n} tokens, truncated to the model's max_length {limit}"
            for name, n in zip(texts, counts) if n > limit]  # fmt: skip


def read_text_lines(paths: Sequence[str | Path]) -> tuple[list[str], list[str]]:
    """The lines of UTF-8 text files as texts, and their names ``FILE:LINE``."""
    texts, names = [], []
    for p in map(Path, paths):
        lines = read_utf8(p, "input").splitlines()
        texts += lines
        names += [f"{p}:{n}" for n in range(1, len(lines) + 1)]
    if not texts:
        raise DataError("no texts in the input files")
    return texts, names


def embed_files(
    model_path: str | Path, inputs: Sequence[str | Path], out_file: str | Path, batch_size: int = 256
) -> tuple[int, int]:
    """Embed files (folders expand to their files) with a saved model; write ``out_file`` (.npy,
    float32, one row per input) and ``out_file`` + ``.txt`` (the input names, one per line),
    each written to a temporary file and renamed. For a text model each input file holds texts,
    one per line (UTF-8), and each line is an input, named ``FILE:LINE``."""
    import os

    from twinnet.io import load

    out_file = Path(out_file)
    if out_file.suffix != ".npy":
        raise DataError(f"--out {out_file}: the embeddings file must end in .npy")
    model = load(model_path)
    spec = _spec(model)
    if spec.kind == "text":
        texts, files = read_text_lines(inputs)
        array = embed(model, texts).numpy().astype(np.float32)
    else:
        files = expand_inputs(inputs)
        rows = []
        for i in range(0, len(files), batch_size):
            batch = torch.stack([read_input(f, spec) for f in files[i : i + batch_size]])
            rows.append(embed(model, batch, batch_size))
        array = torch.cat(rows).numpy().astype(np.float32)
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
