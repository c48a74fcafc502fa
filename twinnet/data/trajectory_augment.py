"""Augmentation of pen trajectories (online signatures), batched, on tensors.

A trajectory item is ``(9, length)``: the rows of :data:`twinnet.data.signatures.TRAJECTORY_FEATURES`.
Only positions, pressure and pen-down are measured; velocity, direction and speed are derived from
the positions, and the reader normalises positions (centred, divided by the standard deviation of
y) and pressure (maximum 1). So the distortions act on the measured signals, and the features are
then derived again by the reader's own :func:`~twinnet.data.signatures.derive_features`: augmented
items are normalised exactly like read ones, and their velocities are those of the distorted pen.
Because the normalisation is affine, distorting the normalised positions and normalising again is
the same as distorting the raw tablet positions before reading them.

In order, per item (``data.augment.trajectory``, :class:`twinnet.config.TrajectoryAugmentConfig`):

1. time: a smooth monotone warp of the time axis (the writing speed varies by ``1 ± time_warp``,
   drawn at :data:`WARP_KNOTS` knots, linear between them; the first and last points stay) and an
   optional crop of the start and end, as one resampling to the same length;
2. positions: rotation, horizontal shear (slant) and unequal x and y scales about the centre, then
   Gaussian jitter;
3. pressure: a random power ``pressure ** g`` and multiplicative noise; zero pressure (pen up, or a
   tablet that records none) stays zero.

Every random number comes from the generator passed in (the run's ``Stream.AUGMENT``); a distortion
set to 0 draws nothing, and with all of them 0 the batch is returned as it is.

>>> import torch
>>> from twinnet.config import TrajectoryAugmentConfig
>>> batch = torch.randn(4, 9, 64)
>>> augment = TrajectoryAugment(TrajectoryAugmentConfig(time_warp=0.2, rotation=5))
>>> augment(batch, torch.Generator().manual_seed(0)).shape
torch.Size([4, 9, 64])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from twinnet.config import AugmentConfig, TrajectoryAugmentConfig
from twinnet.data.signatures import TRAJECTORY_FEATURES, derive_features
from twinnet.errors import DataError
from twinnet.registry import AUGMENTATIONS

#: Knots of the time warp: the writing speed is drawn at this many equally spaced times.
WARP_KNOTS = 5

_X, _Y, _PRESSURE, _PEN = (TRAJECTORY_FEATURES.index(name) for name in ("x", "y", "pressure", "pen_down"))


class TrajectoryAugment:
    """Random time warp and crop, rotation, shear, scale, jitter and pressure distortion of a batch
    ``(batch, 9, length)`` of trajectory features, per item (see the module)."""

    def __init__(self, config: TrajectoryAugmentConfig) -> None:
        self.config = config

    @property
    def active(self) -> bool:
        """Whether any distortion is on."""
        c = self.config
        return bool(self._retimes or self._transforms or c.jitter or c.pressure_gamma or c.pressure_noise)

    @property
    def _retimes(self) -> bool:
        return bool(self.config.time_warp or self.config.crop)

    @property
    def _transforms(self) -> bool:
        c = self.config
        return bool(c.rotation or c.shear or c.scale != (1.0, 1.0))

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.active:
            return batch
        if batch.ndim != 3 or batch.shape[1] != len(TRAJECTORY_FEATURES) or batch.shape[2] < 2:
            raise DataError(
                f"trajectory augmentation takes (batch, {len(TRAJECTORY_FEATURES)}, length >= 2) trajectory features "
                f"({', '.join(TRAJECTORY_FEATURES)}), not a batch of shape {tuple(batch.shape)}; set "
                "data.augment.enabled: false for other sequences"
            )
        c = self.config
        n, _, length = batch.shape
        signals = batch[:, [_X, _Y, _PRESSURE, _PEN]]
        if self._retimes:
            signals = resample(signals, self.time_map(n, length, generator).to(batch.device) * (length - 1))
        x, y, pressure, pen = signals.unbind(1)
        if self._transforms:
            x, y = self._affine(x, y, generator)
        if c.jitter:
            x = x + c.jitter * _normal(x.shape, generator, x)
            y = y + c.jitter * _normal(y.shape, generator, y)
        if c.pressure_gamma:
            power = torch.exp(c.pressure_gamma * _uniform(n, generator, pressure)).unsqueeze(1)
            pressure = pressure.clamp_min(0) ** power
        if c.pressure_noise:
            pressure = (pressure * (1 + c.pressure_noise * _normal(pressure.shape, generator, pressure))).clamp_min(0)
        return derive_features(x, y, pressure, pen)

    def time_map(self, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, length)``: for each output step, the time (0 = first point, 1 = last) of the input
        it is read from; strictly increasing. Without a crop it starts at exactly 0 and ends at
        exactly 1."""
        c = self.config
        times = torch.linspace(0.0, 1.0, length).expand(n, length)
        if c.time_warp:
            knots = 1 + c.time_warp * (2 * torch.rand(n, 1, WARP_KNOTS, generator=generator) - 1)
            speed = F.interpolate(knots, size=length, mode="linear", align_corners=True)[:, 0]  # > 0 everywhere
            steps = (speed[:, 1:] + speed[:, :-1]) / 2  # trapezoid rule: the time each step takes
            times = torch.cat([torch.zeros(n, 1), steps.cumsum(1)], 1)
            times = times / times[:, -1:]
        if c.crop:
            start = c.crop * torch.rand(n, 1, generator=generator)
            end = 1 - c.crop * torch.rand(n, 1, generator=generator)
            times = start + (end - start) * times
        return times

    def _affine(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation · shear · scale about the origin (items are centred), per item."""
        c = self.config
        n = len(x)
        angle = c.rotation * (math.pi / 180) * _uniform(n, generator, x)
        shear = c.shear * _uniform(n, generator, x)
        low, high = c.scale
        sx, sy = (low + (high - low) * torch.rand(n, generator=generator).to(x) for _ in range(2))
        cos, sin = torch.cos(angle).unsqueeze(1), torch.sin(angle).unsqueeze(1)
        sx, sy, shear = sx.unsqueeze(1), sy.unsqueeze(1), shear.unsqueeze(1)
        sheared = sx * x + shear * sy * y  # [[1, shear], [0, 1]] · diag(sx, sy) · (x, y)
        scaled_y = sy * y
        return cos * sheared - sin * scaled_y, sin * sheared + cos * scaled_y


def resample(signals: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``signals`` ``(n, channels, length)`` read at fractional ``positions`` ``(n, steps)`` in
    ``[0, length - 1]`` by linear interpolation → ``(n, channels, steps)``; whole positions read
    their sample exactly."""
    length = signals.shape[-1]
    low = positions.floor().clamp(0, length - 2).long()
    frac = (positions - low).unsqueeze(1).to(signals.dtype)
    index = low.unsqueeze(1).expand(-1, signals.shape[1], -1)
    return signals.gather(2, index) * (1 - frac) + signals.gather(2, index + 1) * frac


def _uniform(n: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``n`` draws uniform in [-1, 1], on ``like``'s device and dtype."""
    return (2 * torch.rand(n, generator=generator) - 1).to(like)


def _normal(shape: torch.Size, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(like)


@AUGMENTATIONS.register("sequence")
def trajectory_augmentation(config: AugmentConfig) -> TrajectoryAugment:
    """Pen trajectories (``model.input.kind: sequence``): ``data.augment.trajectory``."""
    return TrajectoryAugment(config.trajectory)
