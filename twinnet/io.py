"""Saving and loading models and training state: safetensors for tensors, JSON for the rest.

Nothing here unpickles. Directories are written under a temporary name beside the target and
renamed into place only when complete, and a manifest with every file's SHA-256 is written last:
a crash leaves either the old directory or the new one, never a half-written one that loads.

Saved model layout::

    MODEL/
      twinnet.json          manifest: format, version, files and their SHA-256 (written last)
      config.json           the ModelConfig (encoder, comparator, input spec)
      weights.safetensors   the parameters and buffers
      calibration.json      decision thresholds chosen on validation data (optional)
      metrics.json          validation metrics of this model (optional)
      normalizer.json       a cohort score normaliser (optional; twinnet.normalize), with
      normalizer.safetensors  its cohort and cached template statistics
      assets/encoder/       what an encoder needs besides weights (text models: tokenizer files,
      assets/encoder_b/     the transformer's architecture, a vocabulary), as JSON/text files
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from twinnet._version import __version__
from twinnet.calibrate import Calibration
from twinnet.config import ModelConfig, format_validation_error
from twinnet.errors import ConfigError, ModelFormatError
from twinnet.model import AnyTwin, build_model, encoders_by_role
from twinnet.normalize import META as NORMALIZER_META
from twinnet.normalize import load_normalizer, save_normalizer
from twinnet.registry import RUNTIMES

FORMAT = "twinnet-model"
FORMAT_VERSION = 1
MANIFEST = "twinnet.json"
WEIGHTS = "weights.safetensors"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes): the model's identity,
    independent of how or where its file was written."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
        _fsync_dir(tmp)
        if target.exists() and _exchange(tmp, target):
            _fsync_dir(target.parent)
            shutil.rmtree(tmp, ignore_errors=True)  # now holds the previous version
        else:
            old = None
            if target.exists():  # no atomic exchange here: rename aside; load() recovers from `.old`
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
            os.rename(tmp, target)
            _fsync_dir(target.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_manifest(directory: Path, kind: str = FORMAT, extra: dict[str, Any] | None = None) -> None:
    files = {
        f.relative_to(directory).as_posix(): sha256_file(f)
        for f in sorted(directory.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }
    write_json(
        directory / MANIFEST,
        {
            "format": kind,
            "format_version": FORMAT_VERSION,
            "twinnet_version": __version__,
            "files": files,
            **(extra or {}),
        },
    )


def read_manifest(directory: Path, kind: str = FORMAT, verify: bool = True) -> dict[str, Any]:
    """Check that ``directory`` is a complete, uncorrupted twinnet directory of ``kind``."""
    if not directory.exists():
        raise ModelFormatError(f"model directory not found: {directory}")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelFormatError(
            f"{directory}: incomplete or not a twinnet model (no {MANIFEST}; it is written last, so an "
            "interrupted save leaves none)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{manifest_path}: not valid JSON ({err})") from None
    if manifest.get("format") != kind:
        raise ModelFormatError(f"{directory}: a {manifest.get('format')!r} directory, expected {kind!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{directory}: format version {version} is not supported by twinnet {__version__} "
            f"(reads versions up to {FORMAT_VERSION}; made by twinnet {manifest.get('twinnet_version')})"
        )
    for name, digest in manifest.get("files", {}).items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelFormatError(f"{manifest_path}: file name {name!r} points outside the model directory")
        f = directory / name
        if not f.is_file():
            raise ModelFormatError(f"{directory}: incomplete, {name} is missing")
        if verify and sha256_file(f) != digest:
            raise ModelFormatError(f"{f}: corrupt or modified (SHA-256 differs from {MANIFEST})")
    return manifest


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory, or a training run directory holding one in ``model/``.

    Where rename-exchange is unavailable, a crash between the two renames of a replacing save
    leaves the previous version as ``.NAME.old-*`` beside a missing ``NAME``: it is used then.
    """
    path = Path(path)
    if not (path / MANIFEST).exists() and (path / "model" / MANIFEST).exists():
        return path / "model"
    if not path.exists():
        previous = sorted(path.parent.glob(f".{path.name}.old-*/{MANIFEST}")) if path.parent.exists() else []
        if previous:
            return previous[-1].parent
    return path


