import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from twinnet.config import ModelConfig
from twinnet.errors import DataError, NotFoundError
from twinnet.gallery import Gallery
from twinnet.gallery.index import FaissIndex
from twinnet.model import build_model

rng = np.random.default_rng(0)
VECTORS = rng.normal(size=(40, 16)).astype(np.float32)


def vector_gallery(tmp_path, metric="euclidean", index="flat", backend="faiss"):
    g = Gallery.create(tmp_path / "g", dim=16, metric=metric, index=index, backend=backend)
    for i in range(20):
        g.enroll(f"id{i:02d}", VECTORS[2 * i : 2 * i + 2], {"n": i})
    return g


def test_enrol_identify_verify_remove_round_trip(tmp_path):
    g = vector_gallery(tmp_path)
    assert g.count() == {"identities": 20, "templates": 40} and "id03" in g
    probe = VECTORS[7] + 0.01
    result = g.identify(probe, k=3, threshold=0.5)
    assert result.identity == "id03" and len(result.matches) == 3
    assert result.matches[0].value == pytest.approx(np.linalg.norm(probe - VECTORS[7]), rel=1e-4)
    assert [m.same for m in result.matches] == [True, False, False]
    v = g.verify(probe, "id03", threshold=0.5)
    assert v.same and v.templates == 2
    assert g.verify(probe, "id04", threshold=0.5).same is False
    # batch forms agree with single ones
    batch = g.identify_batch(VECTORS[[0, 7, 9]], k=1)
    assert [b.matches[0].identity for b in batch] == ["id00", "id03", "id04"]
    assert [x.same for x in g.verify_batch(VECTORS[[0, 7]], ["id00", "id01"], threshold=0.5)] == [True, False]
    # update: add a template, merge metadata; replace drops old templates
    g.enroll("id03", VECTORS[:1], {"role": "admin"})
    assert g.get("id03")["templates"] == 3 and g.get("id03")["metadata"] == {"n": 3, "role": "admin"}
    g.enroll("id03", VECTORS[39:40], replace=True)
    assert g.get("id03")["templates"] == 1 and g.identify(VECTORS[7], k=1).matches[0].identity != "id03"
    assert g.remove("id05") == 2 and "id05" not in g
    assert all(m.identity != "id05" for m in g.identify(VECTORS[10], k=20).matches)
    assert [x["id"] for x in g.list(limit=2)] == ["id00", "id01"]
    with pytest.raises(NotFoundError, match="unknown identity 'nobody'"):
        g.verify(probe, "nobody")
    with pytest.raises(NotFoundError, match="unknown identity"):
        g.remove("nobody")
    with pytest.raises(NotFoundError):
        g.get("nobody")
    g.close()


def test_unknown_is_rejected_open_set(tmp_path):
    g = vector_gallery(tmp_path)
    stranger = rng.normal(size=16).astype(np.float32) * 5
    result = g.identify(stranger, k=2, threshold=0.5)
    assert result.identity is None and not result.to_dict()["known"] and result.matches  # ranked, but rejected
    assert g.identify(stranger, k=2).identity is not None  # without a threshold nothing is rejected
    g.close()


def test_cosine_gallery_scores_are_cosines(tmp_path):
    g = vector_gallery(tmp_path, metric="cosine")
    q = VECTORS[5]
    m = g.identify(q, k=1).matches[0]
    assert (m.identity == "id02" and m.value == pytest.approx(1.0, abs=1e-5)) or m.value > 0.99
    g.close()


def test_persistence_and_index_cache(tmp_path):
    g = vector_gallery(tmp_path)
    g.close()
    assert (tmp_path / "g" / "index.faiss").exists()
    g = Gallery.open(tmp_path / "g")
    assert g.count()["templates"] == 40 and g.identify(VECTORS[11], k=1).matches[0].identity == "id05"
    g.enroll("late", VECTORS[:1])
    del g  # no close: the cache is now stale (older generation) and must be rebuilt on open
    g = Gallery.open(tmp_path / "g")
    assert g.identify(VECTORS[0], k=2).matches[0].value == pytest.approx(0.0, abs=1e-3)
    assert {m.identity for m in g.identify(VECTORS[0], k=2).matches} == {"id00", "late"}
    g.close()


