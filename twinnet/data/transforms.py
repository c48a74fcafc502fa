"""Batched random augmentation on tensors, and which augmentation a kind of input gets.

:func:`build_augmenter` is the one place that says how an item of each kind (``model.input.kind``)
is augmented: the augmentation registered for that kind in :data:`twinnet.registry.AUGMENTATIONS`,
built from ``data.augment``. Images get :class:`RandomAffine` here: affine (``affine_grid`` +
``grid_sample``), flips, and colour jitter; pen trajectories get
:class:`twinnet.data.trajectory_augment.TrajectoryAugment`. A new kind is one module that registers
its augmentation, listed in :mod:`twinnet.data.builtin_augmentations`.

One call distorts a whole batch with per-item random parameters drawn from the generator it is
given (the run's ``Stream.AUGMENT``), on whatever device the batch is on, so augmentation costs a
fraction of a training step and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

from twinnet.config import AugmentConfig
from twinnet.errors import ConfigError
from twinnet.registry import AUGMENTATIONS


class Augmenter(Protocol):
    """Distorts a batch of items, with per-item random parameters drawn from ``generator``."""

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


def build_augmenter(config: AugmentConfig | None, kind: str) -> Augmenter | None:
    """How training items of ``kind`` (``model.input.kind``) are augmented per ``data.augment``:
    ``None`` when it is off; a ConfigError when it is on for a kind no augmentation is registered for."""
    if config is None or not config.enabled:
        return None
    if kind not in AUGMENTATIONS:
        raise ConfigError(
            f"data.augment: no augmentation for {kind} inputs (model.input.kind), only for "
            f"{', '.join(AUGMENTATIONS.names())}; set data.augment.enabled: false (texts vary through dropout or "
            "train.plan.word_deletion, audio through model.encoder.params.augment)"
        )
    augmenter: Augmenter = AUGMENTATIONS.get(kind)(config)
    return augmenter


@AUGMENTATIONS.register("image")
class RandomAffine:
    """Rotation, shear, scale, translation (Koch et al. 2015), optional flips, colour jitter
    (brightness, contrast, saturation, grey) and Gaussian blur, per image."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    def matrices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, 2, 3)`` affine matrices in ``affine_grid``'s normalised coordinates."""
        c = self.config

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        angle = uniform(-c.rotation, c.rotation) * (math.pi / 180.0)
        shear_x, shear_y = uniform(-c.shear, c.shear), uniform(-c.shear, c.shear)
        scale = uniform(*c.scale)
        tx, ty = uniform(-c.translate, c.translate) * 2, uniform(-c.translate, c.translate) * 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        shear = torch.stack([torch.stack([torch.ones(n), shear_x], 1), torch.stack([shear_y, torch.ones(n)], 1)], 1)
        linear = rotation @ shear / scale.view(n, 1, 1)  # the grid maps output → input: divide by scale
        if c.hflip:
            flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
            linear[:, :, 0] *= flip.view(n, 1)
        if c.vflip:
            flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
            linear[:, :, 1] *= flip.view(n, 1)
        theta = torch.cat([linear, torch.stack([tx, ty], 1).unsqueeze(2)], 2)
        if c.probability < 1.0:
            keep = torch.rand(n, generator=generator) >= c.probability
            theta[keep] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        return theta

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.config.enabled or images.ndim != 4:
            return images
        theta = self.matrices(len(images), generator).to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        # "border" repeats the edge, so a white page stays white and a black one black.
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        c = self.config
        if c.elastic or c.pressure or c.noise or c.occlude:  # drawn only when configured (streams kept)
            from twinnet.fingerprints.augment import impression

            out = impression(out, c, generator)
        out = self.colour(out, generator)
        return gaussian_blur(out, c.blur, generator) if c.blur else out

    def colour(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per-image brightness, contrast and (RGB) saturation jitter, clipped to [0, 1]; drawn only
        when configured, so recipes without colour jitter keep their random streams."""
        c = self.config
        if not (c.brightness or c.contrast or c.saturation or c.grayscale):
            return images
        n = len(images)

        def factor(amount: float) -> torch.Tensor:
            f = 1.0 + amount * (2 * torch.rand(n, generator=generator) - 1)
            return f.to(images.device, images.dtype).view(n, 1, 1, 1)

        out = images
        if c.brightness:
            out = out * factor(c.brightness)
        if c.contrast:
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * factor(c.contrast) + mean
        if c.saturation and out.shape[1] == 3:
            grey = _luminance(out)
            out = (out - grey) * factor(c.saturation) + grey
        if c.grayscale and out.shape[1] == 3:
            chosen = (torch.rand(n, generator=generator) < c.grayscale).to(images.device).view(n, 1, 1, 1)
            out = torch.where(chosen, _luminance(out), out)
        return out.clamp(0.0, 1.0)


def _luminance(rgb: torch.Tensor) -> torch.Tensor:
    """The grey version of RGB images (ITU-R BT.601 weights), on all three channels."""
    return (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]).expand_as(rgb)


def gaussian_blur(images: torch.Tensor, max_sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Each image blurred by a separable Gaussian whose standard deviation is uniform in
    ``[0, max_sigma]`` pixels (edges repeated), all images in one grouped convolution per axis."""
    n, channels = images.shape[:2]
    sigma = (max_sigma * torch.rand(n, generator=generator)).clamp_min(1e-3)
    radius = max(1, math.ceil(3 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(n, 1)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(images.device, images.dtype)
    kernel = kernel.repeat_interleave(channels, 0)  # one kernel per (image, channel) group
    flat = images.reshape(1, n * channels, *images.shape[2:])
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(n * channels, 1, 1, -1),
                    groups=n * channels)  # fmt: skip
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(n * channels, 1, -1, 1),
                    groups=n * channels)  # fmt: skip
    return flat.reshape(images.shape)
