"""No silent wrong answers from one gallery: index caches that are stale or lie, thresholds that
are not numbers, damaged or foreign gallery files, content hashes, upgrades from version 1."""

import dataclasses
import json
import math
import os
import sqlite3
import zlib

import faiss
import numpy as np
import pytest
import torch

from twinnet.calibrate import calibrate
from twinnet.config import ModelConfig
from twinnet.errors import DataError
from twinnet.gallery import Gallery, content_hash
from twinnet.gallery.index import FaissIndex
from twinnet.gallery.store import TemplateStore
from twinnet.model import build_model

DIM = 16
rng = np.random.default_rng(0)
VECTORS = rng.normal(size=(60, DIM)).astype(np.float32)


def vector_gallery(path, n=20, index="flat", metric="euclidean"):
    g = Gallery.create(path, dim=DIM, metric=metric, index=index)
    for i in range(n):
        g.enroll(f"id{i:02d}", VECTORS[i : i + 1])
    return g


def top1(g, rows):
    return [r.matches[0].identity for r in g.identify_batch(VECTORS[rows], k=1)]


def crash(g):
    """Leave without saving the index cache, as a killed process would."""
    g.store.close()


# -- index caches ------------------------------------------------------------------------------------


def test_stale_cache_is_caught_up_incrementally(tmp_path):
    vector_gallery(tmp_path / "g").close()  # cache saved with everything so far
    g = Gallery.open(tmp_path / "g")
    assert g.index_status()["origin"] == "cache"
    for i in range(20, 30):
        g.enroll(f"id{i:02d}", VECTORS[i : i + 1])
    g.remove("id03")
    crash(g)  # the cache file is now 11 changes behind the database
    g = Gallery.open(tmp_path / "g")
    status = g.index_status()
    assert status["origin"] == "cache" and "11 to replay" in status["reason"], status
    assert status["change_id"] == g.store.head() and status["templates"] == 29
    rows = [i for i in range(30) if i != 3]
    assert top1(g, rows) == [f"id{i:02d}" for i in rows]
    assert "id03" not in {m.identity for m in g.identify(VECTORS[3], k=29).matches}
    g.close()


def forge(path, ids, vectors, change_id, kind="flat"):
    """Write a well-formed cache file holding ``ids`` that claims ``change_id``."""
    index = FaissIndex(DIM, "l2", kind)
    index.add(np.asarray(ids), vectors)
    index.save(path / "index.faiss", change_id)


@pytest.mark.parametrize("lie", ["incomplete", "extra", "wrong_vectors", "future", "torn", "version1", "garbage"])
def test_lying_or_broken_cache_is_rebuilt_never_trusted(tmp_path, lie):
    g = vector_gallery(tmp_path / "g", n=30)
    head = g.store.head()
    ids, vectors = g.store.all_templates(DIM)
    g.close()
    cache = tmp_path / "g" / "index.faiss"
    if lie == "incomplete":  # what version 1 did: the last writer's partial index, stamped current
        forge(tmp_path / "g", ids[:10], vectors[:10], head)
    elif lie == "extra":
        forge(tmp_path / "g", np.append(ids, 999), np.vstack([vectors, vectors[:1]]), head)
    elif lie == "wrong_vectors":
        forge(tmp_path / "g", ids, vectors[::-1].copy(), head)
    elif lie == "future":
        forge(tmp_path / "g", ids, vectors, head + 5)
    elif lie == "torn":
        cache.write_bytes(cache.read_bytes()[:-100])
    elif lie == "version1":  # a raw FAISS file and a stamp file claiming the current generation
        partial = faiss.IndexIDMap2(faiss.IndexFlatL2(DIM))
        partial.add_with_ids(vectors[:5], ids[:5])
        faiss.write_index(partial, str(cache))
        (tmp_path / "g" / "index.json").write_text(json.dumps({"generation": head, "kind": "flat", "count": 5}))
    else:
        cache.write_bytes(b"\x00" * 1000)
    g = Gallery.open(tmp_path / "g")
    status = g.index_status()
    assert status["origin"] == "rebuilt" and status["reason"].startswith("cache not used"), status
    assert top1(g, list(range(30))) == [f"id{i:02d}" for i in range(30)]
    assert len(g._index) == 30
    g.close()  # writes a truthful cache again
    assert Gallery.open(tmp_path / "g").index_status()["origin"] == "cache"


