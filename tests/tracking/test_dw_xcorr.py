"""Depth-wise cross-correlation: the grouped convolution against a plain loop, and the ``dw_xcorr``
comparator as a drop-in SiamFC score map (its loss trains it, the SiamFC tracker reads it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tracking.test_tracker import tiny_model_config
from twinnet.compare import comparator_names
from twinnet.config import ModelConfig
from twinnet.errors import ConfigError
from twinnet.losses import LogisticScoreMapLoss
from twinnet.model import build_model
from twinnet.tracking import Tracker, build_tracker, depthwise_xcorr, read_sequence


def loop_reference(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """out[j·n+i, c, u, v] = Σ_{p,q} z[i, c, p, q] · x[j·n+i, c, u+p, v+q], one number at a time."""
    n, c, h, w = z.shape
    out = torch.zeros(x.shape[0], c, x.shape[2] - h + 1, x.shape[3] - w + 1, dtype=torch.float64)
    for row in range(x.shape[0]):
        i = row % n
        for ch in range(c):
            for u in range(out.shape[2]):
                for v in range(out.shape[3]):
                    total = 0.0
                    for p in range(h):
                        for q in range(w):
                            total += float(z[i, ch, p, q]) * float(x[row, ch, u + p, v + q])
                    out[row, ch, u, v] = total
    return out


@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 1), (2, 3)])
def test_depthwise_xcorr_matches_a_loop(n: int, k: int) -> None:
    gen = torch.Generator().manual_seed(n * 10 + k)
    z = torch.randn(n, 3, 2, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(k * n, 3, 5, 6, generator=gen, dtype=torch.float64)
    out = depthwise_xcorr(z, x)
    assert out.shape == (k * n, 3, 4, 4)
    torch.testing.assert_close(out, loop_reference(z, x))


def test_each_channel_is_the_single_channel_correlation_of_that_channel() -> None:
    gen = torch.Generator().manual_seed(0)
    z, x = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 9, 9, generator=gen)
    out = depthwise_xcorr(z, x)
    for c in range(4):  # summing the channels is SiamFC's correlation
        torch.testing.assert_close(out[:, c], depthwise_xcorr(z[:, c : c + 1], x[:, c : c + 1])[:, 0])
    single = torch.stack([torch.nn.functional.conv2d(x[i : i + 1], z[i : i + 1])[0, 0] for i in range(2)])
    torch.testing.assert_close(out.sum(1), single, rtol=1e-4, atol=1e-4)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="need a multiple"):
        depthwise_xcorr(torch.zeros(2, 3, 2, 2), torch.zeros(3, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\(n, C, h, w\)"):
        depthwise_xcorr(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 5, 5))
    with pytest.raises(ValueError, match="does not fit"):
        depthwise_xcorr(torch.zeros(1, 3, 6, 6), torch.zeros(1, 3, 5, 5))


def dw_model_config(**params: object) -> ModelConfig:
    return ModelConfig.model_validate(tiny_model_config().model_dump(mode="json")
                                      | {"comparator": {"name": "dw_xcorr", "params": params}})  # fmt: skip


def test_dw_xcorr_comparator_gives_one_score_map_that_the_siamfc_loss_trains(otb_sequence) -> None:
    assert "dw_xcorr" in comparator_names("maps") and "dw_xcorr" not in comparator_names("vectors")
    torch.manual_seed(0)
    model = build_model(dw_model_config(channels=8))
    z = model.embed(torch.rand(2, 3, 127, 127), "a")
    x = model.embed(torch.rand(6, 3, 255, 255), "b")  # 3 search images per exemplar
    logits = model.comparator.logits(z, x)
    assert logits.shape == (6, 1, 17, 17)
    loss = LogisticScoreMapLoss()
    loss.check_comparator(model.comparator)
    value = loss(logits[:2], torch.zeros(2, 2), stride=8)
    value.backward()
    assert torch.isfinite(value) and model.comparator.fuse[0].weight.grad is not None
    root, _ = otb_sequence
    tracker = build_tracker(model.eval())
    assert type(tracker) is Tracker  # read by the SiamFC tracker, scale pyramid and all
    result = tracker.track(read_sequence(root))
    assert result.boxes.shape == (8, 4) and np.isfinite(result.boxes).all()


def test_bad_dw_xcorr_params_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"model.comparator.*channels"):
        build_model(dw_model_config(channels=0))
