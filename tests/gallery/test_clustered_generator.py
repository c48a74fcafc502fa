"""The identity-shaped generator: it reproduces the spread it was fitted on, and is seeded."""

from __future__ import annotations

import numpy as np
import pytest

from twinnet.errors import DataError
from twinnet.gallery.synthetic import IdentityGenerator, stats


def reference_data(n_ids: int = 300, k: int = 8, dim: int = 12, seed: int = 0):
    """Identities with an anisotropic between-identity spread and a smaller within-identity one."""
    rng = np.random.default_rng(seed)
    between = np.diag(np.linspace(2.0, 0.2, dim))
    within = 0.4 * np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    centres = rng.standard_normal((n_ids, dim)) @ between.T + 1.0
    x = np.repeat(centres, k, 0) + rng.standard_normal((n_ids * k, dim)) @ within.T
    return x.astype(np.float32), np.repeat(np.arange(n_ids), k), between @ between.T, within @ within.T


def test_fit_recovers_both_covariances() -> None:
    x, y, between_cov, within_cov = reference_data()
    gen = IdentityGenerator.fit(x, y)
    assert not gen.normalize and gen.dim == 12
    assert np.allclose(gen.mean, 1.0, atol=0.25)
    assert np.allclose(gen.within @ gen.within.T, within_cov, atol=0.03)
    assert np.allclose(gen.between @ gen.between.T, between_cov, atol=0.6)  # 300 identities: a rougher estimate
    sx, sy = gen.sample(300, 8, seed=3)
    real, synthetic = stats(x, y), stats(sx, sy)
    for key in ("same_cosine", "different_cosine", "eer"):
        assert synthetic[key] == pytest.approx(real[key], abs=0.03)


def test_unit_embeddings_stay_unit_and_generation_is_seeded_and_chunk_free() -> None:
    x, y, _, _ = reference_data(dim=8)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    gen = IdentityGenerator.fit(unit, y)
    assert gen.normalize
    whole, labels = gen.sample(2500, 3, seed=5)
    assert whole.shape == (7500, 8) and np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(labels, np.repeat(np.arange(2500), 3))
    chunks = list(gen.generate(2500, 3, seed=5, chunk=3000))
    assert len(chunks) > 1
    assert np.array_equal(np.concatenate([c for _, c in chunks]), whole)
    assert np.array_equal(gen.sample(2500, 3, seed=5)[0], whole)
    assert not np.array_equal(gen.sample(2500, 3, seed=6)[0], whole)
    probes = gen.sample(2500, 3, seed=5, draw=1)[0]  # the same identities, other templates
    assert not np.array_equal(probes, whole)
    same_identity = np.einsum("ij,ij->i", probes, whole).mean()
    assert same_identity > np.einsum("ij,ij->i", probes, np.roll(whole, 3, 0)).mean()


def test_bad_input_is_refused() -> None:
    with pytest.raises(DataError, match="two identities"):
        IdentityGenerator.fit(np.ones((3, 4)), np.array([0, 1, 2]))
    with pytest.raises(DataError, match="do not match"):
        IdentityGenerator.fit(np.ones((3, 4)), np.array([0, 1]))
    gen = IdentityGenerator.fit(*reference_data(n_ids=10)[:2])
    with pytest.raises(DataError, match="at least one"):
        next(gen.generate(0, 3))
