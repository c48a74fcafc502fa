"""Reading recordings: one folder per speaker of WAV/FLAC/OGG/MP3 files (``soundfile``), mixed to
mono and resampled to the model's rate (``scipy.signal.resample_poly``); trial lists in VoxCeleb's
format (``label enrol.wav test.wav``; the ``trials`` data format).

Every failure names the file: unreadable, empty, silent, or longer than ``model.input.max_seconds``
(checked from the header, before a sample is decoded). Features are computed inside the model
(:mod:`twinnet.audio.features`), so what is read here is the plain waveform, as ``verify``, the
gallery and the service read it too.

The ``audio`` data format reads ``ROOT/<speaker>/<clip>.flac``; each item also carries the
*utterance* it says (the file name without a trailing repetition number, ``yes_r01.flac`` → ``yes``)
as the item attribute ``utterance``, so text-dependent trials (same words) can be built.
"""

from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from twinnet.config import InputSpec
from twinnet.data.items import ItemSet
from twinnet.data.pairs import Pairs
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.errors import DataError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3"})
#: Peak amplitude (of full scale 1.0) below which a recording counts as silent (about −80 dBFS).
SILENCE_PEAK = 1e-4
_REPETITION = re.compile(r"([_\-.](r|rep|take)?\d+)$", re.IGNORECASE)


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _soundfile() -> Any:
    try:
        import soundfile
    except ImportError:  # pragma: no cover - the audio extra is missing
        raise DataError('reading audio needs the audio extra: pip install -e ".[audio]"') from None
    return soundfile


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: sample rate, channels, frames (samples per channel)."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(source: str | Path | bytes, name: str | Path = "audio") -> AudioInfo:
    """The header of a file (or of its bytes, e.g. an upload), without decoding the samples."""
    sf = _soundfile()
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise DataError(f"{name}: audio file not found")
    try:
        info = sf.info(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except FileNotFoundError:
        raise DataError(f"{name}: audio file not found") from None
    except (RuntimeError, sf.LibsndfileError, TypeError, ValueError, OSError) as err:
        raise DataError(f"{name}: not an audio file soundfile can read ({_short(err)})") from None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def check_duration(info: AudioInfo, name: str | Path, max_seconds: float) -> None:
    """A :class:`DataError` naming ``name`` when the header declares no samples or more than ``max_seconds``."""
    if info.frames <= 0 or info.sample_rate <= 0:
        raise DataError(f"{name}: empty recording (no samples)")
    if info.seconds > max_seconds:
        raise DataError(f"{name}: {info.seconds:.1f} s is over the limit of {max_seconds:g} s "
                        "(model.input.max_seconds)")  # fmt: skip


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``wave`` (1-D float) from ``rate`` to ``target`` Hz by polyphase filtering."""
    if rate == target:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(wave, target // g, rate // g).astype(np.float32)


def decode_audio(
    source: str | Path | bytes, sample_rate: int = 16000, max_seconds: float = 60.0, name: str | Path | None = None
) -> torch.Tensor:
    """A recording (a path, or a file's bytes) → float32 mono waveform at ``sample_rate``, in [-1, 1].

    The duration limit is checked from the header before decoding; an empty, silent or unreadable
    recording is a :class:`DataError` naming ``name`` (default: the path)."""
    name = name if name is not None else ("audio" if isinstance(source, bytes) else source)
    info = audio_info(source, name)
    check_duration(info, name, max_seconds)
    sf = _soundfile()
    handle: str | BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        data, rate = sf.read(handle, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError, ValueError, OSError) as err:
        raise DataError(f"{name}: unreadable or truncated audio ({_short(err)})") from None
    if data.size == 0:
        raise DataError(f"{name}: empty recording (no samples)")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise DataError(f"{name}: the recording holds non-finite samples")
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        raise DataError(f"{name}: silent recording (peak below {20 * math.log10(SILENCE_PEAK):.0f} dBFS)")
    wave = resample(np.ascontiguousarray(wave, dtype=np.float32), int(rate), sample_rate)
    return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))


def load_audio(path: str | Path, spec: InputSpec) -> torch.Tensor:
    """One recording as the model ``spec`` takes it: mono at ``spec.sample_rate``, any length."""
    return decode_audio(path, spec.sample_rate, spec.max_seconds, Path(path))


def fit_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """``wave`` cut to its middle ``length`` samples, or repeated up to ``length``."""
    n = len(wave)
    if n >= length:
        start = (n - length) // 2
        return wave[start : start + length]
    return wave.repeat(math.ceil(length / n))[:length]


def utterance_of(path: Path) -> str:
    """What a clip says, from its name: the stem without a trailing repetition (``yes_r02`` → ``yes``)."""
    return _REPETITION.sub("", path.stem) or path.stem


def scan_audio_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """``root/<speaker>/…/<clip>``: audio files, speaker ids, speaker names (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    paths = sorted(
        p for p in root.rglob("*") if p.is_file() and is_audio_file(p) and len(p.relative_to(root).parts) > 1
    )
    if not paths:
        raise DataError(f"{root}: no audio files in speaker sub-folders (expected {root}/<speaker>/<clip>.flac; "
                        f"formats {', '.join(sorted(AUDIO_EXTENSIONS))})")  # fmt: skip
    speakers = sorted({p.relative_to(root).parts[0] for p in paths})
    index = {s: i for i, s in enumerate(speakers)}
    return paths, np.asarray([index[p.relative_to(root).parts[0]] for p in paths], dtype=np.int64), speakers


def audio_folder(root: str | Path, spec: InputSpec, skip_bad: bool = False) -> ItemSet:
    """Labelled recordings, one sub-folder per speaker, decoded into memory as ``(N, length)``
    waveforms (``spec.length`` samples, default one second: longer clips cut to their middle,
    shorter ones repeated); the attribute ``utterance`` holds each clip's utterance id."""
    paths, labels, speakers = scan_audio_folder(root)
    length = int(spec.length or spec.sample_rate)
    waves, kept = [], []
    for i, p in enumerate(paths):
        try:
            waves.append(fit_length(load_audio(p, spec), length))
            kept.append(i)
        except DataError as err:
            if not skip_bad:
                raise DataError(f"{err} (set data.skip_bad_images: true, or --skip-bad, to leave it out)") from None
            log.warning("skipping %s", err)
    if not waves:
        raise DataError(f"{root}: no readable recordings")
    words = [utterance_of(paths[i]) for i in kept]
    vocabulary = {w: n for n, w in enumerate(sorted(set(words)))}
    return ItemSet(
        data=torch.stack(waves),
        labels=labels[kept],
        class_names=speakers,
        names=[str(paths[i]) for i in kept],
        attributes={"utterance": np.asarray([vocabulary[w] for w in words], dtype=np.int64)},
    )


@DATA_SOURCES.register("audio")
class AudioFolderSource(DataSource):
    """``ROOT/<speaker>/<clip>.{wav,flac,ogg,mp3}`` for an audio model (``model.input.kind: audio``)."""

    priority = 20

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        return spec.kind == "audio" and path.is_dir()

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        if spec.kind != "audio":
            raise DataError(f"{path}: the audio format needs an audio model (model.input.kind: audio)")
        return Dataset(audio_folder(path, spec, options.skip_bad), source=str(path))


@dataclass(frozen=True)
class Trial:
    """One line of a trial list: whether ``enrol`` and ``test`` are the same speaker."""

    target: bool
    enrol: Path
    test: Path


def read_trials(path: str | Path) -> list[Trial]:
    """A trial list as VoxCeleb's (``1 enrol.wav test.wav`` per line; 1/0, target/nontarget or
    true/false; paths relative to the list's folder). A bad line is a :class:`DataError` naming it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"trial list not found: {path}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file (a trial list has lines 'label enrol test')") from None
    labels = {"1": True, "0": False, "target": True, "nontarget": False, "true": True, "false": False}
    trials = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3:
            raise DataError(f"{path}:{n}: expected 'label enrol test', got {len(fields)} field(s)")
        label = labels.get(fields[0].lower())
        if label is None:
            raise DataError(f"{path}:{n}: label {fields[0]!r} is not 1/0 (target/nontarget)")
        enrol, test = ((path.parent / f) for f in fields[1:])
        trials.append(Trial(label, enrol, test))
    if not trials:
        raise DataError(f"{path}: no trials")
    if all(t.target for t in trials) or not any(t.target for t in trials):
        raise DataError(f"{path}: every trial is {'a target' if trials[0].target else 'a non-target'}; "
                        "a trial list needs both")  # fmt: skip
    return trials


@DATA_SOURCES.register("trials")
class TrialListSource(DataSource):
    """A trial list for an audio model (``label enrol.wav test.wav`` per line, paths relative to the
    list): its recordings as items (each labelled by its folder, the speaker in VoxCeleb's layout)
    and its trials as pairs. Recordings are held at full length, zero-padded to the longest (the
    padding is trimmed as silence by the model)."""

    priority = 20

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        if spec.kind != "audio" or not path.is_file() or path.suffix.lower() not in (".txt", ".lst", ".trials", ""):
            return False
        first: list[str] = []
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip() and not line.lstrip().startswith("#"):
                        first = line.split()
                        break
        except (OSError, UnicodeDecodeError):
            return False
        return len(first) == 3 and first[0].lower() in ("0", "1", "target", "nontarget", "true", "false")

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        trials = read_trials(path)
        files = sorted({t.enrol for t in trials} | {t.test for t in trials})
        index = {f: i for i, f in enumerate(files)}
        waves = [decode_audio(f, spec.sample_rate, spec.max_seconds) for f in files]
        longest = max(len(w) for w in waves)
        data = torch.zeros(len(waves), longest)
        for i, w in enumerate(waves):
            data[i, : len(w)] = w
        speakers = sorted({f.parent.name for f in files})
        labels = np.asarray([speakers.index(f.parent.name) for f in files])
        items = ItemSet(data=data, labels=labels, class_names=speakers, names=[str(f) for f in files])
        pairs = Pairs(np.asarray([index[t.enrol] for t in trials]), np.asarray([index[t.test] for t in trials]),
                      np.asarray([t.target for t in trials]))  # fmt: skip
        return Dataset(items, pairs, source=str(path))


def _short(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
