"""Training-time augmentation of recordings, on batches inside the model's frontend (so it runs
where the model runs, CPU or GPU): random crops, gain, speed perturbation, additive Gaussian noise
and other speakers of the batch mixed in at a low level, both at a random SNR; SpecAugment time and
frequency masks on the features. Only active while the model trains (``model.train()``).

Room and microphone differ from speaker to speaker in small corpora recorded at home, so a model
can learn the channel instead of the voice; noise, gain and babble at random levels make the
channel a poorer cue."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"augment.{name}: the smaller value comes first, not [{low}, {high}]")
    return low, high


class AudioAugment(nn.Module):
    """Random distortions of a batch of waveforms ``(batch, samples)`` and of its features.

    Args:
        crop: the batch is cut to a random length in this range of seconds (each item at a random
            start); ``None``: no crop.
        gain_db: each item's level is changed by a uniform ``±gain_db``.
        speed: speed perturbation (tempo and pitch, as ``sox speed``): one factor per batch in this
            range, with probability ``speed_p``.
        noise_snr: Gaussian noise at a random SNR in this range (dB), with probability ``noise_p``.
        babble_snr: another item of the batch (another speaker in a P×K batch) mixed in at a random
            SNR in this range (dB), with probability ``babble_p``.
        time_masks, time_mask_frames, freq_masks, freq_mask_bins: SpecAugment: this many masks of
            up to that many frames / mel bins set to zero (the normalised mean).
    """

    def __init__(self, sample_rate: int = 16000, crop: Sequence[float] | None = (0.6, 1.0), gain_db: float = 6.0,
                 speed: Sequence[float] = (0.9, 1.1), speed_p: float = 0.5,
                 noise_snr: Sequence[float] = (5.0, 30.0), noise_p: float = 0.5,
                 babble_snr: Sequence[float] = (10.0, 25.0), babble_p: float = 0.3,
                 time_masks: int = 2, time_mask_frames: int = 8, freq_masks: int = 2,
                 freq_mask_bins: int = 8) -> None:  # fmt: skip
        super().__init__()
        self.sample_rate = sample_rate
        self.crop = _pair(crop, "crop") if crop is not None else None
        self.gain_db, self.speed, self.speed_p = float(gain_db), _pair(speed, "speed"), float(speed_p)
        self.noise_snr, self.noise_p = _pair(noise_snr, "noise_snr"), float(noise_p)
        self.babble_snr, self.babble_p = _pair(babble_snr, "babble_snr"), float(babble_p)
        self.time_masks, self.time_mask_frames = int(time_masks), int(time_mask_frames)
        self.freq_masks, self.freq_mask_bins = int(freq_masks), int(freq_mask_bins)
        for name in ("speed_p", "noise_p", "babble_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augment.{name} must be a probability in [0, 1]")

    def _uniform(self, n: int, bounds: tuple[float, float], device: torch.device) -> torch.Tensor:
        return torch.empty(n, 1, device=device).uniform_(*bounds)

    def wave(self, x: torch.Tensor) -> torch.Tensor:
        n, length = x.shape
        dev = x.device
        if self.speed_p and float(torch.rand(())) < self.speed_p:
            factor = float(torch.empty(()).uniform_(*self.speed))
            x = F.interpolate(x[:, None], size=max(2, round(length / factor)), mode="linear", align_corners=False)[:, 0]
            length = x.shape[1]
        if self.crop is not None:
            want = round(float(torch.empty(()).uniform_(*self.crop)) * self.sample_rate)
            if 0 < want < length:
                starts = torch.randint(0, length - want + 1, (n,), device=dev)
                x = x.gather(1, starts[:, None] + torch.arange(want, device=dev)[None])
        power = x.square().mean(1, keepdim=True).clamp_min(1e-10)
        if self.babble_p and n > 1:
            other = x.roll(n // 2, 0)
            snr = self._uniform(n, self.babble_snr, dev)
            scale = (power / (other.square().mean(1, keepdim=True).clamp_min(1e-10) * 10 ** (snr / 10))).sqrt()
            use = (torch.rand(n, 1, device=dev) < self.babble_p).float()
            x = x + use * scale * other
        if self.noise_p:
            snr = self._uniform(n, self.noise_snr, dev)
            use = (torch.rand(n, 1, device=dev) < self.noise_p).float()
            x = x + use * torch.randn_like(x) * (power / 10 ** (snr / 10)).sqrt()
        if self.gain_db:
            x = x * 10 ** (self._uniform(n, (-self.gain_db, self.gain_db), dev) / 20)
        return x

    def spec(self, feats: torch.Tensor) -> torch.Tensor:
        n, bins, frames = feats.shape
        dev = feats.device
        keep = torch.ones_like(feats)
        for count, width, size, axis in ((self.time_masks, self.time_mask_frames, frames, 2),
                                         (self.freq_masks, self.freq_mask_bins, bins, 1)):  # fmt: skip
            steps = torch.arange(size, device=dev)
            for _ in range(count):
                w = torch.randint(0, width + 1, (n, 1), device=dev)
                start = (torch.rand(n, 1, device=dev) * (size - w).clamp_min(1)).long()
                m = (steps[None] >= start) & (steps[None] < start + w)
                keep = keep * (~m[:, None, :] if axis == 2 else ~m[:, :, None]).float()
        return feats * keep
