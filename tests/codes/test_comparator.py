"""The Hamming comparator: codes, orientation, integer thresholds, training, save → load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import twinnet
from twinnet.calibrate import calibrate
from twinnet.codes import HammingDistance, Int8Quantizer, hamming_matrix, itq_projection, with_codes
from twinnet.codes.bits import pack_bits
from twinnet.compare import COMPARATORS, DISTANCE
from twinnet.config import ModelConfig
from twinnet.losses import LOSSES
from twinnet.model import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def clustered(n_classes: int = 12, per: int = 6, dim: int = 16, spread: float = 0.15, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim))
    x = np.repeat(centres, per, 0) + spread * rng.standard_normal((n_classes * per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(n_classes), per)


def test_registered_and_exact_hamming_in_eval_mode() -> None:
    comparator = COMPARATORS.build("hamming", {"dim": 16, "bits": 64}).eval()
    assert isinstance(comparator, HammingDistance) and comparator.orientation == DISTANCE
    x, _ = clustered()
    a, b = torch.from_numpy(x[:10]), torch.from_numpy(x[10:25])
    codes_a, codes_b = comparator.encode(x[:10]), comparator.encode(x[10:25])
    # reference: signs of the projection, compared bit by bit
    w, c = comparator.weight.detach().numpy(), comparator.centre.numpy()
    bits_a, bits_b = (x[:10] - c) @ w >= 0, (x[10:25] - c) @ w >= 0
    expected = (bits_a[:, None] != bits_b[None]).sum(-1)
    assert np.array_equal(comparator.pairwise(a, b).numpy(), expected)
    assert np.array_equal(hamming_matrix(codes_a, codes_b), expected)
    assert np.array_equal(codes_a, pack_bits(bits_a))
    plan = comparator.index_plan(16)
    assert plan.metric == "hamming" and plan.dim == 64 and not plan.rescore
    assert np.array_equal(plan.to_native(-expected), expected)


def test_integer_threshold_decides_as_the_calibrated_one() -> None:
    comparator = HammingDistance(dim=16, bits=32).eval()
    x, y = clustered(seed=1)
    rng = np.random.default_rng(1)
    i, j = rng.integers(0, len(x), 400), rng.integers(0, len(x), 400)
    with torch.no_grad():
        d = comparator(torch.from_numpy(x[i]), torch.from_numpy(x[j])).numpy()
    same = y[i] == y[j]
    calibration = calibrate(d, same, comparator.orientation)
    t = calibration.native_threshold()
    k = HammingDistance.integer_threshold(t)
    assert isinstance(k, int) and np.array_equal(d <= k, comparator.matches(d, t))
    # the best integer threshold found by brute force has the calibrated (best) accuracy
    best = max(((d <= m) == same).mean() for m in range(33))
    assert ((d <= k) == same).mean() == pytest.approx(best)


def test_itq_beats_or_matches_simhash_on_clustered_data() -> None:
    x, _ = clustered(n_classes=40, per=5, dim=32, seed=2)
    _, w = itq_projection(x, 16, iterations=30)
    assert w.shape == (32, 16)
    assert np.allclose(w.T @ w, np.diag(np.diag(w.T @ w)), atol=1e-4)  # PCA directions rotated: orthogonal
    itq, sim = HammingDistance(32, 16, "itq").fit(x).eval(), HammingDistance(32, 16, "simhash").eval()

    def quantisation_error(c: HammingDistance) -> float:
        with torch.no_grad():
            h = c.project(torch.from_numpy(x)).numpy()
        h /= np.abs(h).mean()
        return float(((np.sign(h) - h) ** 2).mean())

    assert quantisation_error(itq) < quantisation_error(sim)


def test_int8_round_trip_is_within_half_a_step() -> None:
    x, _ = clustered(dim=8)
    q = Int8Quantizer.fit(x)
    codes = q.encode(x)
    assert codes.dtype == np.int8
    assert np.all(np.abs(q.decode(codes) - x) <= q.step / 2 + 1e-6)
    assert np.array_equal(Int8Quantizer.from_json(q.to_json()).encode(x), codes)


def test_relaxed_in_training_mode_and_the_hashing_loss_trains_the_codes() -> None:
    torch.manual_seed(0)
    x, y = clustered(n_classes=8, per=8, dim=16, spread=0.4, seed=3)
    emb, labels = torch.from_numpy(x), torch.from_numpy(y)
    comparator = HammingDistance(16, 32, "learned").train()
    loss = LOSSES.build("hashing", {"margin": 4.0, "quantization": 0.5})
    value = loss(emb, labels, comparator)
    value.backward()
    assert comparator.weight.grad is not None and comparator.weight.grad.abs().sum() > 0

    def separation() -> float:
        with torch.no_grad():
            d = comparator.eval().pairwise(emb, emb).numpy()
        comparator.train()
        same = y[:, None] == y[None]
        return float(d[~same].mean() - d[same & ~np.eye(len(y), dtype=bool)].mean())

    before = separation()
    optimiser = torch.optim.Adam(comparator.parameters(), lr=0.05)
    for _ in range(40):
        optimiser.zero_grad()
        loss(emb, labels, comparator).backward()
        optimiser.step()
    assert separation() > before + 1.0
    with pytest.raises(ValueError, match="hamming"):
        loss(emb, labels, COMPARATORS.build("euclidean"))


def tiny_model() -> twinnet.TwinNetwork:
    torch.manual_seed(0)
    config = ModelConfig.model_validate({
        "input": {"kind": "vector", "features": 10},
        "encoder": {"name": "mlp", "params": {"hidden": [16], "embedding_dim": 16}},
        "comparator": {"name": "euclidean"}, "normalize": True,
    })  # fmt: skip
    return build_model(config).eval()


def test_with_codes_save_load_gives_identical_codes(tmp_path) -> None:
    model = tiny_model()
    inputs = torch.randn(50, 10, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        emb = model.embed(inputs).numpy()
    hashed = with_codes(model, bits=16, method="itq", embeddings=emb).eval()
    assert hashed.config.comparator.name == "hamming" and hashed.calibration is None
    assert model.config.comparator.name == "euclidean"  # the original is untouched
    twinnet.save(hashed, tmp_path / "m")
    loaded = twinnet.load(tmp_path / "m")
    assert isinstance(loaded.comparator, HammingDistance) and loaded.comparator.method == "itq"
    assert np.array_equal(loaded.comparator.encode(emb), hashed.comparator.encode(emb))
    assert torch.equal(loaded.comparator.weight, hashed.comparator.weight)
    with torch.no_grad():
        assert torch.equal(loaded(inputs[:5], inputs[5:10]), hashed(inputs[:5], inputs[5:10]))
    with pytest.raises(ValueError, match="embeddings"):
        with_codes(model, method="itq")


def test_sign_codes_are_each_coordinates_sign_about_the_training_mean() -> None:
    rng = np.random.default_rng(4)
    train = rng.normal(0.3, 1.0, (200, 16)).astype(np.float32)
    x = rng.normal(0.3, 1.0, (9, 16)).astype(np.float32)
    comparator = HammingDistance(16, 16, "sign").fit(train).eval()
    expected = pack_bits(x - train.mean(0) > 0)  # NumPy reference: one bit a coordinate
    np.testing.assert_array_equal(comparator.encode(x), expected)
    with pytest.raises(ValueError, match="bits must be 16"):
        HammingDistance(16, 8, "sign")
