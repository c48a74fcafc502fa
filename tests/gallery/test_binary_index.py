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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def assert_same_answers(got: list, want: list) -> None:
    """The same identities and decisions; values equal up to float rounding (FAISS computes L2
    distances by another formula than the comparator)."""
    for g, w in zip(got, want, strict=True):
        assert g.identity == w.identity
        assert [(m.identity, m.same) for m in g.matches] == [(m.identity, m.same) for m in w.matches]
        assert np.allclose([m.value for m in g.matches], [m.value for m in w.matches], atol=1e-5)


def test_codes_with_float_rescoring_answer_as_the_float_gallery(tmp_path) -> None:
    """Codes propose candidates, the model's own comparator scores them: with as many candidates
    as templates a code gallery answers exactly as a float gallery, in the model's scale."""
    model = float_model()
    templates, queries = data(2)
    with torch.no_grad():
        mean = model.embed(templates).numpy().mean(0)
    coded = Gallery.create(tmp_path / "coded", model, codes=32, codes_fit=templates, rescore=IDS * PER)
    plain = Gallery.create(tmp_path / "plain", model, index="flat")
    try:
        assert coded.comparator is model.comparator and coded.metric == "hamming" and coded.plan.rescore
        # the hyperplanes pass through the mean template embedding, kept in gallery.json
        stored = json.loads((tmp_path / "coded" / "gallery.json").read_text())
        assert stored["rescore"] == IDS * PER and np.allclose(stored["codes"]["centre"], mean, atol=1e-6)
        reference = HammingDistance(32, 32, "simhash", 0).eval()
        reference.centre.copy_(torch.from_numpy(mean))
        assert np.array_equal(coded.plan.transform(mean[None] + 0.01), reference.encode(mean[None] + 0.01))
        for g in (coded, plain):
            for i in range(IDS):
                g.enroll(f"id{i:02d}", templates[PER * i : PER * (i + 1)])
        threshold = 0.3  # Euclidean distance: the model's scale, not Hamming
        got = coded.identify_batch(queries, k=3, threshold=threshold)
        want = plain.identify_batch(queries, k=3, threshold=threshold)
        assert_same_answers(got, want)
        decisions = [m.same for r in got for m in r.matches]
        assert any(decisions) and not all(decisions)
        verified, expected = (g.verify(queries[0], "id00", threshold=threshold) for g in (coded, plain))
        assert verified.same and verified.value == pytest.approx(expected.value, abs=1e-5)
        # few candidates: still scored in float, a subset of what the float gallery ranks
        few = coded.identify_batch(queries, k=1, candidates=4)
        assert all(r.matches[0].value >= w.matches[0].value - 1e-6 for r, w in zip(few, want))
    finally:
        coded.close()
        plain.close()
    again = Gallery.open(tmp_path / "coded", model)  # the centre and rescoring survive reopening
    try:
        assert_same_answers(again.identify_batch(queries, k=3, threshold=threshold), want)
    finally:
        again.close()


def test_codes_options_are_checked(tmp_path) -> None:
    model = float_model()
    with pytest.raises(DataError, match="give codes, or a model that compares codes"):
        Gallery.create(tmp_path / "a", model, rescore=10)
    with pytest.raises(DataError, match="give codes too"):
        Gallery.create(tmp_path / "a", model, codes_fit=np.zeros((2, FEATURES), np.float32))
    hand_made = with_codes(model, 16, "simhash")
    hand_made.comparator.rescore_with = None  # codes that do not say what they stand in for
    with pytest.raises(DataError, match="do not name the float comparator"):
        Gallery.create(tmp_path / "a", hand_made, rescore=10)
    with pytest.raises(DataError, match="non-finite embeddings"):
        Gallery.create(tmp_path / "b", model, codes=32, codes_fit=np.full((3, FEATURES), np.nan, np.float32))
    with pytest.raises(DataError, match=r"codes_fit: expected finite embeddings of shape \(n, 32\)"):
        Gallery.create(tmp_path / "b", dim=32, metric="cosine", codes=32, codes_fit=np.zeros((3, 7), np.float32))
    g = Gallery.create(tmp_path / "c", model, codes=32, rescore=5)
    g.close()
    info = json.loads((tmp_path / "c" / "gallery.json").read_text())
    bad_codes = (({"rescore": -1}, "'rescore'"), ({"codes": {"centre": [0.0] * 5}}, "codes.centre"),
                 ({"codes": {"centre": [float("nan")] * 32}}, "codes.centre"),
                 ({"codes": {"extra": 1}}, "'codes' must be"))  # fmt: skip
    for bad, field in bad_codes:
        broken = {**info, **bad, "codes": {**info["codes"], **bad.get("codes", {})}}
        (tmp_path / "c" / "gallery.json").write_text(json.dumps(broken))
        with pytest.raises(DataError, match=field):
            Gallery.open(tmp_path / "c", model)
    # the CLI: centred on the files of a folder, re-scored
    folder = tmp_path / "fit"
    folder.mkdir()
    templates, _ = data(3)
    for i in range(6):
        np.save(folder / f"t{i}.npy", templates[i].numpy())
    twinnet.save(model, tmp_path / "model")
    runner = CliRunner()
    result = runner.invoke(app, ["gallery", "create", str(tmp_path / "model"), "--gallery", str(tmp_path / "cli"),
                                 "--codes", "32", "--rescore", "40", "--codes-fit", str(folder), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "cli" / "gallery.json").read_text())
    with torch.no_grad():
        mean = model.embed(templates[:6]).numpy().mean(0)
    assert written["rescore"] == 40 and np.allclose(written["codes"]["centre"], mean, atol=1e-5)
    bad = runner.invoke(app, ["gallery", "create", str(tmp_path / "model"), "--gallery", str(tmp_path / "cli2"),
                              "--codes", "32", "--rescore", "-3"])  # fmt: skip
    assert bad.exit_code == 2 and "--rescore" in bad.output


