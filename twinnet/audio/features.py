"""Log-mel filterbank features computed in the model (``torch.stft``; CPU or GPU, batched), with
mean normalisation and energy-based voice-activity trimming.

The mel matrix is Slaney's (librosa's default: ``htk=False``, ``norm="slaney"``);
``tests/audio/test_features.py`` checks it and the spectrogram against ``librosa``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

_F_SP = 200.0 / 3  # Slaney's mel scale: linear below 1 kHz, logarithmic above
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    mel[log_part] = _MIN_LOG_MEL + np.log(hz[log_part] / _MIN_LOG_HZ) / _LOGSTEP
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = mel >= _MIN_LOG_MEL
    hz[log_part] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel[log_part] - _MIN_LOG_MEL))
    return hz


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters on Slaney's mel scale, area-normalised
    (equal to ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)``)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """Waveforms ``(batch, samples)`` → mel spectrograms ``(batch, n_mels, frames)``: a centred STFT
    (Hann window of ``win_length`` samples, hop ``hop_length``, zero padding), power, mel filters,
    then ``log(x + floor)`` (or the power mel itself with ``log=False``)."""

    window: torch.Tensor
    mel: torch.Tensor

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_length: int = 400, hop_length: int = 160,
                 n_mels: int = 80, log: bool = True, floor: float = 1e-6) -> None:  # fmt: skip
        super().__init__()
        self.n_fft, self.win_length, self.hop_length, self.log, self.floor = n_fft, win_length, hop_length, log, floor
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels)), persistent=False)

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """``(batch, n_fft // 2 + 1, frames)`` power spectrogram."""
        spec = torch.stft(wave, self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                          pad_mode="constant", return_complex=True)  # fmt: skip
        return spec.real.square() + spec.imag.square()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.mel, self.power(wave.float()))
        return torch.log(mel + self.floor) if self.log else mel


def voiced_mask(log_energy: torch.Tensor, threshold_db: float = 40.0, min_frames: int = 10) -> torch.Tensor:
    """Energy-based voice-activity trimming: ``(batch, frames)`` True from the first to the last frame
    whose energy is within ``threshold_db`` of the loudest frame (leading and trailing silence
    dropped); ``log_energy`` is the natural log of each frame's energy. Where fewer than
    ``min_frames`` would remain, every frame is kept."""
    db = log_energy * (10.0 / math.log(10.0))
    loud = db >= db.amax(dim=1, keepdim=True) - threshold_db
    steps = torch.arange(loud.shape[1], device=loud.device)
    first = torch.where(loud, steps, loud.shape[1]).amin(1, keepdim=True)
    last = torch.where(loud, steps, -1).amax(1, keepdim=True)
    mask = (steps >= first) & (steps <= last)
    short = mask.sum(1, keepdim=True) < min(min_frames, loud.shape[1])
    return mask | short


class AudioFrontend(nn.Module):
    """What every speaker encoder does first: (training only) waveform augmentation, log-mel
    features, voice-activity trimming, mean normalisation over the voiced frames, (training only)
    SpecAugment masks. ``forward`` gives ``(features (batch, n_mels, frames), mask (batch, frames))``.

    Args:
        sample_rate: the model's rate (from ``model.input.sample_rate``).
        n_mels, win_ms, hop_ms, n_fft: the filterbank (80 bins, 25 ms windows every 10 ms).
        vad_db: frames quieter than the loudest by more than this are trimmed from both ends
            (``None``: no trimming).
        mean_norm: subtract each mel bin's mean over the voiced frames (cepstral mean normalisation).
        augment: options of :class:`twinnet.audio.AudioAugment` (``None``: no augmentation).
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0,
                 n_fft: int = 512, vad_db: float | None = 40.0, mean_norm: bool = True,
                 augment: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        from twinnet.audio.augment import AudioAugment

        win, hop = round(sample_rate * win_ms / 1000), round(sample_rate * hop_ms / 1000)
        if win > n_fft:
            raise ValueError(f"n_fft ({n_fft}) must be at least the window ({win} samples)")
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.logmel = LogMel(sample_rate, n_fft, win, hop, n_mels)
        self.vad_db, self.mean_norm = vad_db, mean_norm
        self.augment = AudioAugment(sample_rate, **(augment or {})) if augment else None

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if wave.dim() == 1:
            wave = wave[None]
        if self.training and self.augment is not None:
            wave = self.augment.wave(wave)
        power_mel = torch.matmul(self.logmel.mel, self.logmel.power(wave.float()))
        feats = torch.log(power_mel + self.logmel.floor)
        if self.vad_db is not None:
            mask = voiced_mask(torch.log(power_mel.sum(1) + 1e-10), self.vad_db)
        else:
            mask = torch.ones(feats.shape[0], feats.shape[2], dtype=torch.bool, device=feats.device)
        if self.mean_norm:
            m = mask[:, None, :].float()
            mean = (feats * m).sum(2, keepdim=True) / m.sum(2, keepdim=True).clamp_min(1)
            feats = (feats - mean) * m
        if self.training and self.augment is not None:
            feats = self.augment.spec(feats)
        return feats, mask
