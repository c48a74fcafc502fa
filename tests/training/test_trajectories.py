"""Pen trajectories in training: augmentation in supervised batches, a folder of trajectories read
without labels, and the views plan on them (tiny, fast)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from twinnet import Trainer, build_model
from twinnet.config import AugmentConfig, ModelConfig, TrainConfig, load_config
from twinnet.data.items import ItemSet
from twinnet.data.signatures import derive_features
from twinnet.data.sources import ReadOptions, read_dataset
from twinnet.data.trajectory_augment import TrajectoryAugment
from twinnet.errors import ConfigError, DataError
from twinnet.losses import TripletLoss
from twinnet.train import train_from_config
from twinnet.training import ViewsBatch
from twinnet.training.batch import Batch, LabelledBatch
from twinnet.training.plans import build_plan

REPO = Path(__file__).resolve().parents[2]
LENGTH = 32
SEQUENCE_MODEL = {
    "input": {"kind": "sequence", "features": 9, "length": LENGTH},
    "encoder": {"name": "tdnn", "params": {"channels": [8, 8], "kernel": 3, "embedding_dim": 8}},
    "normalize": True,
}


def labelled_trajectories(classes: int = 4, per_class: int = 6) -> ItemSet:
    """Items of ``classes`` shapes (circles, waves, …), each drawn a little differently."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, LENGTH)
    rows, labels = [], []
    for c in range(classes):
        for _ in range(per_class):
            x = np.cos((c + 1) * t) + rng.normal(0, 0.05, LENGTH) + t
            y = np.sin((c % 2 + 1) * t) + rng.normal(0, 0.05, LENGTH)
            p = 0.5 + 0.1 * np.sin(t + c)
            rows.append([x, y, p, np.ones(LENGTH)])
            labels.append(c)
    x, y, p, pen = torch.from_numpy(np.asarray(rows, np.float32)).unbind(1)
    return ItemSet(derive_features(x, y, p, pen), np.asarray(labels), [f"shape{c}" for c in range(classes)])


def write_trajectory(path: Path, seed: int, n: int = 60) -> None:
    """One pen trajectory in SVC2004's text format: N, then N lines ``x y time pen azimuth altitude pressure``."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n)
    x = 2000 + 800 * np.cos(t * (1 + seed % 3)) + 300 * t
    y = 4000 + 500 * np.sin(t * (1 + seed % 2)) + rng.normal(0, 5, n)
    rows = [f"{x[i]:.0f} {y[i]:.0f} {10 * i} 1 1500 700 {300 + 200 * np.sin(t[i]):.0f}" for i in range(n)]
    path.write_text(f"{n}\n" + "\n".join(rows) + "\n")


def trajectory_folder(root: Path, n: int = 12) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        write_trajectory(root / f"pen_{i:02d}.txt", i)
    return root


def _labelled(batch: Batch) -> LabelledBatch:
    assert isinstance(batch, LabelledBatch)
    return batch


# -- supervised ---------------------------------------------------------------------------------------


def test_a_trajectory_model_trains_with_augmented_batches() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate(SEQUENCE_MODEL))
    items = labelled_trajectories()
    config = TrainConfig(epochs=1, samples_per_epoch=32, classes_per_batch=4, items_per_class=4, progress=False,
                         collapse={"probe_items": 0})  # fmt: skip
    trainer = Trainer(model, TripletLoss(), items, config, augment=AugmentConfig(enabled=True))
    assert isinstance(trainer.plan.augment, TrajectoryAugment)
    first = [_labelled(job()) for job in trainer.plan.epoch_jobs(0)]
    again = [_labelled(job()) for job in trainer.plan.epoch_jobs(0)]
    batch = first[0]
    assert batch.inputs.shape == (16, 9, LENGTH)
    # the plan's batches are augmented (not the stored items), and the same whenever epoch 0 is drawn
    assert not any(torch.allclose(batch.inputs[0], items.data[i], atol=1e-3) for i in range(len(items)))
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(first, again, strict=True))
    assert not torch.equal(batch.inputs, _labelled(trainer.plan.epoch_jobs(1)[0]()).inputs)
    result = trainer.fit()
    assert result.epochs_run == 1 and math.isfinite(result.history[0]["train_loss"])


def test_augmentation_for_an_input_kind_that_has_none_is_an_error() -> None:
    vectors = {"input": {"kind": "vector", "features": 9}, "encoder": {"name": "mlp", "params": {"embedding_dim": 4}}}
    model = build_model(ModelConfig.model_validate(vectors))
    items = ItemSet(torch.randn(8, 9), np.arange(8) % 2, ["a", "b"])
    with pytest.raises(ConfigError, match=r"data\.augment: no augmentation for vector inputs"):
        Trainer(model, TripletLoss(), items, TrainConfig(progress=False), augment=AugmentConfig(enabled=True))


# -- without labels -----------------------------------------------------------------------------------


def test_a_folder_of_trajectories_is_read_without_labels(tmp_path: Path) -> None:
    spec = ModelConfig.model_validate(SEQUENCE_MODEL).input
    data = read_dataset(trajectory_folder(tmp_path / "pens"), spec)
    assert data.format == "unlabelled_trajectories" and data.items.data.shape == (12, 9, LENGTH)
    assert not data.items.labelled.any() and list(data.items.labels) == list(range(12))  # each its own instance
    assert data.items.names[0].endswith("pen_00.txt")
    # an SVC2004 folder is still read with its writers
    svc = tmp_path / "svc"
    svc.mkdir()
    for user in (1, 2):
        for n in (1, 2, 21):
            write_trajectory(svc / f"U{user}S{n}.TXT", user * 100 + n)
    assert read_dataset(svc, spec).format == "online_signatures"
    # an unreadable file is named, or left out when asked
    (tmp_path / "pens" / "broken.txt").write_text("3\n1 2 3\n")
    with pytest.raises(DataError, match=r"broken\.txt"):
        read_dataset(tmp_path / "pens", spec)
    assert len(read_dataset(tmp_path / "pens", spec, options=ReadOptions(skip_bad=True)).items) == 12


def test_views_of_trajectories_need_augmentation() -> None:
    items = labelled_trajectories()
    with pytest.raises(ConfigError, match="two augmented views of each item"):
        build_plan("views", items, None, TrainConfig(batch_size=8))
    plan = build_plan("views", items, None, TrainConfig(batch_size=8),
                      augment=TrajectoryAugment(AugmentConfig().trajectory))  # fmt: skip
    batch = plan.epoch_jobs(0)[0]()
    assert isinstance(batch, ViewsBatch)
    a, b = batch.view_a, batch.view_b
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape == (8, 9, LENGTH)
    assert not torch.allclose(a, b, atol=1e-3)  # two different views of each item


def test_the_shipped_selfsup_config_trains_on_a_folder_of_trajectories(tmp_path: Path) -> None:
    folder = trajectory_folder(tmp_path / "pens", n=16)
    config = load_config(REPO / "configs" / "selfsup-trajectories.yaml", [
        f"data.path={folder}", f"model.input.length={LENGTH}", "model.encoder.params.hidden=8",
        "model.encoder.params.layers=1", "train.epochs=1", "train.batch_size=8", "train.progress=false",
        "train.collapse.probe_items=16",
    ])  # fmt: skip
    result = train_from_config(config, tmp_path / "run")
    assert result.epochs_run == 1 and math.isfinite(result.history[0]["train_loss"])
    assert "effective_rank" in result.history[0]
    assert (tmp_path / "run" / "model").is_dir()
