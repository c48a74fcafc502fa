"""``siamfc_mobile``: a CPU-real-time tracking backbone of depth-wise separable blocks (MobileNet, Howard et al. 2017).

A fully-convolutional encoder with the contract of ``siamfc_light`` (:mod:`twinnet.encoders.fully_conv`):
images in [0, 1] → feature maps of ``output_dim`` channels, every layer valid (no padding), a total
stride of 8, and 127 → 7×7, 255 → 23×23 maps, so the same comparators (``xcorr``, ``dw_xcorr``, the
box heads) read it. A full 3×3 convolution (stride 2) is followed by seven depth-wise separable
blocks (a 3×3 depth-wise convolution, then a 1×1 point-wise one, each with BatchNorm and ReLU; the
last point-wise convolution is the map itself, without either), with strides 1, 2, 1, 2, 1, 1, 1.
Spatial filtering costs ``9·C`` multiply-adds per position instead of ``9·C_in·C_out``, so with the
default widths it needs about half of ``siamfc_light``'s multiply-adds and parameters. Trained from
scratch here (no pretrained weights can be downloaded).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from twinnet.encoders.fully_conv import FullyConvEncoder
from twinnet.encoders.registry import positive_ints, register_encoder

#: The depth-wise blocks' strides (total stride 8 with the stem's 2).
STRIDES = (1, 2, 1, 2, 1, 1, 1)


def _separable(c_in: int, c_out: int, stride: int, last: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_in, 3, stride, groups=c_in, bias=False), nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
    ]  # fmt: skip
    if last:  # the embedding itself: no normalisation or rectification, so it can be negative
        return [*layers, nn.Conv2d(c_in, c_out, 1)]
    return [*layers, nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register_encoder("siamfc_mobile")
class SiamFCMobile(FullyConvEncoder):
    """Stem conv ``channels[0]``@3×3/2, then seven depth-wise separable blocks to ``channels[1:]``
    (strides 1, 2, 1, 2, 1, 1, 1); BatchNorm and ReLU after every conv but the last. ``channels``
    lists 8 widths (default 16, 32, 64, 64, 96, 96, 96, 96)."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64, 64, 96, 96, 96, 96)) -> None:
        sizes = positive_ints(channels, "channels")
        if len(sizes) != len(STRIDES) + 1:
            raise ValueError(f"channels must list {len(STRIDES) + 1} layer widths (the stem's, then each block's), "
                             f"not {len(sizes)}")  # fmt: skip
        layers: list[nn.Module] = [nn.Conv2d(in_channels, sizes[0], 3, 2, bias=False), nn.BatchNorm2d(sizes[0]),
                                   nn.ReLU(inplace=True)]  # fmt: skip
        for i, stride in enumerate(STRIDES):
            layers += _separable(sizes[i], sizes[i + 1], stride, last=i == len(STRIDES) - 1)
        super().__init__(nn.Sequential(*layers), sizes[-1])
