"""The input-similarity term (train.input_similarity_weight): its value, its gradient, where it applies."""

import numpy as np
import pytest
import torch

from twinnet.compare import EuclideanDistance
from twinnet.config import TrainConfig
from twinnet.data.items import from_arrays
from twinnet.data.pairs import Pairs
from twinnet.errors import ConfigError
from twinnet.losses.input_similarity import input_similarity_loss
from twinnet.losses.triplet import TripletLoss
from twinnet.model import TwinNetwork
from twinnet.training.batch import LabelledBatch
from twinnet.training.plans import BATCH_PLANS


def _reference(z: np.ndarray, x: np.ndarray) -> float:
    """Written out element by element, apart from the implementation's matrix form."""
    x = x.reshape(len(x), -1)
    x = x - x.mean(axis=0)
    n = len(z)
    total = 0.0
    for i in range(n):
        for j in range(n):
            cz = z[i] @ z[j] / (np.linalg.norm(z[i]) * np.linalg.norm(z[j]))
            cx = x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
            total += (cz - cx) ** 2
    return total / n**2


def test_value_matches_an_element_by_element_reference():
    rng = np.random.default_rng(0)
    z, x = rng.normal(size=(7, 5)), rng.random(size=(7, 1, 3, 4))
    got = input_similarity_loss(torch.tensor(z), torch.tensor(x)).item()
    assert got == pytest.approx(_reference(z, x), rel=1e-9)


def test_zero_when_the_embedding_is_the_centred_input_up_to_scale():
    x = torch.rand(9, 6, dtype=torch.float64)
    z = 3.0 * (x - x.mean(0))
    assert input_similarity_loss(z, x).item() == pytest.approx(0.0, abs=1e-12)
    assert input_similarity_loss(torch.randn(9, 4, dtype=torch.float64), x).item() > 0.05


def test_gradient_reaches_the_embeddings_only():
    x = torch.rand(6, 1, 2, 2, requires_grad=True)
    z = torch.randn(6, 3, requires_grad=True)
    input_similarity_loss(z, x).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert x.grad is None


def test_mismatched_batch_sizes_are_refused():
    with pytest.raises(ValueError, match="3 embeddings for 4 inputs"):
        input_similarity_loss(torch.zeros(3, 2), torch.zeros(4, 2))


def test_an_embedding_loss_adds_the_weighted_term_to_its_class_term():
    torch.manual_seed(0)
    model = TwinNetwork(torch.nn.Linear(4, 3), EuclideanDistance(), normalize=True)
    x, labels = torch.rand(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = TripletLoss(margin=0.3, mining="all")
    plain = loss.compute(model, LabelledBatch(x, labels))
    weighted = loss.compute(model, LabelledBatch(x, labels, input_similarity_weight=2.5))
    expected = plain + 2.5 * input_similarity_loss(model.embed(x), x)
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)


def _items(n_classes: int = 4, per_class: int = 4):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(n_classes), per_class)
    return from_arrays(rng.random((len(labels), 6)).astype(np.float32), labels)


def test_pk_batches_carry_the_weight():
    config = TrainConfig(classes_per_batch=2, items_per_class=2, samples_per_epoch=8, input_similarity_weight=0.7)
    plan = BATCH_PLANS.get("pk")(_items(), None, config)
    batch = plan.epoch_jobs(0)[0]()
    assert batch.input_similarity_weight == 0.7


def test_pair_plans_refuse_the_weight_instead_of_dropping_it():
    items = _items()
    pairs = Pairs(np.array([0, 1]), np.array([4, 2]), np.array([False, True]))
    config = TrainConfig(batch_size=2, input_similarity_weight=1.0)
    with pytest.raises(ConfigError, match="train.input_similarity_weight"):
        BATCH_PLANS.get("pairs")(items, pairs, config, loss_name="contrastive")
