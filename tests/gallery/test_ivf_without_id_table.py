"""IVF indexes without FAISS's id → (list, offset) hash table (``DirectMap.NoMap``, the default):
removal scans the lists, reconstruction walks them, and searches after removals and re-adds
agree with a brute-force search over what is left."""

from __future__ import annotations

import numpy as np
import pytest

from twinnet.codes import hamming_matrix
from twinnet.gallery.binary_index import BinaryFaissIndex
from twinnet.gallery.index import FaissIndex, index_similarity

N = 3000


def vectors(metric: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if metric == "hamming":
        return rng.integers(0, 256, (n, 8), dtype=np.uint8)
    return rng.standard_normal((n, 16)).astype(np.float32)


def new_index(metric: str, id_table: bool = False) -> FaissIndex:
    if metric == "hamming":
        return BinaryFaissIndex(64, "hamming", "ivf", ivf_lists=16, nprobe=16, id_table=id_table)
    return FaissIndex(16, "l2", "ivf", ivf_lists=16, nprobe=16, id_table=id_table)  # type: ignore[arg-type]


def brute_scores(metric: str, queries: np.ndarray, held: np.ndarray) -> np.ndarray:
    if metric == "hamming":
        return -hamming_matrix(queries, held).astype(np.float32)
    return index_similarity("l2", queries, held)


@pytest.fixture(params=["hamming", "l2"])
def metric(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_no_id_table_by_default_and_removal_is_exact(metric: str) -> None:
    index = new_index(metric)
    assert index.index.direct_map.type == index.faiss.DirectMap.NoMap
    ids = np.random.default_rng(1).permutation(10 * N)[:N].astype(np.int64) * 7 + 3  # sparse, unordered
    x = vectors(metric, N, 0)
    index.add(ids, x)
    gone = ids[::3]
    assert index.remove(gone)
    # removed again (and ids never held): a no-op, as with the table
    assert index.remove(np.r_[gone[:5], np.int64(-5), np.int64(10**9)])
    keep = np.ones(N, bool)
    keep[::3] = False
    # re-adding a removed id with a new vector: it is found once, with the new vector
    back, back_vector = gone[:4], vectors(metric, 4, 9)
    index.add(back, back_vector)
    held_ids = np.r_[ids[keep], back]
    held = np.concatenate([x[keep], back_vector])
    assert len(index) == len(held_ids)
    np.testing.assert_array_equal(index.ids(), np.sort(held_ids))
    queries = np.concatenate([x[:6], back_vector])  # removed vectors and re-added ones
    scores, found = index.search(queries, len(held_ids))  # nprobe = lists: an exact search
    assert not np.isin(found, gone[4:]).any()
    truth = brute_scores(metric, queries, held)
    for row in range(len(queries)):
        assert sorted(found[row].tolist()) == sorted(held_ids.tolist())
        np.testing.assert_allclose(np.sort(scores[row])[::-1], np.sort(truth[row])[::-1], rtol=1e-4, atol=1e-3)
        order = np.argsort(-truth[row], kind="stable")
        assert scores[row, 0] == pytest.approx(truth[row, order[0]], rel=1e-4, abs=1e-3)
    # the re-added vectors are their own nearest neighbours
    top = found[len(x[:6]) :, 0]
    np.testing.assert_array_equal(top, back)


def test_reconstruct_walks_the_lists(metric: str) -> None:
    index = new_index(metric)
    ids = np.arange(N, dtype=np.int64) * 5
    x = vectors(metric, N, 2)
    index.add(ids, x)
    index.remove(ids[:10])
    picked = np.array([ids[500], ids[10], ids[-1], ids[500]])
    np.testing.assert_array_equal(index.reconstruct(picked), x[[500, 10, N - 1, 500]])
    assert index.reconstruct(np.zeros(0, np.int64)).shape == (0, x.shape[1])
    with pytest.raises(KeyError, match=str(ids[3])):
        index.reconstruct(np.array([ids[20], ids[3]]))
    with pytest.raises(KeyError):
        index.reconstruct(np.array([1]))  # never held


def test_with_the_table_on_request_and_cache_files_drop_it(tmp_path, metric: str) -> None:
    ids = np.arange(N, dtype=np.int64)
    x = vectors(metric, N, 3)
    with_table = new_index(metric, id_table=True)
    with_table.add(ids, x)
    without = new_index(metric)
    without.add(ids, x)
    assert with_table.index.direct_map.type == with_table.faiss.DirectMap.Hashtable
    assert len(with_table._serialize()) > len(without._serialize()) + 8 * N  # the table: ≥ 8 bytes a vector
    np.testing.assert_array_equal(with_table.reconstruct(ids[[7, 70]]), x[[7, 70]])
    # removal with the table (binary IVF: only through an IDSelectorArray)
    with_table.remove(ids[N - 50 :])
    np.testing.assert_array_equal(with_table.ids(), ids[: N - 50])
    with_table.add(ids[N - 50 :], x[N - 50 :])
    # a cache file written with the table (as earlier versions did) loads without it
    path = tmp_path / "index.faiss"
    with_table.save(path, change_id=5)
    loaded, change_id = type(with_table).load(path, with_table.dim, with_table.metric, "ivf")  # type: ignore[arg-type]
    assert change_id == 5 and loaded.index.direct_map.type == loaded.faiss.DirectMap.NoMap
    np.testing.assert_array_equal(loaded.reconstruct(ids[[7, 70]]), x[[7, 70]])
    loaded.remove(ids[:100])
    np.testing.assert_array_equal(loaded.ids(), ids[100:])
    assert not np.isin(loaded.search(x[:3], 50)[1], ids[:100]).any()


def test_binary_ivf_probes_a_share_of_its_lists(tmp_path) -> None:
    """Without an explicit nprobe a binary IVF probes a sixteenth of its lists (at least 32), also
    when loaded from a cache file; an explicit nprobe is kept."""
    x = vectors("hamming", 39 * 1024, 4)
    ids = np.arange(len(x), dtype=np.int64)
    auto = BinaryFaissIndex(64, "hamming", "ivf", ivf_lists=1024)
    auto.add(ids, x)
    assert auto.index.nlist == 1024 and auto.index.nprobe == 64
    small = BinaryFaissIndex(64, "hamming", "ivf", ivf_lists=16)
    small.add(ids[:1000], x[:1000])
    assert small.index.nprobe == 32
    given = BinaryFaissIndex(64, "hamming", "ivf", ivf_lists=1024, nprobe=8)
    given.add(ids, x)
    assert given.index.nprobe == 8
    path = tmp_path / "index.faiss"
    auto.save(path, change_id=1)
    assert BinaryFaissIndex.load(path, 64, "hamming", "ivf")[0].index.nprobe == 64
    floats = FaissIndex(16, "l2", "ivf", ivf_lists=64)
    floats.add(ids[:5000], vectors("l2", 5000, 5))
    assert floats.index.nprobe == FaissIndex.NPROBE  # float IVF: its measured fixed default
