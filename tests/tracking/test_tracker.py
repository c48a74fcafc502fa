"""The SiamFC tracker: saved and loaded models track identically, settings travel with the model,
and a short training run on real sequences beats the still-box baseline on a val sequence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from twinnet.compare import comparator_names
from twinnet.config import Config, ModelConfig, parse_config
from twinnet.errors import ConfigError
from twinnet.gallery import Gallery
from twinnet.io import load, save
from twinnet.model import build_model
from twinnet.tracking import StillBox, Tracker, read_sequence, run_tracker, sequence_figures
from twinnet.train import train_from_config

TINY = {"name": "siamfc_light", "params": {"channels": [8, 16, 16, 16, 16]}}


def tiny_model_config(**tracker: float) -> ModelConfig:
    return ModelConfig.model_validate({
        "input": {"kind": "image", "channels": 3, "size": [127, 127]},
        "input_b": {"kind": "image", "channels": 3, "size": [255, 255]},
        "encoder": TINY, "comparator": {"name": "xcorr"}, "tracker": tracker or None,
    })  # fmt: skip


def box_head_model_config(head: str, channels: int = 8, **tracker: float) -> ModelConfig:
    """The tiny tracking model with the box head ``head`` (``anchor_free``, ``rpn``) as its comparator."""
    comparator = {"name": head, "params": {"channels": channels}}
    return ModelConfig.model_validate(tiny_model_config(**tracker).model_dump(mode="json") | {"comparator": comparator})


def test_save_load_tracks_identically(otb_sequence, tmp_path: Path) -> None:
    root, _ = otb_sequence
    torch.manual_seed(0)
    model = build_model(tiny_model_config(window_influence=0.3)).eval()
    seq = read_sequence(root)
    before = Tracker(model).track(seq)
    save(model, tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["tracker"]["window_influence"] == 0.3 and saved["tracker"]["scale_step"] == 1.0375
    loaded = load(tmp_path / "model")
    after = Tracker(loaded).track(seq)
    np.testing.assert_array_equal(before.boxes, after.boxes)
    np.testing.assert_array_equal(before.scores, after.scores)
    assert Tracker(loaded).settings.window_influence == 0.3
    assert Tracker(loaded, window_influence=0.1).settings.window_influence == 0.1  # overridable


def test_bad_tracker_settings_and_models_are_refused() -> None:
    model = build_model(tiny_model_config())
    with pytest.raises(ConfigError, match="scale_lr"):
        Tracker(model, scale_lr=3.0)
    plain = build_model(ModelConfig.model_validate({"input": {"kind": "vector", "features": 4},
                                                    "encoder": {"name": "mlp"}}))  # fmt: skip
    with pytest.raises(ConfigError, match="score maps") as refused:
        Tracker(plain)
    assert all(name in str(refused.value) for name in ("xcorr", "dw_xcorr", "anchor_free", "rpn"))  # every map head


def ci_config(shared_data: Path, train_root: Path, val_frames: int = 20) -> Config:
    return parse_config({
        "model": tiny_model_config().model_dump(mode="json") | {"tracker": None},
        "data": {"format": "tracking", "path": str(train_root),
                 "val_path": str(shared_data / "tracking" / "val" / "Crossing")},
        "loss": {"name": "score_map_logistic"},
        "train": {"seed": 0, "epochs": 1, "samples_per_epoch": 128, "batch_size": 8, "lr": 0.003,
                  "warmup_steps": 5, "threads": 2, "progress": False,
                  "validation": {"protocol": "tracking", "params": {"max_frames": val_frames}},
                  "early_stopping": {"patience": None}},
    })  # fmt: skip


def few_sequences(
    shared_data: Path, target: Path, names: tuple[str, ...] = ("BMX3", "MountainBike6", "wakeboard7")
) -> Path:
    """A training folder of a few real sequences (links, not copies), so the CI run stays short."""
    target.mkdir()
    for name in names:
        (target / name).symlink_to(shared_data / "tracking" / "train" / name, target_is_directory=True)
    return target


def train_box_head_briefly(shared_data: Path, tmp_path: Path, model: ModelConfig, loss: str) -> Path:
    """A box head trained on a few sequences for 512 pairs (about 30 s on 2 cores); its model directory."""
    config = parse_config({
        "model": model.model_dump(mode="json") | {"tracker": None},
        "data": {"format": "tracking", "path": str(few_sequences(shared_data, tmp_path / "train")),
                 "val_path": str(shared_data / "tracking" / "val" / "Crossing")},
        "loss": {"name": loss},
        "train": {"seed": 0, "epochs": 1, "samples_per_epoch": 512, "batch_size": 8, "lr": 0.003,
                  "warmup_steps": 5, "threads": 2, "progress": False,
                  "validation": {"protocol": "tracking", "params": {"max_frames": 20}},
                  "early_stopping": {"patience": None}},
    })  # fmt: skip
    result = train_from_config(config, tmp_path / "run")
    assert result.model_dir is not None
    return result.model_dir


def against_the_still_box(shared_data: Path, tracker: Any) -> tuple[dict[str, float], dict[str, float]]:
    """One-pass figures of ``tracker`` and of the still box on the first 60 frames of Crossing."""
    crossing = read_sequence(shared_data / "tracking" / "val" / "Crossing").head(60)  # the pedestrian crosses
    assert crossing.boxes is not None
    ours = sequence_figures(tracker.track(crossing).boxes, crossing.boxes)
    return ours, sequence_figures(run_tracker(StillBox(), crossing).boxes, crossing.boxes)


@pytest.mark.slow
def test_short_training_beats_the_still_box(shared_data: Path, tmp_path: Path) -> None:
    result = train_from_config(ci_config(shared_data, few_sequences(shared_data, tmp_path / "train")), tmp_path / "run")
    assert result.model_dir is not None and (result.model_dir / "weights.safetensors").is_file()
    ours, still = against_the_still_box(shared_data, Tracker(load(result.model_dir)))
    assert ours["success_auc"] > still["success_auc"] + 0.1, (ours, still)
    assert result.validation["primary_metric"] == "success_auc"


def test_a_tracking_model_says_it_compares_maps_and_a_gallery_refuses_it(tmp_path: Path) -> None:
    assert "xcorr" in comparator_names("maps") and "xcorr" not in comparator_names("vectors")
    assert {"euclidean", "cosine"} <= set(comparator_names("vectors"))
    model = build_model(tiny_model_config())
    with pytest.raises(ConfigError, match="feature maps"):
        Gallery.create(tmp_path / "g", model)
