"""Speaker encoders: raw waveforms ``(batch, samples)`` in, one embedding per recording out.

Each owns its feature frontend (:class:`twinnet.audio.AudioFrontend`: log-mel filterbanks, voice
activity trimming, mean normalisation, training-time augmentation), so a saved model takes audio
as it is. Any length works at inference; padded or trimmed frames are masked out of the pooling.

- ``xvector``: the x-vector TDNN (Snyder et al. 2018): five dilated 1-D convolutions over the
  frames, mean and standard deviation pooled over time, then the embedding layer.
- ``ecapa``: a small ECAPA-TDNN (Desplanques et al. 2020): SE-Res2Net blocks with growing dilation,
  multi-layer feature aggregation and attentive statistics pooling.
- ``resemblyzer``: the GE2E speaker encoder of the ``resemblyzer`` package (Wan et al. 2018; a
  3-layer LSTM on 40 mel bins trained on thousands of speakers), its weights loaded from the
  package into the same network here; usable as shipped and fine-tuned as a twin.
  ``tests/encoders/test_speaker.py`` checks it against the package's own ``VoiceEncoder``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twinnet.audio.augment import AudioAugment
from twinnet.audio.features import AudioFrontend, LogMel, voiced_mask
from twinnet.encoders.registry import positive_int, register_encoder
from twinnet.errors import ConfigError


def masked_stats(h: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean and standard deviation of ``h`` ``(batch, channels, frames)`` over the frames in ``mask``
    ``(batch, frames)``, optionally weighted by ``weights`` (``(batch, channels, frames)``, each row
    summing to one over the masked frames): ``(batch, 2 * channels)``."""
    m = mask[:, None, :].to(h.dtype)
    if weights is None:
        weights = m / m.sum(2, keepdim=True).clamp_min(1)
    mean = (h * weights).sum(2)
    var = ((h - mean[:, :, None]).square() * weights).sum(2)
    return torch.cat([mean, var.clamp_min(1e-6).sqrt()], 1)