def test_cache_files_are_replaced_atomically_and_stamped(tmp_path):
    g = vector_gallery(tmp_path / "g")
    orphan = tmp_path / "g" / ".index.faiss.4194305.0bad.tmp"  # a killed writer's (no such process)
    live = tmp_path / "g" / f".index.faiss.{os.getpid()}.0ace.tmp"  # a running writer's
    orphan.write_bytes(b"half")
    live.write_bytes(b"half")
    g.close()
    header = FaissIndex.read_header(tmp_path / "g" / "index.faiss")
    assert header["change_id"] == 20 and header["count"] == 20
    assert not orphan.exists() and live.exists()
    live.unlink()
    assert not [p for p in (tmp_path / "g").iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_hnsw_removal_and_auto_kind_switch_rebuild(tmp_path, monkeypatch):
    g = vector_gallery(tmp_path / "h", n=30, index="hnsw")
    g.remove("id04")
    status = g.index_status()
    assert status["rebuilds"] == 1 and "cannot remove" in status["reason"]
    assert "id04" not in {m.identity for m in g.identify(VECTORS[4], k=29).matches}
    g.close()
    monkeypatch.setattr("twinnet.gallery.gallery.AUTO_APPROX_THRESHOLD", 40)
    g = vector_gallery(tmp_path / "a", n=30, index="auto")
    assert g._index.kind == "flat"
    g.enroll_many([f"bulk{i}" for i in range(30)], VECTORS[30:60])
    assert g._index.kind == "ivf" and "ivf index instead of flat" in g.index_status()["reason"]
    assert top1(g, [0, 35]) == ["id00", "bulk5"]
    g.close()


def test_ivf_removal_keeps_ids_right():
    data = rng.normal(size=(2000, 8)).astype(np.float32)
    index = FaissIndex(8, "l2", "ivf")
    index.add(np.arange(1, 2001), data)
    assert index.remove(np.arange(1, 1001))
    _, found = index.search(data[1000:1100], 1)
    assert (found[:, 0] == np.arange(1001, 1101)).all()
    index.add(np.arange(3001, 3011), data[:10])  # adds after a removal keep their ids too
    assert (index.search(data[:10], 1)[1][:, 0] == np.arange(3001, 3011)).all()
    assert np.array_equal(index.ids(), np.concatenate([np.arange(1001, 2001), np.arange(3001, 3011)]))


def test_ivf_lists_are_retrained_as_the_gallery_grows(tmp_path):
    g = Gallery.create(tmp_path / "g", dim=DIM, metric="euclidean", index="ivf")
    g.enroll_many([f"a{i}" for i in range(50)], VECTORS[:50])
    first = int(g._index.index.nlist)
    big = rng.normal(size=(1000, DIM)).astype(np.float32)
    g.enroll_many([f"b{i}" for i in range(1000)], big)
    assert int(g._index.index.nlist) >= 2 * first and "IVF lists trained for" in g.index_status()["reason"]
    assert [r.matches[0].identity for r in g.identify_batch(big[:20], k=1)] == [f"b{i}" for i in range(20)]
    g.close()


def test_pruned_change_log_makes_a_far_behind_index_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr(Gallery, "LOG_KEEP", 3)
    monkeypatch.setattr(Gallery, "LOG_SLACK", 0)
    g = vector_gallery(tmp_path / "g", n=5)
    behind = Gallery.open(tmp_path / "g")  # in step now, then left behind
    for i in range(5, 30):
        g.enroll(f"id{i:02d}", VECTORS[i : i + 1])
    for i in range(5, 25):
        g.remove(f"id{i:02d}")
    g.flush()  # saves the cache, then prunes the log (45 changes for 10 templates)
    assert g.store.pruned_through() == g.store.head() - 3
    assert behind.index_status()["change_id"] < g.store.pruned_through()
    assert top1(behind, [0, 27]) == ["id00", "id27"]
    assert "pruned" in behind.index_status()["reason"] and len(behind._index) == 10
    g.close()
    behind.close()


# -- thresholds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "0.5"])
def test_non_finite_thresholds_are_refused(tmp_path, bad):
    g = vector_gallery(tmp_path / "g")
    message = "threshold must be a" + (" finite number" if isinstance(bad, float) else " number")
    with pytest.raises(DataError, match=message):
        g.identify(VECTORS[0], threshold=bad)
    with pytest.raises(DataError, match=message):
        g.identify_batch(VECTORS[:2], threshold=bad)
    with pytest.raises(DataError, match=message):
        g.verify(VECTORS[0], "id00", threshold=bad)
    with pytest.raises(DataError, match=message):
        g.verify_batch(VECTORS[:2], ["id00", "id01"], threshold=bad)
    assert g.identify(VECTORS[0], threshold=0.5).identity == "id00"  # finite ones still work
    with pytest.raises(DataError, match="k must be a positive integer"):
        g.identify(VECTORS[0], k=0)
    g.close()


def test_a_non_finite_calibrated_threshold_is_refused(tmp_path):
    torch.manual_seed(0)
    config = {"input": {"kind": "vector", "features": 4},
              "encoder": {"name": "mlp", "params": {"hidden": [8], "embedding_dim": 4}}}  # fmt: skip
    model = build_model(ModelConfig.model_validate(config)).eval()
    g = Gallery.create(tmp_path / "g", model)
    g.enroll("a", np.ones((1, 4), np.float32))
    # a damaged calibration: its default operating point holds NaN
    rng = np.random.default_rng(0)
    model.calibration = calibrate(rng.random(100), rng.random(100) < 0.5, model.comparator.orientation)
    default = model.calibration.point()
    model.calibration.add("default", dataclasses.replace(default, threshold=math.nan), make_default=True)
    with pytest.raises(DataError, match="the model's calibrated threshold must be a finite number"):
        g.identify(np.ones(4, np.float32))
    g.close()


# -- gallery.json ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda info: '{"format": "twinnet-gallery", "dim": 1', "not valid JSON"),
        (lambda info: "", "not valid JSON"),
        (lambda info: "[1, 2]", "expected a JSON object"),
        (lambda info: b"\xff\xfe", "not valid JSON"),
        (lambda info: {k: v for k, v in info.items() if k != "model_fingerprint"}, "'model_fingerprint' is missing"),
        (lambda info: {**info, "dim": "sixteen"}, "'dim' is 'sixteen'"),
        (lambda info: {**info, "format_version": "2"}, "'format_version' is '2'"),
        (lambda info: {**info, "index": "fast"}, "'index' is 'fast'"),
        (lambda info: {**info, "format": "something-else"}, "'format' is 'something-else'"),
    ],
)
def test_corrupted_gallery_json_is_named_as_such(tmp_path, damage, why):
    model = build_model(ModelConfig.model_validate({
        "input": {"kind": "vector", "features": 4}, "encoder": {"name": "mlp", "params": {"embedding_dim": 4}},
    })).eval()  # fmt: skip
    Gallery.create(tmp_path / "g", model).close()
    file = tmp_path / "g" / "gallery.json"
    damaged = damage(json.loads(file.read_text()))
    if isinstance(damaged, bytes):
        file.write_bytes(damaged)
    else:
        file.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    for opener in (lambda: Gallery.open(tmp_path / "g", model), lambda: Gallery.open(tmp_path / "g")):
        with pytest.raises(DataError) as err:
            opener()
        message = str(err.value)
        assert message.startswith(f"{file}: corrupted gallery file: ") and why in message, message
        assert "precomputed" not in message