def test_bad_gallery_paths(tmp_path):
    with pytest.raises(DataError, match="gallery not found"):
        Gallery.open(tmp_path / "none")
    vector_gallery(tmp_path).close()
    with pytest.raises(DataError, match="already exists"):
        Gallery.create(tmp_path / "g", dim=16, metric="euclidean")
    with pytest.raises(DataError, match="needs dim and metric"):
        Gallery.create(tmp_path / "h")
    g = Gallery.open(tmp_path / "g")
    with pytest.raises(DataError, match="16-d vectors"):
        g.enroll("x", np.zeros((1, 5), np.float32))
    with pytest.raises(DataError, match="non-empty string"):
        g.enroll("  ", VECTORS[:1])
    g.close()


def small_model(comparator="euclidean", seed=0):
    torch.manual_seed(seed)
    encoder = {"name": "conv4", "params": {"hidden": 8, "blocks": 2, "embedding_dim": 12}}
    config = {"input": {"size": [8, 8]}, "encoder": encoder, "comparator": {"name": comparator}}
    return build_model(ModelConfig.model_validate(config)).eval()


def test_gallery_with_a_model_and_mismatched_model_refusal(tmp_path):
    model = small_model()
    images = torch.rand(6, 1, 8, 8)
    g = Gallery.create(tmp_path / "g", model)
    for i in range(6):
        g.enroll(f"c{i}", images[i : i + 1])
    assert g.identify(images[4], k=1).matches[0].identity == "c4"
    g.close()
    assert Gallery.open(tmp_path / "g", model).count()["identities"] == 6
    with pytest.raises(DataError, match="was built with model"):
        Gallery.open(tmp_path / "g", small_model(seed=1))


@pytest.mark.parametrize("comparator", ["weighted_l1", "mlp", "mahalanobis"])
def test_learned_comparators_are_rescored_exactly(tmp_path, comparator):
    model = small_model(comparator)
    if comparator == "mahalanobis":
        with torch.no_grad():
            model.comparator.L.copy_(torch.randn_like(model.comparator.L))
    g = Gallery.create(tmp_path / "g", model)
    emb = rng.normal(size=(30, 12)).astype(np.float32)
    for i in range(30):
        g.enroll(f"p{i}", emb[i : i + 1])
    queries = emb[:5] + rng.normal(scale=0.05, size=(5, 12)).astype(np.float32)
    with torch.no_grad():
        exact = model.comparator.pairwise(torch.from_numpy(queries), torch.from_numpy(emb)).numpy()
    for q, result in enumerate(g.identify_batch(queries, k=3)):
        order = model.comparator.orientation.rank(exact[q])
        assert [m.identity for m in result.matches] == [f"p{i}" for i in order[:3]]
        assert result.matches[0].value == pytest.approx(float(exact[q, order[0]]), rel=1e-4, abs=1e-5)
        v = g.verify(queries[q], "p7")
        assert v.value == pytest.approx(float(exact[q, 7]), rel=1e-4, abs=1e-5)


def test_approximate_indices_agree_with_exact(tmp_path):
    data = rng.normal(size=(3000, 16)).astype(np.float32)
    queries = data[:200] + rng.normal(scale=0.05, size=(200, 16)).astype(np.float32)
    ids = np.arange(3000)
    exact = FaissIndex(16, "l2", "flat")
    exact.add(ids, data)
    truth = exact.search(queries, 1)[1][:, 0]
    for kind in ("hnsw", "ivf"):
        approx = FaissIndex(16, "l2", kind)
        approx.add(ids, data)
        assert (approx.search(queries, 1)[1][:, 0] == truth).mean() >= 0.95, kind


def test_qdrant_backend_agrees_with_faiss(tmp_path):
    pytest.importorskip("qdrant_client")
    faiss_g = vector_gallery(tmp_path / "f")
    qdrant_g = vector_gallery(tmp_path / "q", backend="qdrant")
    queries = VECTORS + rng.normal(scale=0.3, size=VECTORS.shape).astype(np.float32)
    for a, b in zip(faiss_g.identify_batch(queries, k=3), qdrant_g.identify_batch(queries, k=3)):
        assert [m.identity for m in a.matches] == [m.identity for m in b.matches]
        assert np.allclose([m.value for m in a.matches], [m.value for m in b.matches], rtol=1e-4, atol=1e-4)
    qdrant_g.remove("id01")
    assert "id01" not in {m.identity for m in qdrant_g.identify(VECTORS[2], k=5).matches}
    qdrant_g.close()
    reopened = Gallery.open(tmp_path / "q" / "g")
    assert reopened.count()["identities"] == 19 and reopened.identify(VECTORS[8], k=1).matches[0].identity == "id04"
    reopened.close()
    faiss_g.close()


