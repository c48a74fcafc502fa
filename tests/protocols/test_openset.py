"""Open-set identification through a gallery: rank-1 and DIR@FAR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twinnet import build_model, from_arrays
from twinnet.config import ModelConfig
from twinnet.data.sources import Dataset
from twinnet.errors import ConfigError
from twinnet.protocols import build_protocol, open_set_rates


def test_rates_by_hand() -> None:
    known = np.array([0.9, 0.8, 0.7, 0.4])
    correct = np.array([True, True, False, True])
    unknown = np.linspace(0.0, 0.75, 100)  # the largest false alarm sits at 0.75
    m = open_set_rates(known, correct, unknown, (0.01, 0.1))
    assert m["rank1"] == 0.75
    # FAR 1%: one false alarm allowed, threshold = 2nd largest unknown (≈0.742): 0.9 and 0.8 pass
    assert m["dir@far=0.01"] == 0.5
    # FAR 10%: threshold = 11th largest unknown (≈0.674): 0.7 passes but is the wrong person
    assert m["dir@far=0.1"] == 0.5
    assert m["dir@far=0.1_threshold"] < m["dir@far=0.01_threshold"]


def test_through_a_gallery_on_separable_people() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (20, 8)) * 3
    x = (centres.repeat(4, 0) + rng.normal(0, 0.1, (80, 8))).astype(np.float32)
    items = from_arrays(x, np.arange(20).repeat(4), [f"person_{i}" for i in range(20)])
    torch.manual_seed(0)  # a random linear map of well-separated clusters
    model = build_model(ModelConfig.model_validate({
        "input": {"kind": "vector", "features": 8}, "comparator": {"name": "cosine"}, "normalize": True,
        "encoder": {"name": "mlp", "params": {"hidden": [], "embedding_dim": 8}}})).eval()  # fmt: skip
    result = build_protocol("openset", {"known": 0.5, "enrol": 1}).evaluate(model, Dataset(items))
    m = result.metrics
    assert m["enrolled_people"] == 10 and m["enrolled_images"] == 10
    assert m["known_queries"] == 30 and m["unknown_queries"] == 40 and m["unknown_people"] == 10
    assert m["rank1"] > 0.9 and 0 <= m["dir@far=0.01"] <= m["dir@far=0.1"] <= m["rank1"]
    assert result.primary_metric == "dir@far=0.01"
    with pytest.raises(ConfigError, match="known must be a share"):
        build_protocol("openset", {"known": 1.5})