class FastConv1d(nn.Conv1d):
    """A 1-D convolution (``padding`` keeps the length, stride 1) computed as one matrix product over
    the ``kernel`` shifted copies of the input: on CPUs, much faster than torch's dilated-convolution
    path for the short inputs of speaker embeddings; the weights are a plain ``Conv1d``'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, inp, k = self.weight.shape
        if k == 1:
            h = torch.matmul(self.weight[:, :, 0], x)
        else:
            d, p, t = self.dilation[0], int(self.padding[0]), x.shape[2]
            padded = F.pad(x, (p, p))
            stacked = torch.cat([padded[:, :, i * d : i * d + t] for i in range(k)], 1)
            h = torch.matmul(self.weight.permute(0, 2, 1).reshape(out, k * inp), stacked)
        return h if self.bias is None else h + self.bias[:, None]


class _FrontendEncoder(nn.Module):
    """A frontend (waveform → masked log-mel frames) and a body (frames → embedding)."""

    def __init__(self, sample_rate: int, n_mels: int, embedding_dim: int, frontend: dict[str, Any] | None,
                 augment: dict[str, Any] | None) -> None:  # fmt: skip
        super().__init__()
        positive_int(sample_rate, "sample_rate")
        self.n_mels = positive_int(n_mels, "n_mels")
        self.output_dim = positive_int(embedding_dim, "embedding_dim")
        self.frontend = AudioFrontend(sample_rate, n_mels, **(frontend or {}), augment=augment)

    def body(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        feats, mask = self.frontend(wave)
        return self.body(feats, mask)


@register_encoder("xvector")
class XVectorEncoder(_FrontendEncoder):
    """The x-vector TDNN: frame layers with contexts 5, 3 (dilation 2), 3 (dilation 3), 1, 1, then
    statistics pooling and the embedding layer. ``channels`` is 512 in the paper."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, channels: int = 256, embedding_dim: int = 192,
                 frontend: dict[str, Any] | None = None, augment: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(sample_rate, n_mels, embedding_dim, frontend, augment)
        c = positive_int(channels, "channels")
        self.frames = nn.ModuleList(
            nn.Sequential(FastConv1d(n_mels if i == 0 else c, out, k, dilation=d, padding=d * (k // 2)), nn.ReLU(),
                          nn.BatchNorm1d(out))
            for i, (k, d, out) in enumerate(((5, 1, c), (3, 2, c), (3, 3, c), (1, 1, c), (1, 1, 3 * c)))
        )  # fmt: skip
        self.embedding = nn.Linear(6 * c, self.output_dim)

    def body(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None, :].to(feats.dtype)
        h = feats
        for layer in self.frames:
            h = layer(h) * m  # trimmed frames stay zero: they reach no voiced frame's context
        return self.embedding(masked_stats(h, mask))


class _SERes2Block(nn.Module):
    def __init__(self, channels: int, dilation: int, scale: int = 8, se: int = 128) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels ({channels}) must be a multiple of scale ({scale})")
        width = channels // scale
        self.scale = scale
        self.conv_in = nn.Sequential(FastConv1d(channels, channels, 1), nn.ReLU(), nn.BatchNorm1d(channels))
        self.convs = nn.ModuleList(
            nn.Sequential(FastConv1d(width, width, 3, dilation=dilation, padding=dilation), nn.ReLU(),
                          nn.BatchNorm1d(width))
            for _ in range(scale - 1)
        )  # fmt: skip
        self.conv_out = nn.Sequential(FastConv1d(channels, channels, 1), nn.ReLU(), nn.BatchNorm1d(channels))
        self.se = nn.Sequential(nn.Linear(channels, se), nn.ReLU(), nn.Linear(se, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None, :].to(x.dtype)
        h = self.conv_in(x) * m  # trimmed frames stay zero before every convolution with context
        chunks = torch.chunk(h, self.scale, dim=1)
        outs, y = [chunks[0]], None
        for conv, chunk in zip(self.convs, chunks[1:]):
            y = conv(chunk if y is None else chunk + y) * m
            outs.append(y)
        h = self.conv_out(torch.cat(outs, 1))
        s = self.se((h * m).sum(2) / m.sum(2).clamp_min(1))
        return x + h * s[:, :, None]


@register_encoder("ecapa")
class ECAPAEncoder(_FrontendEncoder):
    """A small ECAPA-TDNN: a 5-frame convolution, three SE-Res2Net blocks (dilations 2, 3, 4),
    multi-layer feature aggregation, attentive statistics pooling with global context, and a
    batch-normalised embedding layer. ``channels`` is 512–1024 in the paper."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, channels: int = 256, embedding_dim: int = 192,
                 scale: int = 8, attention: int = 128, frontend: dict[str, Any] | None = None,
                 augment: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(sample_rate, n_mels, embedding_dim, frontend, augment)
        c = positive_int(channels, "channels")
        scale, attention = positive_int(scale, "scale"), positive_int(attention, "attention")
        self.stem = nn.Sequential(FastConv1d(n_mels, c, 5, padding=2), nn.ReLU(), nn.BatchNorm1d(c))
        self.blocks = nn.ModuleList(_SERes2Block(c, d, scale) for d in (2, 3, 4))
        self.mfa = nn.Sequential(FastConv1d(3 * c, 3 * c, 1), nn.ReLU())
        self.attention = nn.Sequential(FastConv1d(9 * c, attention, 1), nn.ReLU(), nn.BatchNorm1d(attention), nn.Tanh(),
                                       FastConv1d(attention, 3 * c, 1))  # fmt: skip
        self.pool_norm = nn.BatchNorm1d(6 * c)
        self.embedding = nn.Linear(6 * c, self.output_dim)
        self.embedding_norm = nn.BatchNorm1d(self.output_dim)

    def body(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None, :].to(feats.dtype)
        x = self.stem(feats) * m  # trimmed frames stay zero: they reach no voiced frame's context
        outs = []
        for block in self.blocks:
            x = block(x, mask) * m
            outs.append(x)
        h = self.mfa(torch.cat(outs, 1))
        frames = mask[:, None, :].to(h.dtype)
        n = frames.sum(2, keepdim=True).clamp_min(1)
        mean = (h * frames).sum(2, keepdim=True) / n
        std = (((h - mean).square() * frames).sum(2, keepdim=True) / n).clamp_min(1e-6).sqrt()
        context = torch.cat([h, mean.expand_as(h), std.expand_as(h)], 1)
        logits = self.attention(context).masked_fill(~mask[:, None, :], float("-inf"))
        pooled = masked_stats(h, mask, torch.softmax(logits, dim=2))
        return self.embedding_norm(self.embedding(self.pool_norm(pooled)))


# -- resemblyzer ------------------------------------------------------------------------------------

RESEMBLYZER_RATE = 16000
PARTIAL_FRAMES = 160  # 1.6 s partial utterances, resemblyzer's ``partials_n_frames``
HOP = 160  # 10 ms


def resemblyzer_weights() -> Path:
    """The ``pretrained.pt`` that the ``resemblyzer`` package ships (found without importing the
    package, whose import needs ``webrtcvad``)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError('encoder resemblyzer: the resemblyzer package is not installed '
                          '(pip install -e ".[resemblyzer]", after torch)')  # fmt: skip
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise ConfigError(f"encoder resemblyzer: {path} is missing from the installed package")
    return path


def partial_slices(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[tuple[int, int]]:
    """Frame ranges of the 1.6 s partial utterances that resemblyzer averages over
    (``VoiceEncoder.compute_partial_slices``)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((RESEMBLYZER_RATE / rate) / HOP))
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    slices = [(i, i + PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    start = slices[-1][0] * HOP
    coverage = (n_samples - start) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


@register_encoder("resemblyzer")
class ResemblyzerEncoder(nn.Module):
    """resemblyzer's GE2E voice encoder (LSTM 40→256, 3 layers; linear 256→256, ReLU, L2 norm) with
    its preprocessing in the model: level raised to −30 dBFS (never lowered), leading and trailing
    silence trimmed (energy-based here; the package uses webrtcvad), 40-bin power mel spectrogram
    (25 ms / 10 ms), 1.6 s partial utterances whose embeddings are averaged.

    Args:
        pretrained: load the package's weights (else random: for tests).
        vad_db: trim frames this far below the loudest from both ends (``None``: no trimming).
        augment: options of :class:`twinnet.audio.AudioAugment` for fine-tuning (waveform part).
        trainable_layers: how many of the top LSTM layers fine-tuning trains (the linear layer is
            always trained); the others are frozen and run without gradients (3: all).
        pad_partials: pad a recording shorter than a partial utterance (1.6 s) with silence, as the
            package does; ``False``: use it as it is (the LSTM runs over its frames only; faster
            for 1 s clips, and what fine-tuning on short clips learns).
    """

    def __init__(self, sample_rate: int = 16000, pretrained: bool = True, vad_db: float | None = 40.0,
                 augment: dict[str, Any] | None = None, trainable_layers: int = 3,
                 pad_partials: bool = True) -> None:  # fmt: skip
        super().__init__()
        if sample_rate != RESEMBLYZER_RATE:
            raise ValueError(f"resemblyzer works at 16000 Hz: set model.input.sample_rate: 16000, not {sample_rate}")
        if trainable_layers not in (0, 1, 2, 3):
            raise ValueError(f"trainable_layers must be 0, 1, 2 or 3, not {trainable_layers!r}")
        self.layers = nn.ModuleList(nn.LSTM(40 if k == 0 else 256, 256, 1, batch_first=True) for k in range(3))
        self.linear = nn.Linear(256, 256)
        self.mel = LogMel(RESEMBLYZER_RATE, n_fft=400, win_length=400, hop_length=HOP, n_mels=40, log=False)
        self.vad_db, self.pad_partials = vad_db, bool(pad_partials)
        self.frozen = 3 - trainable_layers
        self.augment = AudioAugment(RESEMBLYZER_RATE, **augment) if augment else None
        self.output_dim = 256
        if pretrained:
            checkpoint = torch.load(resemblyzer_weights(), map_location="cpu", weights_only=True)
            self.load_state_dict(self.from_package(checkpoint["model_state"]), strict=False)
        for layer in self.layers[: self.frozen]:
            layer.requires_grad_(False)

    @staticmethod
    def from_package(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The package's state dict (one 3-layer LSTM) as this module's (three 1-layer LSTMs)."""
        out = {}
        for key, value in state.items():
            head, _, name = key.partition(".")
            if head == "lstm" and name[-3:-1] == "_l":
                out[f"layers.{name[-1]}.{name[:-1]}0"] = value
            elif head == "linear":
                out[key] = value
        return out

    def embed_mels(self, mels: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Partial utterances ``(n, frames, 40)`` (each ``lengths`` frames long; default all) → unit
        embeddings ``(n, 256)`` (``VoiceEncoder.forward``: the last layer's final hidden state)."""
        from torch.nn.utils.rnn import pack_padded_sequence

        h: Any = mels if lengths is None else pack_padded_sequence(mels, lengths.cpu(), batch_first=True,
                                                                    enforce_sorted=False)  # fmt: skip
        hidden = mels.new_zeros(0)
        for k, layer in enumerate(self.layers):
            with torch.set_grad_enabled(torch.is_grad_enabled() and k >= self.frozen):
                h, (hidden, _) = layer(h)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=1, eps=1e-12)

    def prepare(self, wave: torch.Tensor) -> torch.Tensor:
        """One waveform: level up to −30 dBFS, silence trimmed from both ends."""
        rms = wave.square().mean().sqrt().clamp_min(1e-10)
        gain = 10 ** (-30 / 20) / rms
        wave = wave * gain.clamp_min(1.0)
        if self.vad_db is not None and len(wave) > 4 * HOP:
            power = self.mel.power(wave[None])
            mask = voiced_mask(torch.log(power.sum(1) + 1e-10), self.vad_db)[0]
            frames = torch.nonzero(mask).flatten()
            wave = wave[int(frames[0]) * HOP : (int(frames[-1]) + 1) * HOP]
        return wave

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() == 1:
            wave = wave[None]
        if self.training and self.augment is not None:
            wave = self.augment.wave(wave)
        partials, owners = [], []
        for i, w in enumerate(wave.float()):
            w = self.prepare(w)
            slices = partial_slices(len(w))
            total = slices[-1][1] * HOP
            if total >= len(w) and (self.pad_partials or len(slices) > 1):
                w = F.pad(w, (0, total - len(w)))
            mel = self.mel(w[None])[0].T  # (frames, 40)
            for a, b in slices:
                partials.append(mel[a:b])
                owners.append(i)
        lengths = torch.as_tensor([len(p) for p in partials])
        if bool((lengths == lengths[0]).all()):
            z = self.embed_mels(torch.stack(partials))
        else:
            z = self.embed_mels(torch.nn.utils.rnn.pad_sequence(partials, batch_first=True), lengths)
        index = torch.as_tensor(owners, device=z.device)
        sums = torch.zeros(len(wave), z.shape[1], device=z.device, dtype=z.dtype).index_add_(0, index, z)
        return F.normalize(sums, dim=1, eps=1e-12)


__all__ = ["ECAPAEncoder", "ResemblyzerEncoder", "XVectorEncoder", "masked_stats", "partial_slices"]