_ENROLLER = """
import sys, numpy as np
from twinnet.gallery import Gallery
g = Gallery.open(sys.argv[1])
rng = np.random.default_rng(0)
i = 0
while True:
    g.enroll(f"{sys.argv[2]}{i}", rng.normal(size=(3, 16)).astype(np.float32), {"i": i})
    print(f"{sys.argv[2]}{i}", flush=True)  # acknowledged
    i += 1
"""


@pytest.mark.slow
def test_kill_during_enrolment_loses_nothing_acknowledged(tmp_path):
    Gallery.create(tmp_path / "g", dim=16, metric="euclidean").close()
    for round_, delay in enumerate((0.4, 0.9)):
        proc = subprocess.Popen([sys.executable, "-c", _ENROLLER, str(tmp_path / "g"), f"r{round_}-"],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        acknowledged = []
        deadline = time.time() + 60
        while len(acknowledged) < 5 and time.time() < deadline:
            acknowledged.append(proc.stdout.readline().strip())
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
        acknowledged += [x for x in rest.split() if x]
        g = Gallery.open(tmp_path / "g")
        for identity in acknowledged:
            assert g.get(identity)["templates"] == 3
        assert g.count()["templates"] == 3 * g.count()["identities"]
        assert g.identify(np.zeros(16, np.float32), k=1).matches  # the index loads and answers
        g.close()
    assert json.loads((tmp_path / "g" / "gallery.json").read_text())["format"] == "twinnet-gallery"


def test_vector_model_inputs_are_embedded_not_mistaken_for_embeddings(tmp_path):
    torch.manual_seed(0)
    config = {"input": {"kind": "vector", "features": 12},
              "encoder": {"name": "mlp", "params": {"hidden": [16], "embedding_dim": 12}}}  # fmt: skip
    model = build_model(ModelConfig.model_validate(config)).eval()
    g = Gallery.create(tmp_path / "g", model)
    raw = rng.normal(size=(3, 12)).astype(np.float32)
    g.enroll("a", raw[:1])
    with torch.no_grad():
        embedded = model.embed(torch.from_numpy(raw[:1])).numpy()
    assert np.allclose(g.store.templates_of("a", 12), embedded, atol=1e-6)  # the model ran on the raw vector
    g.enroll("b", embedded, precomputed=True)
    assert np.allclose(g.store.templates_of("b", 12), embedded)
    g.close()


def test_half_twin_gallery_holds_side_b_and_is_queried_with_side_a(tmp_path):
    torch.manual_seed(0)
    mlp = {"name": "mlp", "params": {"hidden": [16], "embedding_dim": 8}}
    config = {"input": {"kind": "vector", "features": 12}, "encoder": mlp, "encoder_b": mlp}
    model = build_model(ModelConfig.model_validate(config)).eval()
    raw = torch.from_numpy(rng.normal(size=(4, 12)).astype(np.float32))
    g = Gallery.create(tmp_path / "g", model)
    for i in range(4):
        g.enroll(f"d{i}", raw[i : i + 1])
    with torch.no_grad():
        docs, queries = model.embed(raw, "b").numpy(), model.embed(raw, "a").numpy()
    assert np.allclose(g.store.templates_of("d2", 8), docs[2:3], atol=1e-6)
    assert not np.allclose(docs, queries, atol=1e-3)  # the two towers differ, so the check means something
    values = np.linalg.norm(queries[:, None] - docs[None], axis=-1)
    for q, result in enumerate(g.identify_batch(raw, k=4)):
        assert [m.identity for m in result.matches] == [f"d{i}" for i in np.argsort(values[q])]
        assert [m.value for m in result.matches] == pytest.approx(np.sort(values[q]).tolist(), abs=1e-4)
    assert g.verify(raw[1], "d3").value == pytest.approx(float(values[1, 3]), abs=1e-4)
    g.close()


def test_mean_template_is_one_unit_template_enrolled_once(tmp_path):
    """``template="mean"``: several inputs make one template, their mean (unit length again for a
    normalising model); the same inputs again, in any order, add nothing."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate({
        "input": {"kind": "vector", "features": 6}, "encoder": {"name": "mlp", "params": {"hidden": [8],
        "embedding_dim": 4}}, "comparator": {"name": "cosine"}, "normalize": True}))  # fmt: skip
    model.eval()
    x = torch.randn(5, 6)
    hashes = [f"sha256:{i}" for i in range(5)]
    with Gallery.create(tmp_path / "g", model) as g:
        result = g.enroll_detailed("alice", x, hashes=hashes, sources=[f"c{i}.flac" for i in range(5)], template="mean")
        assert (result.added, result.already) == (1, 0) and g.get("alice")["templates"] == 1
        with torch.no_grad():
            z = model.embed(x).numpy()
        expected = z.mean(0) / np.linalg.norm(z.mean(0))
        stored = g.store.templates_of("alice", g.dim)[0]
        assert np.allclose(stored, expected, atol=1e-6) and np.isclose(np.linalg.norm(stored), 1.0)
        again = g.enroll_detailed("alice", x[[4, 2, 0, 1, 3]], hashes=hashes[::-1], template="mean")
        assert (again.added, again.already) == (0, 5) and g.get("alice")["templates"] == 1
        g.enroll("alice", x[:2], hashes=hashes[:2], template="mean")  # another set: another template
        assert g.get("alice")["templates"] == 2
        with pytest.raises(DataError, match="template must be 'all' or 'mean'"):
            g.enroll("bob", x, template="median")
    vectors = vector_gallery(tmp_path / "v")  # no model, no normalising: the plain mean
    vectors.enroll("mean", VECTORS[:4], template="mean")
    assert np.allclose(vectors.store.templates_of("mean", 16)[0], VECTORS[:4].mean(0), atol=1e-6)
    vectors.close()


@pytest.mark.parametrize("orientation_kind", ["distance", "similarity"])
def test_best_per_identity_matches_a_scan_including_ties_and_removed_rows(orientation_kind):
    from twinnet.compare import Orientation
    from twinnet.gallery.gallery import best_per_identity

    orientation = Orientation(orientation_kind)
    rng = np.random.default_rng(3)
    row_ids = rng.permutation(200).astype(np.int64)
    values = rng.integers(0, 6, 200).astype(np.float64)  # integer values: many ties
    owners = {int(r): f"id{int(r) % 17}" for r in row_ids if r % 11}  # rows ≡ 0 mod 11: removed
    expected: dict[str, float] = {}  # the plain scan this replaces
    for rowid, value in zip(row_ids.tolist(), values.tolist()):
        identity = owners.get(rowid)
        if identity is not None and (identity not in expected or orientation.better(value, expected[identity])):
            expected[identity] = value
    names, best = best_per_identity(row_ids, values, owners, orientation)
    assert names == list(expected) and best.tolist() == list(expected.values())
    empty_names, empty_best = best_per_identity(np.empty(0, np.int64), np.empty(0), owners, orientation)
    assert empty_names == [] and len(empty_best) == 0


def test_templates_matrix_returns_stored_rows_in_rowid_order_with_their_owners(tmp_path):
    g = Gallery.create(tmp_path / "g", dim=4, metric="euclidean")
    try:
        vectors = np.arange(24, dtype=np.float32).reshape(6, 4)
        for i in range(3):
            g.enroll(f"p{i}", vectors[2 * i : 2 * i + 2])
        g.remove("p1")
        all_ids = np.arange(-1, 10, dtype=np.int64)[::-1]  # unsorted, with -1 and rowids never stored
        ids, owners, matrix = g.store.templates_matrix(all_ids, 4)
        assert ids.tolist() == sorted(ids.tolist()) and owners == ["p0", "p0", "p2", "p2"]
        reference = g.store.vectors_of(all_ids, 4)
        assert sorted(reference) == ids.tolist()
        assert all(np.array_equal(matrix[i], reference[r]) for i, r in enumerate(ids.tolist()))
    finally:
        g.close()
