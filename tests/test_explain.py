"""Saliency of a pair's score: on a pair that differs in one patch, the map peaks on that patch;
integrated gradients are complete; Grad-CAM and rollout give maps of the input's shape."""

import numpy as np
import pytest
import torch

from twinnet import build_model
from twinnet.config import ModelConfig
from twinnet.errors import ConfigError, DataError
from twinnet.explain import SALIENCY, explain_pair, pair_attributions


def image_model(encoder: str, params: dict, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(
        ModelConfig.model_validate(
            {
                "input": {"kind": "image", "size": [16, 16]},
                "encoder": {"name": encoder, "params": params},
                "normalize": True,
            }
        )
    )


def patched_pair(seed: int):
    """Two 16×16 images equal everywhere except one 4×4 patch (rows 8–11, columns 4–7)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(1, 16, 16, generator=g)
    b = a.clone()
    b[:, 8:12, 4:8] = torch.rand(1, 4, 4, generator=g)
    return a, b


@pytest.mark.parametrize(
    "encoder,params",
    [("conv4", {"hidden": 16, "blocks": 2}), ("vit", {"patch": 4, "dim": 32, "depth": 2, "pool": "cls"})],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_saliency_peaks_on_the_one_patch_that_differs(encoder, params, seed):
    model = image_model(encoder, params, seed).train()
    a, b = patched_pair(seed)
    result = explain_pair(model, a, b, "gradients")
    assert result.map_a.shape == result.map_b.shape == (16, 16)
    for side in ("a", "b"):
        row, col = result.peak(side)
        assert 8 <= row < 12 and 4 <= col < 8
    inside = result.map_b[8:12, 4:8].sum() / result.map_b.sum()
    assert inside > 0.99
    assert result.map_b.max() == pytest.approx(1.0)
    assert model.training and all(p.grad is None for p in model.parameters())  # left as it was


def test_integrated_gradients_sum_to_the_change_of_similarity():
    model = image_model("conv4", {"hidden": 16, "blocks": 2}).eval()
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(1, 1, 16, 16, generator=g), torch.rand(1, 1, 16, 16, generator=g)
    with torch.enable_grad():
        _, attr_b = pair_attributions(model, a, b, steps=64)
    with torch.no_grad():
        orientation = model.comparator.orientation
        s_ab = orientation.to_similarity(model(a, b))
        s_aa = orientation.to_similarity(model(a, a))
    assert attr_b.sum().item() == pytest.approx((s_ab - s_aa).item(), rel=0.05, abs=1e-3)


def test_gradcam_and_rollout_give_maps_over_the_input():
    conv = image_model("conv4", {"hidden": 16, "blocks": 2})
    vit = image_model("vit", {"patch": 4, "dim": 32, "depth": 2})
    a, b = patched_pair(0)
    for model, method in ((conv, "gradcam"), (vit, "rollout"), (vit, "gradcam")):
        result = explain_pair(model, a, b, method)
        assert result.map_b.shape == (16, 16) and np.isfinite(result.map_b).all()
        assert result.map_b.min() >= 0 and result.map_b.max() == pytest.approx(1.0)
    with pytest.raises(DataError, match="rollout needs an attention encoder"):
        explain_pair(conv, a, b, "rollout")
    with pytest.raises(ConfigError, match="unknown saliency method 'nope'"):
        explain_pair(conv, a, b, "nope")
    assert set(SALIENCY.names()) >= {"gradients", "gradcam", "rollout"}


def test_sequences_get_a_map_over_time():
    torch.manual_seed(0)
    model = build_model(
        ModelConfig.model_validate(
            {
                "input": {"kind": "sequence", "features": 3, "length": 32},
                "encoder": {"name": "trajectory_transformer", "params": {"dim": 16, "heads": 2, "depth": 1}},
            }
        )
    )
    a = torch.randn(3, 32)
    b = a.clone()
    b[:, 20:24] += 2.0
    result = explain_pair(model, a, b, "gradients")
    assert result.map_b.shape == (1, 32) and 20 <= result.peak("b")[1] < 24
    assert explain_pair(model, a, b, "rollout").map_b.shape == (1, 32)
