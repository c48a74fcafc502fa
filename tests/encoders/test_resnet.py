"""The face_resnet encoder: shapes, registration, parameter checks."""

from __future__ import annotations

import pytest
import torch

from twinnet.config import ModelConfig
from twinnet.errors import ConfigError
from twinnet.model import build_model


def test_built_from_a_config_at_face_sizes() -> None:
    for size in (64, 112):
        cfg = ModelConfig.model_validate({
            "input": {"kind": "image", "channels": 3, "size": [size, size]},
            "encoder": {"name": "face_resnet", "params": {"widths": [8, 8, 16, 16], "embedding_dim": 24}},
            "comparator": {"name": "cosine"}, "normalize": True,
        })  # fmt: skip
        model = build_model(cfg).eval()
        z = model.embed(torch.rand(3, 3, size, size))
        assert z.shape == (3, 24) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)


def test_bad_parameters_name_the_field() -> None:
    cfg = ModelConfig.model_validate(
        {
            "input": {"kind": "image", "channels": 3, "size": [64, 64]},
            "encoder": {"name": "face_resnet", "params": {"widths": [8, 8], "blocks": [1]}},
        }
    )
    with pytest.raises(ConfigError, match="model.encoder"):
        build_model(cfg)
