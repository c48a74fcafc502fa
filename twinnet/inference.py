"""Using a trained model: read inputs as the model expects them, embed, score, verify.

:func:`score` is the one place a pair of embeddings becomes what a decision is made on: the
comparator's native values and, for a model that carries a cohort normaliser
(:func:`twinnet.normalize.normalizer_of`), the normalised scores beside them. :func:`decide` picks
the one the operating point was fitted on (its ``scale``), so callers (``twinnet verify``, the
gallery, the service) never branch on whether a model normalises."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twinnet.calibrate import NATIVE, scale_orientation
from twinnet.compare import Orientation
from twinnet.config import InputSpec
from twinnet.data.images import is_image_file, load_image, to_float
from twinnet.data.text import read_utf8
from twinnet.embedding import embed_batches, embed_texts
from twinnet.errors import ConfigError, DataError, ModelFormatError
from twinnet.model import AnyTwin, Side
from twinnet.normalize import ScoreNormalizer, normalizer_of

__all__ = ["Scores", "Verification", "decide", "embed", "embed_files", "embed_texts", "read_input", "score", "verify"]

Input = str | Path | torch.Tensor | np.ndarray


def is_input_file(path: Path) -> bool:
    """Whether a file in a folder of inputs is one: an image, a recording, or a ``.npy`` array."""
    from twinnet.data.audio import is_audio_file

    return path.is_file() and (is_image_file(path) or is_audio_file(path) or path.suffix == ".npy")


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the input files inside any folder (sorted, recursively)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if is_input_file(f))
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
    if spec.kind == "audio":  # a recording of any length: (samples,) at the model's rate
        from twinnet.data.audio import load_audio

        wave = load_audio(item, spec) if isinstance(item, (str, Path)) else torch.as_tensor(item).float()
        if wave.dim() != 1 or len(wave) == 0:
            raise DataError(f"{item if isinstance(item, (str, Path)) else 'input'}: an audio model takes "
                            f"one waveform (samples,), not shape {tuple(wave.shape)}")  # fmt: skip
        return wave
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


def check_batch_size(batch_size: int, field: str = "batch_size") -> int:
    """``batch_size`` when it is a whole number ≥ 1, else a :class:`ConfigError` naming ``field``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"{field}: must be a whole number of at least 1, not {batch_size!r}")
    return batch_size


def check_finite_embeddings(z: torch.Tensor, names: Sequence[str] | None = None) -> torch.Tensor:
    """``z`` when every embedding is finite; else a :class:`DataError` naming the inputs whose rows
    are not. A NaN embedding compares as "different" to everything and prints as invalid JSON, so
    it must never become an answer; it comes from corrupt weights (or an input that overflows)."""
    bad = (~torch.isfinite(z.reshape(len(z), -1))).any(1) if len(z) else torch.zeros(0, dtype=torch.bool)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        label = [names[i] if names is not None and i < len(names) else f"input {i + 1}" for i in rows[:3]]
        more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
        raise DataError(f"the model produced non-finite embeddings for {', '.join(label)}{more}: "
                        "its weights may be corrupt")  # fmt: skip
    return z


def _names(inputs: Sequence[Input], texts: bool) -> list[str]:
    """How errors name each input: files by path, texts and tensors by position."""
    if texts:
        return [f"text {n + 1}" for n in range(len(inputs))]
    return [str(i) if isinstance(i, (str, Path)) else f"input {n + 1}" for n, i in enumerate(inputs)]


