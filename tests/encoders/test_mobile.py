"""``siamfc_mobile``: the map sizes and total stride of ``siamfc_light``'s contract, fewer parameters and
multiply-adds, tracking with it, and its CPU time per frame measured (recorded, not asserted)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from tests.tracking.conftest import square_frames
from twinnet.config import ModelConfig
from twinnet.encoders import SiamFCLight, SiamFCMobile, build_encoder
from twinnet.errors import ConfigError
from twinnet.model import build_model
from twinnet.tracking import build_tracker


def multiply_adds(encoder: nn.Module, size: int) -> int:
    """The convolutions' multiply-adds for one ``size×size`` image: per output element,
    ``in_channels / groups × kernel area``."""
    total = 0

    def count(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(count) for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            encoder.eval()(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_map_sizes_and_total_stride_match_siamfc_light() -> None:
    torch.manual_seed(0)
    mobile, light = SiamFCMobile().eval(), SiamFCLight().eval()
    assert mobile.total_stride == light.total_stride == 8 and mobile.output_dim == 96
    with torch.no_grad():
        for size, side in ((127, 7), (255, 23)):
            image = torch.rand(2, 3, size, size)
            assert mobile(image).shape == (2, 96, side, side) == (2, light.output_dim, *light(image).shape[2:])
        # total stride 8, measured: moving the image 8 px moves the map one cell (every layer is valid)
        x = torch.rand(1, 3, 255 + 8, 255 + 8)
        whole, moved = mobile(x[..., :255, :255]), mobile(x[..., 8:, 8:])
    torch.testing.assert_close(moved[..., :-1, :-1], whole[..., 1:, 1:], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(moved, whole)


def test_fewer_parameters_and_multiply_adds_than_siamfc_light() -> None:
    mobile, light = SiamFCMobile(), SiamFCLight()
    assert parameters(mobile) < 0.6 * parameters(light)  # 47 k against 133 k
    for size in (127, 255):
        assert multiply_adds(mobile, size) < 0.6 * multiply_adds(light, size)
    assert 60e6 < multiply_adds(mobile, 255) < 80e6 and 130e6 < multiply_adds(light, 255) < 150e6


def test_bad_channels_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"model.encoder.*channels must list 8"):
        image = {"kind": "image", "channels": 3, "size": [127, 127]}
        encoder = {"name": "siamfc_mobile", "params": {"channels": [8, 8]}}
        build_model(ModelConfig.model_validate({"input": image, "encoder": encoder}))
    with pytest.raises(ConfigError, match=r"model.encoder.*channels\[2\]"):
        build_encoder("siamfc_mobile", {"channels": [8, 8, 0, 8, 8, 8, 8, 8]}, {})


def test_tracks_with_a_box_head(record_property) -> None:
    torch.manual_seed(0)
    config = ModelConfig.model_validate({
        "input": {"kind": "image", "channels": 3, "size": [127, 127]},
        "input_b": {"kind": "image", "channels": 3, "size": [255, 255]},
        "encoder": {"name": "siamfc_mobile"}, "comparator": {"name": "rpn", "params": {"channels": 32}},
    })  # fmt: skip
    model = build_model(config).eval()
    frames, boxes = square_frames(n=12)
    tracker = build_tracker(model)
    tracker.init(frames[0], boxes[0])
    assert tracker.stride == 8 and tracker._response_size == 17
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tracker.update(frames[1])  # warm-up
        start = time.process_time()
        for frame in frames[2:]:
            box, score = tracker.update(frame)
            assert np.isfinite(box).all() and 0 <= score <= 1
        ms = (time.process_time() - start) / (len(frames) - 2) * 1000
    finally:
        torch.set_num_threads(threads)
    record_property("cpu_ms_per_frame_one_thread", round(ms, 2))  # measured, not asserted (shared machines)
    assert ms > 0
