"""Extending twinnet from outside the package: a comparator, a loss, a protocol and a data format,
each one class plus its registration, used end to end (train a few steps, evaluate, save, load,
identify against a gallery). The README's "Extending twinnet" section shows the same four."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import twinnet
from twinnet.compare import COMPARATORS, SCORE, Comparator
from twinnet.config import InputSpec, parse_config
from twinnet.data.items import from_arrays
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.embedding import embed_batches
from twinnet.evaluate import evaluate_path
from twinnet.gallery import Gallery
from twinnet.losses import LOSSES, EmbeddingLoss
from twinnet.protocols import PROTOCOLS, EvaluationProtocol, ProtocolResult, register_protocol
from twinnet.train import train_from_config


class NegativeL1(Comparator):
    """A similarity (larger = more alike) with no index plan of its own: searched by re-scoring."""

    orientation = SCORE

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -(a - b).abs().sum(-1)


class CentroidLoss(EmbeddingLoss):
    """Pull every embedding towards its class mean and keep class means ``margin`` apart."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be positive, not {margin}")
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, comparator: Comparator | None = None):
        classes, inverse = labels.unique(return_inverse=True)
        centres = torch.zeros(len(classes), embeddings.shape[1]).index_add_(0, inverse, embeddings)
        centres = centres / torch.bincount(inverse, minlength=len(classes)).unsqueeze(1)
        pull = (embeddings - centres[inverse]).pow(2).sum(1).mean()
        gaps = torch.cdist(centres, centres) + torch.eye(len(classes)) * 1e3
        return pull + (self.margin - gaps).clamp_min(0).mean()


class LeaveOneOut(EvaluationProtocol):
    """Each item's nearest other item (by the model's comparator) has its class: recall@1."""

    primary_metric = "recall@1"
    summary = "leave-one-out nearest-neighbour identification"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def evaluate(self, model, data: Dataset) -> ProtocolResult:
        z = embed_batches(model, data.items)
        sim = model.comparator.pairwise_similarity(z, z).fill_diagonal_(-float("inf"))
        hits = data.items.labels[sim.argmax(1).numpy()] == data.items.labels
        return self.result({"recall@1": float(hits.mean()), "items": len(hits)})


class NpzSource(DataSource):
    """An ``.npz`` file with arrays ``x`` (vectors) and ``y`` (labels); read without pickles."""

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        return path.suffix == ".npz"

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        with np.load(path, allow_pickle=False) as arrays:
            return Dataset(from_arrays(arrays["x"].astype(np.float32), arrays["y"]))


@pytest.fixture
def extensions():
    names = {COMPARATORS: "test_negative_l1", LOSSES: "test_centroid", DATA_SOURCES: "test_npz"}
    COMPARATORS.register("test_negative_l1")(NegativeL1)
    LOSSES.register("test_centroid")(CentroidLoss)
    DATA_SOURCES.register("test_npz")(NpzSource)
    register_protocol("test_loo")(LeaveOneOut)
    yield
    for registry, name in names.items():
        registry.unregister(name)
    PROTOCOLS.unregister("test_loo")


def test_one_of_each_registered_from_outside_is_used_end_to_end(extensions, tmp_path):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x[digits.target < 6], y=digits.target[digits.target < 6])
    np.savez(tmp_path / "test.npz", x=x[digits.target >= 6], y=digits.target[digits.target >= 6])
    config = parse_config({
        "model": {"input": {"kind": "vector", "features": 64}, "normalize": True,
                  "encoder": {"name": "mlp", "params": {"hidden": [64], "embedding_dim": 16}},
                  "comparator": {"name": "test_negative_l1"}},
        "data": {"path": str(tmp_path / "train.npz"), "format": "test_npz", "val_classes": 0.34},
        "loss": {"name": "test_centroid", "params": {"margin": 0.5}},
        "train": {"epochs": 2, "samples_per_epoch": 512, "classes_per_batch": 4, "items_per_class": 8,
                  "progress": False, "validation": {"protocol": "test_loo", "pairs": 200}},
    })  # fmt: skip
    result = train_from_config(config, tmp_path / "run")
    assert result.validation["recall@1"] > 0.5  # the custom protocol chose the checkpoint

    evaluated = evaluate_path(result.model_dir, tmp_path / "test.npz", "test_loo")  # format sniffed: .npz
    assert evaluated["protocol"] == "test_loo" and evaluated["items"] == int((digits.target >= 6).sum())
    assert evaluated["recall@1"] > 0.5

    model = twinnet.load(result.model_dir)
    assert isinstance(model.comparator, NegativeL1) and model.calibration is not None
    # the calibrated threshold is a similarity: "same if score >= threshold"
    assert model.calibration.rule == "same if score >= threshold"

    test = NpzSource().read(tmp_path / "test.npz", model.input_spec(), ReadOptions()).items
    z = embed_batches(model, test)
    with Gallery.create(tmp_path / "gallery", model) as gallery:
        for c in range(len(test.class_names)):
            first = np.nonzero(test.labels == c)[0][:3]
            gallery.enroll(test.class_names[c], z[first].numpy(), precomputed=True)
        probe = np.nonzero(test.labels == 0)[0][10]
        found = gallery.identify(z[probe].numpy())
    brute = model.comparator.pairwise(z[probe : probe + 1], z).squeeze(0)
    # the gallery's best value is the best over the enrolled templates, as the comparator says
    enrolled = np.concatenate([np.nonzero(test.labels == c)[0][:3] for c in range(len(test.class_names))])
    assert found.matches[0].value == pytest.approx(float(brute[enrolled].max()), abs=1e-4)
    assert found.matches[0].value >= found.matches[-1].value  # a score: best first is largest