@torch.no_grad()
def embed(
    model: AnyTwin,
    inputs: Sequence[Input] | torch.Tensor,
    batch_size: int = 256,
    side: Side = "a",
    *,
    names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Embeddings of files, tensors or (for text models) texts, batched, on the CPU.
    ``side="b"`` uses a half-twin's second encoder. Non-finite embeddings are a :class:`DataError`
    naming the inputs (by ``names`` when given)."""
    check_batch_size(batch_size)
    if isinstance(inputs, torch.Tensor):
        return check_finite_embeddings(embed_batches(model, inputs, side=side, batch_size=batch_size), names)
    if names is None:
        names = _names(inputs, model.takes_texts(side))
    if model.takes_texts(side):
        spec = model.input_spec(side)
        texts = [read_input(t, spec) for t in inputs]
        return check_finite_embeddings(embed_batches(model, texts, side=side, batch_size=batch_size), names)  # type: ignore[arg-type]
    if any(isinstance(i, (str, Path)) for i in inputs):
        spec = model.input_spec(side)
        tensors = [read_input(i, spec) for i in inputs]
        shapes = {tuple(t.shape) for t in tensors if isinstance(t, torch.Tensor)}
        if len(shapes) > 1:  # e.g. recordings of different lengths: one at a time
            rows = [
                embed_batches(model, t[None], side=side, batch_size=1) for t in tensors if isinstance(t, torch.Tensor)
            ]
            return check_finite_embeddings(torch.cat(rows), names)
        batch = torch.stack(tensors)  # type: ignore[arg-type]
    else:
        batch = torch.stack([torch.as_tensor(i).float() for i in inputs])
    return check_finite_embeddings(embed_batches(model, batch, side=side, batch_size=batch_size), names)


@dataclass
class Verification:
    value: float
    """The comparator's native value: a distance, or a probability of "same"."""
    orientation: Orientation
    threshold: float | None
    same: bool | None
    notes: list[str] = field(default_factory=list)
    """E.g. that a text was longer than the model's ``max_length`` and was truncated."""
    operating_point: str | None = None
    """The model's operating point the threshold came from; None for an explicit threshold (or none)."""
    normalized: float | None = None
    """The cohort-normalised score (a similarity), for a model that carries a normaliser."""
    normalization: str | None = None
    """That normaliser's scale (``snorm``, …)."""
    scale: str = NATIVE
    """What the threshold was applied to: ``native`` (``value``) or the normaliser's scale (``normalized``)."""

    @property
    def rule(self) -> str:
        if self.scale == NATIVE:
            return self.orientation.rule
        return f"same if {self.scale}-normalised score >= threshold"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.orientation.value_name: self.value}
        if self.normalization is not None:
            out.update(normalized_score=self.normalized, normalization=self.normalization)
        out.update(threshold=self.threshold, operating_point=self.operating_point, same=self.same, rule=self.rule,
                   scale=self.scale)  # fmt: skip
        if self.notes:
            out["notes"] = self.notes
        return out


@dataclass(frozen=True)
class Scores:
    """What row pairs of embeddings scored: ``native`` comparator values and, for a model with a
    cohort normaliser, its ``normalized`` scores (similarities) and their ``scale``."""

    native: np.ndarray
    normalized: np.ndarray | None = None
    scale: str | None = None
    fingerprint: str | None = None
    """The normaliser's cohort fingerprint (a point fitted on another cohort does not apply)."""

    def on(self, scale: str) -> np.ndarray:
        """The values on ``scale`` (``native``, or the normaliser's)."""
        if scale == NATIVE:
            return self.native
        if self.normalized is None or scale != self.scale:
            have = "no normaliser" if self.scale is None else f"a {self.scale} normaliser"
            raise ConfigError(f"the operating point was fitted on {scale}-normalised scores, but this model has "
                              f"{have}; re-calibrate it (twinnet calibrate)")  # fmt: skip
        return self.normalized


def point_normalizer(model: AnyTwin, operating_point: str | None) -> ScoreNormalizer | None:
    """The cohort normaliser the model's ``operating_point`` decides with: None for a point on the
    native scale (or a model without calibration); a :class:`ConfigError` when the point was fitted
    on normalised scores and the model has no normaliser of that kind, or one of another cohort."""
    calibration = getattr(model, "calibration", None)
    if calibration is None:
        return None
    name = calibration.resolve(operating_point)
    point = calibration.points[name]
    if point.scale == NATIVE:
        return None
    normalizer = normalizer_of(model)
    cohort = point.provenance.settings.get("cohort")
    if normalizer is None or normalizer.scale != point.scale:
        have = "no normaliser" if normalizer is None else f"a {normalizer.scale} normaliser"
        raise ConfigError(f"operating point {name!r} was fitted on {point.scale}-normalised scores, but this model "
                          f"has {have}; re-calibrate it (twinnet calibrate)")  # fmt: skip
    if cohort is not None and cohort != normalizer.fingerprint:
        raise ConfigError(f"operating point {name!r} was fitted with another cohort than this model's normaliser; "
                          "re-calibrate it (twinnet calibrate --normalize)")  # fmt: skip
    return normalizer


