"""Fully-convolutional encoders for tracking: an image → a feature *map*, not a vector.

Both branches of a SiamFC twin run the same network; the exemplar (127×127) and the search image
(255×255) differ only in size, and the cross-correlation comparator slides one map over the other.
Every layer is "valid" (no padding), so a feature at any position sees the same image content
wherever it is: the property that lets one correlation score every position at once. Both
encoders have a total stride of 8, so a 255 search and a 127 exemplar give a 17×17 response.

- ``siamfc_alexnet``: SiamFC's AlexNet (Bertinetto et al. 2016): 127 → 6×6, 255 → 22×22 maps of
  256 channels (``width`` scales the channels).
- ``siamfc_light``: a lighter backbone for CPUs (5×5 then 3×3 kernels, about 1/20 of AlexNet's
  multiply-adds): 127 → 7×7, 255 → 23×23 maps of ``channels[-1]`` channels.

``siamfc_mobile`` (:mod:`twinnet.encoders.mobile`), of depth-wise separable blocks, keeps the same
contract on :class:`FullyConvEncoder`.

``output_dim`` is the number of channels of the map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from twinnet.encoders.registry import positive_float, positive_ints, register_encoder


def _block(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, last: bool = False) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, groups=groups)
    if last:  # the embedding itself: no normalisation or rectification, so it can be negative
        return [conv]
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class FullyConvEncoder(nn.Module):
    """Base of the fully-convolutional encoders: ``features`` maps ``(B, 3, H, W)`` images in
    [0, 1] to ``(B, output_dim, h, w)`` feature maps; ``total_stride`` image pixels per map cell."""

    total_stride: int = 8
    output_dim: int

    def __init__(self, features: nn.Sequential, output_dim: int) -> None:
        super().__init__()
        self.features = features
        self.output_dim = output_dim
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # channels-last runs these convolutions and poolings about twice as fast on CPUs (oneDNN)
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.contiguous(memory_format=torch.channels_last))


@register_encoder("siamfc_alexnet")
class SiamFCAlexNet(FullyConvEncoder):
    """SiamFC's AlexNet: conv 96@11×11/2 → pool → 256@5×5 (2 groups) → pool → 384@3×3 → 384@3×3
    (2 groups) → 256@3×3 (2 groups), BatchNorm after every conv but the last."""

    def __init__(self, in_channels: int = 3, width: float = 1.0) -> None:
        positive_float(width, "width")
        c1, c2, c3, c4, c5 = (max(2, 2 * round(c * width / 2)) for c in (96, 256, 384, 384, 256))
        features = nn.Sequential(
            *_block(in_channels, c1, 11, 2), nn.MaxPool2d(3, 2),
            *_block(c1, c2, 5, groups=2), nn.MaxPool2d(3, 2),
            *_block(c2, c3, 3),
            *_block(c3, c4, 3, groups=2),
            *_block(c4, c5, 3, groups=2, last=True),
        )  # fmt: skip
        super().__init__(features, c5)


@register_encoder("siamfc_light")
class SiamFCLight(FullyConvEncoder):
    """A light stride-8 backbone: conv ``c1``@5×5/2 → pool → ``c2``@3×3 → pool → ``c3``, ``c4``,
    ``c5``@3×3 (BatchNorm and ReLU after every conv but the last). About 0.14 G multiply-adds per
    255×255 search image with the default channels (24, 48, 64, 64, 96), against 3 G for AlexNet."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (24, 48, 64, 64, 96)) -> None:
        sizes = positive_ints(channels, "channels")
        if len(sizes) != 5:
            raise ValueError(f"channels must list 5 layer widths, not {len(sizes)}")
        c1, c2, c3, c4, c5 = sizes
        features = nn.Sequential(
            *_block(in_channels, c1, 5, 2), nn.MaxPool2d(3, 2),
            *_block(c1, c2, 3), nn.MaxPool2d(3, 2),
            *_block(c2, c3, 3),
            *_block(c3, c4, 3),
            *_block(c4, c5, 3, last=True),
        )  # fmt: skip
        super().__init__(features, c5)