def test_a_model_of_learned_or_itq_codes_re_scores_with_the_comparator_its_codes_stand_in_for(tmp_path, hashed) -> None:
    """``with_codes`` records the float comparator (``rescore_with``); a gallery of such a model
    with ``rescore`` proposes by Hamming distance and answers in that comparator's scale, as a
    float gallery of the float model does, also after save → load."""
    assert hashed.comparator.rescore_with == "euclidean"
    twinnet.save(hashed, tmp_path / "model")
    loaded = twinnet.load(tmp_path / "model")
    assert loaded.comparator.rescore_with == "euclidean"
    templates, queries = data(4)
    coded = Gallery.create(tmp_path / "coded", loaded, rescore=IDS * PER)
    plain = Gallery.create(tmp_path / "plain", float_model(), index="flat")
    try:
        assert coded.metric == "hamming" and coded.plan.rescore and coded.orientation.is_distance
        assert coded.default_threshold() is None  # the codes' calibration is not in this scale
        for g in (coded, plain):
            for i in range(IDS):
                g.enroll(f"id{i:02d}", templates[PER * i : PER * (i + 1)])
        assert_same_answers(coded.identify_batch(queries, k=3, threshold=0.3),
                            plain.identify_batch(queries, k=3, threshold=0.3))  # fmt: skip
    finally:
        coded.close()
        plain.close()


def test_ivf_with_many_candidates_returns_every_one_at_brute_force_distances_also_after_a_reload(tmp_path) -> None:
    # the IVF searches by counting per Hamming distance (no heap); FAISS 1.15's counting scanner
    # returned nothing at all unless its scan limit was set (facebookresearch/faiss issue 5555)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (3000, 4), dtype=np.uint8)
    queries = rng.integers(0, 256, (7, 4), dtype=np.uint8)
    index = BinaryFaissIndex(32, "hamming", "ivf", ivf_lists=8, nprobe=8)  # every list: exact
    index.add(np.arange(3000, dtype=np.int64) * 2, codes)
    index.save(tmp_path / "codes.index", change_id=1)
    reloaded, _ = BinaryFaissIndex.load(tmp_path / "codes.index", 32, "hamming", "ivf")
    expected = np.sort(hamming_matrix(queries, codes), 1)[:, :700]
    for searched in (index, reloaded):
        scores, ids = searched.search(queries, 700)
        assert (ids >= 0).all() and (ids % 2 == 0).all()
        assert np.array_equal(-scores, expected)
        d = hamming_matrix(queries, codes)
        assert np.array_equal(np.take_along_axis(d, ids // 2, 1), expected)  # each id at its own distance


@pytest.mark.parametrize("id_scale", [1, 2**56])  # 2**56: ids too large to pack beside the distance
def test_equal_distances_come_in_id_order_and_missing_results_last(id_scale) -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, (40, 2), dtype=np.uint8)  # few distinct codes: many ties
    ids = rng.permutation(40).astype(np.int64) * id_scale
    index = BinaryFaissIndex(16, "hamming", "flat")
    index.add(ids, codes)
    query = codes[:3]
    scores, found = index.search(query, 45)  # 5 more than it holds
    d = hamming_matrix(query, codes)
    for q in range(3):
        expected = sorted(zip(d[q].tolist(), ids.tolist()))
        assert list(zip((-scores[q, :40]).astype(int).tolist(), found[q, :40].tolist())) == expected
        assert (found[q, 40:] == -1).all() and np.isneginf(scores[q, 40:]).all()