def test_newer_formats_are_refused(tmp_path):
    vector_gallery(tmp_path / "g").close()
    file = tmp_path / "g" / "gallery.json"
    info = json.loads(file.read_text())
    file.write_text(json.dumps({**info, "format_version": 3}))
    with pytest.raises(DataError, match="v3; this twinnet reads up to v2"):
        Gallery.open(tmp_path / "g")
    file.write_text(json.dumps(info))
    with sqlite3.connect(tmp_path / "g" / "templates.sqlite") as db:
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(DataError, match="schema v3 was written by a newer twinnet"):
        Gallery.open(tmp_path / "g")


def test_version1_gallery_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old"
    path.mkdir()
    info = {"format": "twinnet-gallery", "format_version": 1, "dim": DIM, "comparator": "euclidean",
            "model_fingerprint": None, "index": "flat", "backend": "faiss", "qdrant_url": None}  # fmt: skip
    (path / "gallery.json").write_text(json.dumps(info))
    with sqlite3.connect(path / "templates.sqlite") as db:  # version 1's schema, as it wrote it
        db.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE identities (id TEXT PRIMARY KEY, metadata TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL,
                                     updated REAL NOT NULL);
            CREATE TABLE templates (rowid INTEGER PRIMARY KEY AUTOINCREMENT,
                identity TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE, vector BLOB NOT NULL, source TEXT);
            CREATE INDEX templates_by_identity ON templates(identity);
            INSERT INTO meta VALUES ('generation', '4');
        """)
        for i in range(4):
            db.execute("INSERT INTO identities VALUES (?, '{}', 0, 0)", (f"id{i:02d}",))
            db.execute("INSERT INTO templates(identity, vector) VALUES (?, ?)", (f"id{i:02d}", VECTORS[i].tobytes()))
    stale = faiss.IndexIDMap2(faiss.IndexFlatL2(DIM))
    stale.add_with_ids(VECTORS[:1], np.array([1]))
    faiss.write_index(stale, str(path / "index.faiss"))
    (path / "index.json").write_text(json.dumps({"generation": 4, "kind": "flat", "count": 1}))
    g = Gallery.open(path)
    assert json.loads((path / "gallery.json").read_text())["format_version"] == 2
    assert top1(g, [0, 1, 2, 3]) == ["id00", "id01", "id02", "id03"]
    g.enroll("id04", VECTORS[4:5], hashes=[content_hash(VECTORS[4].tobytes())])
    g.remove("id00")
    g.close()
    assert not (path / "index.json").exists()
    g = Gallery.open(path)
    assert g.index_status()["origin"] == "cache" and top1(g, [1, 4]) == ["id01", "id04"]
    g.close()


# -- content hashes -------------------------------------------------------------------------------------


def test_same_content_is_one_template_per_identity(tmp_path):
    g = Gallery.create(tmp_path / "g", dim=DIM, metric="euclidean")
    hashes = [content_hash(v.tobytes()) for v in VECTORS[:3]]
    first = g.enroll_detailed("alice", VECTORS[:3], hashes=hashes)
    assert (first.added, first.already) == (3, 0)
    again = g.enroll_detailed("alice", VECTORS[:3], {"desk": 7}, hashes=hashes)
    assert (again.added, again.already) == (0, 3) and g.get("alice") == {**g.get("alice"), "templates": 3}
    assert g.get("alice")["metadata"] == {"desk": 7}  # metadata still merges
    assert g.enroll("alice", VECTORS[:4], hashes=[*hashes, content_hash(VECTORS[3].tobytes())]) == 1
    assert g.enroll("bob", VECTORS[:1], hashes=hashes[:1]) == 1  # another identity may hold the same content
    assert g.enroll("alice", VECTORS[:2], replace=True, hashes=hashes[:2]) == 2  # replace enrols anew
    assert g.get("alice")["templates"] == 2
    # within one call, a repeated content counts once
    assert g.enroll_detailed("carol", VECTORS[[5, 5]], hashes=[hashes[0], hashes[0]]).added == 1
    # without hashes (precomputed vectors), today's behaviour: every call adds
    assert g.enroll("dave", VECTORS[:1]) == 1 and g.enroll("dave", VECTORS[:1]) == 1
    assert g.get("dave")["templates"] == 2
    assert g.count()["templates"] == g.index_status()["templates"] == 2 + 1 + 1 + 2
    g.close()


def test_database_refuses_to_change_a_template_in_place(tmp_path):
    g = vector_gallery(tmp_path / "g", n=2)
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        g.store._db.execute("UPDATE templates SET vector = ? WHERE rowid = 1", (VECTORS[9].tobytes(),))
    g.close()


def test_folder_and_documents_enrolment_are_idempotent_in_process(tmp_path, image_folder_factory, capsys):
    from twinnet.gallery.cli_ops import enroll_folder

    torch.manual_seed(0)
    encoder = {"name": "conv4", "params": {"hidden": 8, "blocks": 2, "embedding_dim": 8}}
    model = build_model(ModelConfig.model_validate({"input": {"size": [8, 8]}, "encoder": encoder})).eval()
    data = image_folder_factory(classes=3, per_class=5, size=8)
    g = Gallery.create(tmp_path / "g", model)
    assert enroll_folder(g, data, chunk=2) == {"class_0": 5, "class_1": 5, "class_2": 5}
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "class_0: 2 added, 0 already enrolled (files 1-2 of 5; identity 1 of 3)" and len(err) == 9
    (data / "class_1" / "img_0.png").unlink()
    (data / "class_1" / "new.png").write_bytes((data / "class_2" / "img_0.png").read_bytes())
    assert enroll_folder(g, data) == {"class_0": 0, "class_1": 1, "class_2": 0}
    err = capsys.readouterr().err.splitlines()
    assert err[1] == "class_1: 1 added, 4 already enrolled (files 1-5 of 5; identity 2 of 3)"
    assert g.count() == {"identities": 3, "templates": 16}
    assert enroll_folder(g, data, replace=True, progress=False) == {"class_0": 5, "class_1": 5, "class_2": 5}
    assert g.count()["templates"] == 15 and not capsys.readouterr().err
    g.close()


# -- Qdrant -----------------------------------------------------------------------------------------------


def test_qdrant_records_its_change_id_and_catches_up(tmp_path):
    pytest.importorskip("qdrant_client")
    g = Gallery.create(tmp_path / "q", dim=DIM, metric="euclidean", backend="qdrant")
    for i in range(10):
        g.enroll(f"id{i:02d}", VECTORS[i : i + 1])
    with pytest.raises(DataError, match="embedded Qdrant allows one process at a time"):
        Gallery.open(tmp_path / "q")
    assert g._index.applied() == g.store.head()
    g.close()
    # another writer changes the database while no one holds the collection
    store = TemplateStore(tmp_path / "q" / "templates.sqlite")
    store.add("late", VECTORS[10:11], None, False)
    store.remove("id02")
    store.close()
    g = Gallery.open(tmp_path / "q")
    status = g.index_status()
    assert status["origin"] == "cache" and status["catch_ups"] == 1 and status["change_id"] == g.store.head()
    assert top1(g, [0, 10]) == ["id00", "late"]
    assert "id02" not in {m.identity for m in g.identify(VECTORS[2], k=10).matches}
    g._index.set_applied(g.store.head() + 7)  # a collection claiming more than the database has
    g.close()
    g = Gallery.open(tmp_path / "q")
    assert g.index_status()["origin"] == "rebuilt" and "claims change" in g.index_status()["reason"]
    assert len(g._index) == 10 and top1(g, [1, 10]) == ["id01", "late"]
    g.close()


def test_documents_enrolment_rerun_adds_nothing(tmp_path, monkeypatch, capsys):
    from twinnet.gallery import cli_ops

    docs = tmp_path / "docs.jsonl"
    rows = [("a", "first text", {"n": 1}), ("a", "second text", {}), ("b", "first text", {}), ("a", "first text", {})]
    docs.write_text("\n".join(json.dumps({"id": i, "text": t, "metadata": m}) for i, t, m in rows), encoding="utf-8")
    g = Gallery.create(tmp_path / "g", dim=DIM, metric="cosine")
    monkeypatch.setattr(cli_ops, "takes_text", lambda gallery, side="a": True)
    embedded = []

    def embed(texts, precomputed=None, side="a"):  # a stand-in text model: one fixed vector per text
        if precomputed:
            return np.asarray(texts, np.float32)
        embedded.extend(texts)
        return np.stack([VECTORS[zlib.crc32(t.encode()) % 60] for t in texts])

    monkeypatch.setattr(g, "embed", embed)
    assert cli_ops.enroll_documents(g, docs, batch_size=2) == {"a": 2, "b": 1}
    assert capsys.readouterr().err.splitlines() == [
        "documents 1-2 of 4: 2 added, 0 already enrolled",
        "documents 3-4 of 4: 1 added, 1 already enrolled",  # the repeated row of "a": one template
    ]
    embedded.clear()
    assert cli_ops.enroll_documents(g, docs) == {"a": 0, "b": 0}
    assert embedded == [] and "0 added, 4 already enrolled" in capsys.readouterr().err
    assert g.count() == {"identities": 2, "templates": 3} and g.get("a")["metadata"] == {"n": 1}
    g.close()
