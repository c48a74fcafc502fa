"""Augmentation that fits fingerprint impressions (``data.augment``: ``elastic``, ``pressure``,
``noise``, ``occlude``), applied per image on tensor batches after the affine part (rotation,
translation, scale) of :class:`twinnet.data.transforms.RandomAffine`.

Two impressions of one finger differ by a rotation, a shift, a smooth non-linear distortion of the
skin (elastic), how hard the finger was pressed (ridges thicker or thinner), sensor noise, and
which part of the finger touched the sensor (impressions overlap only in part).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from twinnet.config import AugmentConfig


def _uniform(n: int, high: float, generator: torch.Generator) -> torch.Tensor:
    return (2 * torch.rand(n, generator=generator) - 1) * high


def elastic(images: torch.Tensor, amount: float, generator: torch.Generator, knots: int = 4) -> torch.Tensor:
    """A smooth random displacement (a ``knots``×``knots`` field upsampled bicubically) of up to
    ``amount`` of the image size, per image."""
    n, _, h, w = images.shape
    field = _uniform(n * 2 * knots * knots, 2 * amount, generator).view(n, 2, knots, knots)
    field = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    identity = torch.eye(2, 3).unsqueeze(0).expand(n, 2, 3)
    grid = F.affine_grid(identity, [n, 1, h, w], align_corners=False) + field.to(images.dtype)
    return F.grid_sample(images, grid.to(images.device), mode="bilinear", padding_mode="border", align_corners=False)


def pressure(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Grey-level dilation (dark ridges thinner) or erosion (thicker) by a random 0–``pixels`` radius."""
    radius = torch.randint(-pixels, pixels + 1, (len(images),), generator=generator)
    out = images.clone()
    for i, r in enumerate(radius.tolist()):
        if r == 0:
            continue
        k = 2 * abs(r) + 1
        x = images[i : i + 1]
        out[i : i + 1] = F.max_pool2d(x, k, 1, abs(r)) if r > 0 else -F.max_pool2d(-x, k, 1, abs(r))
    return out


def occlude(images: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Blank a band along a random side, up to ``share`` of the image, to the image's corner value
    (the sensor's background): a partial impression."""
    n, _, h, w = images.shape
    out = images.clone()
    sides = torch.randint(0, 4, (n,), generator=generator).tolist()
    widths = (torch.rand(n, generator=generator) * share).tolist()
    for i, (side, width) in enumerate(zip(sides, widths)):
        fill = images[i, :, [0, 0, -1, -1], [0, -1, 0, -1]].mean()
        if side < 2:
            k = round(width * h)
            if k:
                out[i, :, :k] = fill if side == 0 else out[i, :, :k]
                if side == 1:
                    out[i, :, h - k :] = fill
        else:
            k = round(width * w)
            if k:
                if side == 2:
                    out[i, :, :, :k] = fill
                else:
                    out[i, :, :, w - k :] = fill
    return out


def impression(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """The impression augmentations ``config`` turns on, in order: elastic, pressure, occlusion, noise."""
    out = images
    if config.elastic:
        out = elastic(out, config.elastic, generator)
    if config.pressure:
        out = pressure(out, config.pressure, generator)
    if config.occlude:
        out = occlude(out, config.occlude, generator)
    if config.noise:
        sigma = torch.rand(len(out), generator=generator).view(-1, 1, 1, 1) * config.noise
        out = out + torch.randn(out.shape, generator=generator) * sigma
    return out.clamp(0.0, 1.0)