def save(
    model: AnyTwin,
    path: str | Path,
    *,
    calibration: Calibration | None = None,
    metrics: dict[str, Any] | None = None,
    config: ModelConfig | None = None,
) -> Path:
    """Save ``model`` (with its calibration, metrics and cohort ``normalizer``, when it has them) as a
    directory, atomically."""
    config = config or model.config
    if config is None:
        raise ConfigError(
            "this network has no ModelConfig, so it could not be rebuilt on load: register its encoder "
            "with twinnet.register_encoder and build it with twinnet.build_model, or pass config="
        )
    calibration = calibration or getattr(model, "calibration", None)
    metrics = metrics if metrics is not None else getattr(model, "metrics", None)
    path = Path(path)
    with atomic_directory(path) as tmp:
        save_model(model, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        write_companions(model, tmp, config, calibration, metrics)
        write_manifest(tmp)
    model.fingerprint = weights_fingerprint(model)
    return path


def write_companions(
    model: AnyTwin, tmp: Path, config: ModelConfig, calibration: Calibration | None, metrics: dict[str, Any] | None
) -> None:
    """Everything a saved model holds besides its weights: config, encoder assets (tokenizers,
    vocabularies), calibration, metrics and cohort normaliser (also written by an ONNX export)."""
    write_json(tmp / "config.json", config.model_dump(mode="json"))
    for role, encoder in encoders_by_role(model).items():
        export = getattr(encoder, "export_assets", None)  # encoders with files besides weights (text)
        if callable(export):
            export(tmp / "assets" / role)
    if calibration is not None:
        write_json(tmp / "calibration.json", calibration.to_json())
    if metrics:
        write_json(tmp / "metrics.json", metrics)
    normalizer = getattr(model, "normalizer", None)
    if normalizer is not None:
        save_normalizer(normalizer, tmp)


def load(
    path: str | Path, *, device: str | torch.device = "cpu", verify: bool = True, runtime: str = "torch"
) -> AnyTwin:
    """Load a saved model directory (or a run directory's ``model/``), ready for inference.

    The returned network carries ``calibration``, ``metrics``, ``normalizer`` (a
    :class:`~twinnet.normalize.ScoreNormalizer`, or None) and ``fingerprint``
    (:func:`weights_fingerprint`). Errors name what is missing, corrupt or incompatible.
    ``runtime`` names a registered runtime (:data:`twinnet.registry.RUNTIMES`): ``torch`` (this
    module), or ``onnx`` for a directory written by ``twinnet export`` (:mod:`twinnet.onnx`): the
    same model class, its encoders run by ONNX Runtime, no torch weights of the encoders needed.
    """
    loader = RUNTIMES.get(runtime, field="runtime")
    return loader(path, device=device, verify=verify)


@RUNTIMES.register("torch")
def load_torch(path: str | Path, *, device: str | torch.device = "cpu", verify: bool = True) -> AnyTwin:
    """The ``torch`` runtime of :func:`load`: the encoders' safetensors weights into the model class."""
    directory = resolve_model_dir(path)
    if (directory / "onnx.json").is_file() and not (directory / WEIGHTS).exists():
        raise ModelFormatError(f"{directory}: an ONNX export (no torch weights): load it with runtime='onnx' "
                               "(--runtime onnx)")  # fmt: skip
    read_manifest(directory, verify=verify)
    config = read_model_config(directory)
    try:
        model = build_model(config, assets=directory / "assets")
    except ConfigError as err:
        raise ModelFormatError(f"{directory}: cannot rebuild the model: {err}") from None
    try:
        missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ModelFormatError(f"{directory / WEIGHTS}: cannot read weights ({err})") from None
    # Shared sub-modules (half-twins) appear under two names; safetensors keeps one of them and
    # may report the other as unexpected although the model has it.
    own = set(model.state_dict())
    unexpected = [k for k in unexpected if k not in own]
    if missing or unexpected:
        raise ModelFormatError(
            f"{directory / WEIGHTS}: weights do not fit the configured model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    read_companions(model, directory)
    model.fingerprint = weights_fingerprint(model)
    return model.to(device).eval()


def read_model_config(directory: Path) -> ModelConfig:
    """The ``config.json`` of a saved model (or ONNX export) directory."""
    try:
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        return ModelConfig.model_validate(raw)
    except FileNotFoundError:
        raise ModelFormatError(f"{directory}: incomplete, config.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{directory}/config.json: not valid JSON ({err})") from None
    except ValidationError as err:
        raise ModelFormatError(format_validation_error(err, f"{directory}/config.json")) from None


def read_companions(model: AnyTwin, directory: Path) -> None:
    """Attach what :func:`write_companions` wrote besides the config: calibration, metrics, normaliser."""
    cal = directory / "calibration.json"
    if cal.exists():
        model.calibration = Calibration.from_json(json.loads(cal.read_text(encoding="utf-8")))
    met = directory / "metrics.json"
    if met.exists():
        model.metrics = json.loads(met.read_text(encoding="utf-8"))
    normalizer = load_normalizer(directory, model.comparator) if (directory / NORMALIZER_META).exists() else None
    model.normalizer = normalizer  # type: ignore[assignment]


# -- training state: nested dicts/lists of tensors and plain values -----------------------------


def _split_tree(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _split_tree(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split_tree(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    return obj


def _join_tree(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        return {k: _join_tree(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_join_tree(v, tensors) for v in obj]
    return obj


def save_tree(obj: Any, directory: Path, name: str) -> None:
    """Write a nested structure (e.g. an optimizer ``state_dict``) as ``name.json`` + ``name.safetensors``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tree(obj, tensors, "")
    save_file(tensors, str(directory / f"{name}.safetensors"))
    write_json(directory / f"{name}.json", skeleton)


def load_tree(directory: Path, name: str) -> Any:
    tensors = load_file(str(directory / f"{name}.safetensors"))
    skeleton = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    return _join_tree(skeleton, tensors)


def save_module_weights(module: nn.Module, path: Path) -> None:
    save_model(module, str(path))


def load_module_weights(module: nn.Module, path: Path) -> None:
    load_model(module, str(path), strict=True)


def init_encoders(model: AnyTwin, path: str | Path, *, field: str = "init_from") -> None:
    """Start ``model``'s encoders from those of the saved model at ``path`` (pretrained, e.g.
    without labels, then fine-tuned): each encoder takes the weights of the saved encoder of the
    same role; a saved twin's one encoder starts both towers of a half-twin. The comparator, the
    calibration and any loss heads are not copied. Encoders that differ are a ConfigError naming
    ``field`` and the weights that differ."""
    try:
        source = load_torch(path)
    except (ModelFormatError, FileNotFoundError) as err:
        raise ConfigError(f"{field}: {err}") from None
    theirs = encoders_by_role(source)
    for role, encoder in encoders_by_role(model).items():
        donor = theirs.get(role, theirs["encoder"])
        mine, given = encoder.state_dict(), donor.state_dict()
        missing = sorted(set(mine) - set(given))
        extra = sorted(set(given) - set(mine))
        shapes = sorted(k for k in set(mine) & set(given) if mine[k].shape != given[k].shape)
        if missing or extra or shapes:
            parts = [f"missing {', '.join(missing[:3])}" if missing else "",
                     f"unexpected {', '.join(extra[:3])}" if extra else ""]  # fmt: skip
            parts += [f"{k}: {tuple(given[k].shape)} vs {tuple(mine[k].shape)}" for k in shapes[:3]]
            detail = "; ".join(p for p in parts if p)
            raise ConfigError(f"{field}: {path}: its {role} is not this model's ({detail})")
        encoder.load_state_dict(given)