def check_operating_point(model: AnyTwin, operating_point: str | None) -> str | None:
    """The stored name of the model's ``operating_point`` (None: its default; None when the model
    has no calibration and none is asked), checked before any input is embedded: the errors of
    :func:`decide` (unknown name, no calibration, a normalised point the model cannot score)."""
    calibration = getattr(model, "calibration", None)
    if calibration is None:
        if operating_point is not None:
            raise ConfigError(f"operating point {operating_point!r}: the model has no calibration; "
                              "calibrate it first (twinnet calibrate)")  # fmt: skip
        return None
    name = calibration.resolve(operating_point)
    point_normalizer(model, name)
    return name


@torch.no_grad()
def score(model: AnyTwin, z_a: torch.Tensor | np.ndarray, z_b: torch.Tensor | np.ndarray) -> Scores:
    """Row pairs of embeddings (``z_a`` from side a, ``z_b`` from side b) scored: native values, and
    the normalised scores when the model carries a cohort normaliser."""
    a, b = (
        torch.as_tensor(np.asarray(z_a) if isinstance(z_a, np.ndarray) else z_a),
        torch.as_tensor(np.asarray(z_b) if isinstance(z_b, np.ndarray) else z_b),
    )
    native = compare_embeddings(model, a, b).numpy().astype(np.float64)
    normalizer = normalizer_of(model)
    if normalizer is None:
        return Scores(native)
    normalized = normalizer.normalize(native, a.cpu().numpy(), b.cpu().numpy())
    return Scores(native, normalized, normalizer.scale, normalizer.fingerprint)


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is not a real number or not finite."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def check_threshold(threshold: Any, field: str = "threshold") -> float | None:
    """``threshold`` as a float (``None`` stays ``None``), else a :class:`ConfigError` naming
    ``field``: a NaN threshold decides "different" for everything, an infinite one "same"."""
    if threshold is None:
        return None
    number = _finite(threshold)
    if number is None:
        raise ConfigError(f"{field}: {threshold!r} is not a finite number")
    return number


def decide(
    model: AnyTwin, value: float | Scores, threshold: float | None = None, operating_point: str | None = None
) -> Verification:
    """The decision for one pair: ``value`` is a native value or the pair's :class:`Scores` (from
    :func:`score`). At ``threshold`` (native scale), else at the threshold of the model's
    ``operating_point`` (None: its default), on that point's scale (the native value, or the
    normalised score for a point fitted on normalised scores), else undecided. A non-finite
    ``threshold`` is a :class:`ConfigError`, as is an unknown ``operating_point`` (the message lists
    the known ones), one asked of a model without calibration, or a point fitted on normalised scores
    of a model without that normaliser (or with another cohort); a non-finite ``value`` (corrupt
    weights) a :class:`DataError`, a non-finite calibrated threshold a :class:`ModelFormatError`."""
    threshold = check_threshold(threshold)
    # A bare value may be anything a caller hands in: it is checked before any array is built of it.
    raw = value.native[0] if isinstance(value, Scores) else value
    native = _finite(raw)
    if native is None:
        raise DataError(f"the model gave a non-finite {model.comparator.orientation.value_name} ({raw!r}): "
                        "its weights may be corrupt")  # fmt: skip
    scores = value if isinstance(value, Scores) else Scores(np.asarray([native], np.float64))
    name, scale, decided_on = None, NATIVE, native
    if threshold is None and model.calibration is None and operating_point is not None:
        raise ConfigError(f"operating point {operating_point!r}: the model has no calibration; "
                          "calibrate it first (twinnet calibrate)")  # fmt: skip
    if threshold is None and model.calibration is not None:
        name = model.calibration.resolve(operating_point)
        point = model.calibration.points[name]
        scale = point.scale
        if scale != NATIVE and scores.scale is not None:  # the model's own scores: check its normaliser fits
            point_normalizer(model, name)
        picked = _finite(scores.on(scale)[0])
        if picked is None:
            raise DataError(f"the model gave a non-finite {scale} score: its weights or normaliser may be corrupt")
        decided_on = picked
        calibrated = point.threshold
        threshold = _finite(calibrated)
        if threshold is None:
            raise ModelFormatError(f"the model's calibrated threshold is {calibrated!r}, not a finite number: "
                                   "its calibration may be corrupt")  # fmt: skip
    orientation = scale_orientation(model.comparator.orientation, scale)
    same = None if threshold is None else bool(orientation.matches(decided_on, threshold))
    normalized = None if scores.normalized is None else _finite(scores.normalized[0])
    return Verification(native, model.comparator.orientation, threshold, same, operating_point=name,
                        normalized=normalized, normalization=scores.scale, scale=scale)  # fmt: skip


