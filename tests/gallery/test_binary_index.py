"""Galleries of binary codes: FAISS binary indexes (flat, IVF, HNSW) behind the Gallery API,
checked against a brute-force Hamming search, through the cache, other writers and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import twinnet
from twinnet.cli import app
from twinnet.codes import HammingDistance, hamming_matrix, with_codes
from twinnet.config import ModelConfig
from twinnet.errors import DataError
from twinnet.gallery import Gallery
from twinnet.gallery.binary_index import BinaryFaissIndex
from twinnet.gallery.index import CACHE_MAGIC
from twinnet.model import build_model

PER, IDS, FEATURES = 3, 60, 10


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def float_model() -> twinnet.TwinNetwork:
    torch.manual_seed(0)
    config = ModelConfig.model_validate({
        "input": {"kind": "vector", "features": FEATURES},
        "encoder": {"name": "mlp", "params": {"hidden": [32], "embedding_dim": 32}},
        "comparator": {"name": "euclidean"}, "normalize": True,
    })  # fmt: skip
    return build_model(config).eval()


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(IDS, FEATURES, generator=g)
    templates = centres.repeat_interleave(PER, 0) + 0.2 * torch.randn(IDS * PER, FEATURES, generator=g)
    queries = centres[:20] + 0.3 * torch.randn(20, FEATURES, generator=g)
    return templates, queries


@pytest.fixture(scope="module")
def hashed() -> twinnet.TwinNetwork:
    model = float_model()
    templates, _ = data()
    with torch.no_grad():
        emb = model.embed(templates).numpy()
    return with_codes(model, bits=32, method="itq", embeddings=emb).eval()


def brute_force(model: twinnet.TwinNetwork, queries: torch.Tensor, templates: torch.Tensor) -> np.ndarray:
    """Best Hamming distance per (query, identity), from packed codes and a NumPy popcount."""
    with torch.no_grad():
        q, t = model.embed(queries).numpy(), model.embed(templates).numpy()
    d = hamming_matrix(model.comparator.encode(q), model.comparator.encode(t))
    return d.reshape(len(q), IDS, PER).min(2)


def enrolled(path, model, index: str, templates: torch.Tensor) -> Gallery:
    g = Gallery.create(path, model, index=index)
    for i in range(len(templates) // PER):
        g.enroll(f"id{i:02d}", templates[PER * i : PER * (i + 1)])
    return g


def check_identify(g: Gallery, queries: torch.Tensor, best: np.ndarray, k: int = 3) -> None:
    results = g.identify_batch(queries, k=k, threshold=20)
    for q, result in enumerate(results):
        order = np.argsort(best[q], kind="stable")[:k]
        assert [m.identity for m in result.matches] == [f"id{i:02d}" for i in order]
        assert [m.value for m in result.matches] == best[q, order].tolist()
        assert [m.same for m in result.matches] == (best[q, order] <= 20).tolist()


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_identify_matches_brute_force_hamming(tmp_path, hashed, index) -> None:
    templates, queries = data()
    best = brute_force(hashed, queries, templates)
    g = enrolled(tmp_path / "g", hashed, index, templates)
    try:
        assert isinstance(g._index, BinaryFaissIndex) and g._index.kind == index and g.metric == "hamming"
        assert g.count() == {"identities": IDS, "templates": IDS * PER}
        check_identify(g, queries, best)
        # verify: the best and the mean Hamming distance to the claimed identity's templates
        claimed = [f"id{i:02d}" for i in range(5)]
        checks = g.verify_batch(queries[:5], claimed, threshold=12)
        assert [c.value for c in checks] == best[np.arange(5), np.arange(5)].tolist()
        assert [c.same for c in checks] == (best[np.arange(5), np.arange(5)] <= 12).tolist()
        g.remove("id00")  # HNSW cannot delete: rebuilt; flat and IVF remove in place
        rest = best.copy()
        rest[:, 0] = 10**6
        results = g.identify_batch(queries, k=3, threshold=20)
        assert all("id00" not in [m.identity for m in r.matches] for r in results)
        assert [r.matches[0].value for r in results] == rest.min(1).tolist()
    finally:
        g.close()


def test_cache_reopen_and_another_writer(tmp_path, hashed) -> None:
    templates, queries = data()
    best = brute_force(hashed, queries, templates)
    g = enrolled(tmp_path / "g", hashed, "flat", templates[: PER * (IDS - 1)])
    g.close()
    assert (tmp_path / "g" / "index.faiss").read_bytes().startswith(CACHE_MAGIC)
    first = Gallery.open(tmp_path / "g", hashed)
    second = Gallery.open(tmp_path / "g", hashed)  # another connection: a second writer
    try:
        assert first.index_status()["origin"] == "cache"
        second.enroll(f"id{IDS - 1:02d}", templates[PER * (IDS - 1) :])
        check_identify(first, queries, best)  # sees the other writer's enrolment without reopening
    finally:
        second.close()
        first.close()
    # a cache file from another index (damaged) is rebuilt, not trusted
    (tmp_path / "g" / "index.faiss").write_bytes(CACHE_MAGIC + b"garbage")
    again = Gallery.open(tmp_path / "g", hashed)
    try:
        assert again.index_status()["origin"] == "rebuilt"
        check_identify(again, queries, best)
    finally:
        again.close()


def test_codes_gallery_of_a_float_model_and_the_cli(tmp_path) -> None:
    model = float_model()
    templates, queries = data(1)
    g = Gallery.create(tmp_path / "g", model, codes=32)
    try:
        assert isinstance(g.comparator, HammingDistance) and g.comparator.bits == 32
        assert g.comparator is not model.comparator and g.default_threshold() is None
        for i in range(IDS):
            g.enroll(f"id{i:02d}", templates[PER * i : PER * (i + 1)])
        reference = HammingDistance(32, 32, "simhash", 0).eval()  # the gallery's codes: SimHash, seed 0
        with torch.no_grad():
            q, t = model.embed(queries).numpy(), model.embed(templates).numpy()
        best = hamming_matrix(reference.encode(q), reference.encode(t)).reshape(len(q), IDS, PER).min(2)
        results = g.identify_batch(queries, k=1)
        assert [r.matches[0].value for r in results] == best.min(1).tolist()
        assert all(r.matches[0].same is None for r in results)  # no threshold in this scale
    finally:
        g.close()
    with pytest.raises(DataError, match="multiple of 8"):
        Gallery.create(tmp_path / "bad", model, codes=12)
    with pytest.raises(DataError, match="already compares binary codes"):
        Gallery.create(tmp_path / "twice", with_codes(model, 16, "simhash"), codes=16)
    twinnet.save(model, tmp_path / "model")
    runner = CliRunner()
    result = runner.invoke(app, ["gallery", "create", str(tmp_path / "model"), "--gallery", str(tmp_path / "cli"),
                                 "--codes", "128", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cli" / "gallery.json").read_text())["codes"] == {
        "bits": 128, "method": "simhash", "seed": 0}  # fmt: skip
    bad = runner.invoke(app, ["gallery", "create", str(tmp_path / "model"), "--gallery", str(tmp_path / "cli2"),
                              "--codes", "100"])  # fmt: skip
    assert bad.exit_code == 2 and "multiple of 8" in bad.output