@torch.no_grad()
def compare_embeddings(model: AnyTwin, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Native comparator values of row pairs of embeddings (on the CPU)."""
    device = model.device
    return model.comparator(z_a.to(device), z_b.to(device)).float().cpu()


@torch.no_grad()
def verify(
    model: AnyTwin, a: Input, b: Input, threshold: float | None = None, operating_point: str | None = None
) -> Verification:
    """Compare two inputs (``a`` through side a, ``b`` through side b); decide with ``threshold``
    (native scale), else at the model's ``operating_point`` (None: its default)."""
    threshold = check_threshold(threshold)
    if threshold is None:  # an unknown name fails before any embedding
        check_operating_point(model, operating_point)
    z_a = embed(model, [a] if not isinstance(a, torch.Tensor) else a.unsqueeze(0), side="a", names=["A"])
    z_b = embed(model, [b] if not isinstance(b, torch.Tensor) else b.unsqueeze(0), side="b", names=["B"])
    result = decide(model, score(model, z_a, z_b), threshold, operating_point)
    for name, x, side in (("A", a, "a"), ("B", b, "b")):
        if isinstance(x, str) and model.takes_texts(side):  # type: ignore[arg-type]
            result.notes += truncation_notes(model, {name: x}, side)  # type: ignore[arg-type]
    return result


def truncation_notes(model: AnyTwin, texts: dict[str, str], side: Side = "a") -> list[str]:
    """A note for each named text longer than the encoder's ``max_length`` (it was truncated)."""
    encoder = model.encoder_for(side)
    limit = getattr(encoder, "max_length", None)
    count_tokens = getattr(encoder, "count_tokens", None)  # text encoders that truncate say how
    if limit is None or not callable(count_tokens):
        return []
    counts = count_tokens(list(texts.values()))
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
    model_path: str | Path, inputs: Sequence[str | Path], out_file: str | Path, batch_size: int = 256,
    *, runtime: str = "torch",
) -> tuple[int, int]:  # fmt: skip
    """Embed files (folders expand to their files) with a saved model; write ``out_file`` (.npy,
    float32, one row per input) and ``out_file`` + ``.txt`` (the input names, one per line),
    each written to a temporary file and renamed. For a text model each input file holds texts,
    one per line (UTF-8), and each line is an input, named ``FILE:LINE``."""
    import os

    from twinnet.io import load

    check_batch_size(batch_size, "--batch-size")
    out_file = Path(out_file)
    if out_file.suffix != ".npy":
        raise DataError(f"--out {out_file}: the embeddings file must end in .npy")
    model = load(model_path, runtime=runtime)
    names: list[str] | list[Path]
    if model.takes_texts("a"):
        texts, names = read_text_lines(inputs)
        array = embed(model, texts, batch_size, names=names).numpy().astype(np.float32)
    else:
        files = names = expand_inputs(inputs)
        rows = []
        for i in range(0, len(files), batch_size):
            chunk = files[i : i + batch_size]
            rows.append(embed(model, chunk, batch_size, names=list(map(str, chunk))))
        array = torch.cat(rows).numpy().astype(np.float32)
    if not np.isfinite(array).all():  # finite in float32 too: a huge value overflows to inf when cast
        check_finite_embeddings(torch.from_numpy(array), list(map(str, names)))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, out_file)
    names_file = out_file.with_suffix(".txt")
    tmp_names = names_file.with_name(f".{names_file.name}.tmp")
    tmp_names.write_text("".join(f"{p}\n" for p in names), encoding="utf-8")
    os.replace(tmp_names, names_file)
    return array.shape[0], array.shape[1]
