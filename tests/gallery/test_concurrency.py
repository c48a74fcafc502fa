"""Galleries with more than one writer: processes enrolling at once, an open gallery (as the
service holds) seeing another process's enrolments, kill -9 of a writer, resumable folder
enrolment."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from twinnet.calibrate import calibrate
from twinnet.config import ModelConfig
from twinnet.gallery import Gallery
from twinnet.io import load, save
from twinnet.model import build_model

DIM = 16


def vector_for(prefix: str, i: int) -> np.ndarray:
    """The vector writer ``prefix`` enrols as identity ``prefix{i}`` (the writer scripts compute the same)."""
    return np.random.default_rng([zlib.crc32(prefix.encode()), i]).normal(size=DIM).astype(np.float32)


# A writer process: opens the gallery, says "ready", waits for the go file, enrols N identities of
# one template each and prints each identity once its enrolment returned (acknowledged).
_WRITER = """
import sys, time, zlib
from pathlib import Path
import numpy as np
from twinnet.gallery import Gallery
path, prefix, n, go, hashed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
g = Gallery.open(path)
print("ready", flush=True)
while go != "-" and not Path(go).exists():
    time.sleep(0.005)
for i in range(n):
    v = np.random.default_rng([zlib.crc32(prefix.encode()), i]).normal(size=16).astype(np.float32)[None]
    if hashed:
        from twinnet.gallery import content_hash
        g.enroll(f"{prefix}{i}", v, {"i": i}, hashes=[content_hash(v.tobytes())])
    else:
        g.enroll(f"{prefix}{i}", v, {"i": i})
    print(f"{prefix}{i}", flush=True)
g.close()
"""

# A reader process: the top-1 identity of every (prefix, i) probe, as JSON.
_READER = """
import json, sys, zlib
import numpy as np
from twinnet.gallery import Gallery
path, probes = sys.argv[1], json.loads(sys.argv[2])
g = Gallery.open(path)
queries = np.stack([np.random.default_rng([zlib.crc32(p.encode()), i]).normal(size=16).astype(np.float32)
                    for p, i in probes])
found = [r.matches[0].identity if r.matches else None for r in g.identify_batch(queries, k=1)]
print(json.dumps({"found": found, "count": g.count()}))
g.close()
"""


def start_writer(gallery, prefix, n, go="-", hashed=False):
    args = [str(gallery), prefix, str(n), str(go), "1" if hashed else "0"]
    return subprocess.Popen([sys.executable, "-c", _WRITER, *args], stdout=subprocess.PIPE, text=True)


def wait_ready(proc):
    line = proc.stdout.readline().strip()
    assert line == "ready", line


def top1(g, probes):
    queries = np.stack([vector_for(p, i) for p, i in probes])
    return [r.matches[0].identity if r.matches else None for r in g.identify_batch(queries, k=1)]


@pytest.mark.slow
def test_two_writer_processes_then_every_reader_finds_every_identity(tmp_path):
    path = tmp_path / "g"
    Gallery.create(path, dim=DIM, metric="euclidean", index="flat").close()
    served = Gallery.open(path)  # held open throughout, as `twinnet serve` holds its gallery
    go = tmp_path / "go"
    n = 40
    writers = [start_writer(path, prefix, n, go) for prefix in ("a", "b")]
    for w in writers:
        wait_ready(w)
    stop = threading.Event()
    errors = []

    def identify_while_writing():  # the open gallery answers (and catches up) while others write
        while not stop.is_set():
            try:
                served.identify(vector_for("a", 0), k=3)
            except Exception as err:  # pragma: no cover - reported below
                errors.append(err)
                return

    reader = threading.Thread(target=identify_while_writing)
    reader.start()
    go.touch()  # both writers start enrolling at once
    acknowledged = {}
    for w in writers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0
        acknowledged.update({x: True for x in out.split()})
    stop.set()
    reader.join()
    assert not errors
    assert len(acknowledged) == 2 * n
    probes = [(p, i) for p in ("a", "b") for i in range(n)]
    expected = [f"{p}{i}" for p, i in probes]
    # a third process opens the gallery (and whatever index cache the writers left) and finds everyone
    third = subprocess.run([sys.executable, "-c", _READER, str(path), json.dumps(probes)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert third.returncode == 0, third.stderr
    result = json.loads(third.stdout)
    assert result["count"] == {"identities": 2 * n, "templates": 2 * n}
    assert result["found"] == expected
    # the gallery that was open all along sees both writers' identities without reopening
    assert top1(served, probes) == expected
    assert served.index_status()["templates"] == 2 * n
    served.close()
    # and so does one opened now, from the cache the last closer wrote
    with Gallery.open(path) as reopened:
        assert top1(reopened, probes) == expected


@pytest.mark.slow
def test_open_gallery_sees_another_process_enrol_and_remove(tmp_path):
    path = tmp_path / "g"
    g = Gallery.create(path, dim=DIM, metric="euclidean", index="flat")
    g.enroll("mine", vector_for("m", 0)[None])
    writer = start_writer(path, "x", 5)
    out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0 and len(out.split()) == 6  # "ready" and 5 acknowledgements
    # a removal by yet another connection (another process would be the same)
    other = Gallery.open(path)
    other.remove("x2")
    other.store.close()  # no flush: the cache file stays behind
    assert top1(g, [("x", i) for i in (0, 1, 3, 4)]) == ["x0", "x1", "x3", "x4"]
    assert "x2" not in {m.identity for m in g.identify(vector_for("x", 2), k=10).matches}
    # our own write after theirs: the index replays their changes and ours
    g.enroll("mine-too", vector_for("m", 1)[None])
    assert top1(g, [("m", 0), ("m", 1), ("x", 4)]) == ["mine", "mine-too", "x4"]
    assert g.index_status()["templates"] == g.count()["templates"] == 6
    g.close()


def run_killed_writer(path, prefix, n, after):
    """Start a hashed writer and kill -9 it once it has acknowledged ``after`` enrolments (it is
    enrolling further ones then); return everything it acknowledged."""
    proc = start_writer(path, prefix, n, hashed=True)
    wait_ready(proc)
    acknowledged = [proc.stdout.readline().strip() for _ in range(after)]
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate()
    return acknowledged + [x for x in rest.split() if x]


@pytest.mark.slow
def test_kill_writer_at_random_moment_then_acknowledged_are_found_and_rerun_adds_no_duplicates(tmp_path):
    path = tmp_path / "g"
    Gallery.create(path, dim=DIM, metric="euclidean", index="flat").close()
    served = Gallery.open(path)
    n = 1500
    after = random.randrange(1, 400)
    acknowledged = run_killed_writer(path, "k", n, after)
    indices = [int(x[1:]) for x in acknowledged]
    assert indices == list(range(len(indices))) and len(indices) < n, (after, len(indices))
    with Gallery.open(path) as g:  # a fresh opener's view: the killed writer's cache (if any) is checked
        assert top1(g, [("k", i) for i in indices]) == acknowledged, after
        counts = g.count()
        assert counts["templates"] == counts["identities"] >= len(acknowledged)
    assert top1(served, [("k", i) for i in indices]) == acknowledged, after
    # the re-run enrols what is missing and nothing twice: the content hashes say what is there
    rerun = start_writer(path, "k", n, hashed=True)
    rerun.communicate(timeout=120)
    assert rerun.returncode == 0
    assert served.count() == {"identities": n, "templates": n}
    assert top1(served, [("k", i) for i in range(n)]) == [f"k{i}" for i in range(n)]
    served.close()


def saved_model(path):
    torch.manual_seed(0)
    encoder = {"name": "conv4", "params": {"hidden": 8, "blocks": 2, "embedding_dim": 8}}
    model = build_model(ModelConfig.model_validate({"input": {"size": [8, 8]}, "encoder": encoder})).eval()
    rng = np.random.default_rng(0)
    model.calibration = calibrate(rng.random(100) * 0.01, rng.random(100) < 0.5, model.comparator.orientation)
    save(model, path)
    return path


@pytest.mark.slow
def test_folder_enrolment_rerun_after_kill_adds_no_duplicates(tmp_path, image_folder_factory):
    model = saved_model(tmp_path / "model")
    data = image_folder_factory(classes=4, per_class=1, size=8)
    # more identities than shapes: copies of the few images under many identity folders, plus one
    # file every identity shares (same content, different identities: a template for each)
    for k in range(4, 60):
        (data / f"class_{k}").mkdir()
        (data / f"class_{k}" / "img_0.png").write_bytes((data / f"class_{k % 4}" / "img_0.png").read_bytes())
    shared = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    for sub in data.iterdir():
        Image.fromarray(shared).save(sub / "shared.png")
    gallery = tmp_path / "gallery"
    Gallery.create(gallery, load(model)).close()
    enroll = [sys.executable, "-m", "twinnet", "gallery", "enroll", str(model), "-g", str(gallery)]
    enroll += ["--folder", str(data), "--json"]
    proc = subprocess.Popen(enroll, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    assert first.startswith("class_0: 2 added, 0 already enrolled (files 1-2 of 2; identity 1 of 60)"), first
    acknowledged = [first] + [proc.stderr.readline() for _ in range(random.randrange(20))]  # then kill -9
    os.kill(proc.pid, signal.SIGKILL)
    _, rest = proc.communicate()
    acknowledged += rest.splitlines()
    acked_ids = [line.split(":")[0] for line in acknowledged if line]
    with Gallery.open(gallery) as g:
        assert all(g.get(identity)["templates"] == 2 for identity in acked_ids)
    rerun = subprocess.run(enroll, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    lines = dict(line.split(":", 1) for line in rerun.stderr.splitlines())
    assert len(lines) == 60
    for identity in acked_ids:  # acknowledged before the kill: nothing added again
        assert lines[identity].startswith(" 0 added, 2 already enrolled"), (identity, lines[identity])
    assert json.loads(rerun.stdout)["templates"] == 2 * 60
    with Gallery.open(gallery) as g:
        assert all(item["templates"] == 2 for item in g.list()) and g.count()["identities"] == 60


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_threads_writing_one_gallery_object(tmp_path, backend):
    if backend == "qdrant":
        pytest.importorskip("qdrant_client")
    g = Gallery.create(tmp_path / "g", dim=DIM, metric="cosine", backend=backend)

    def work(t):
        for i in range(15):
            g.enroll(f"t{t}-{i}", vector_for(f"t{t}-", i)[None])
            g.identify(vector_for(f"t{t}-", i), k=1)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    probes = [(f"t{t}-", i) for t in range(4) for i in range(15)]
    assert top1(g, probes) == [f"t{t}-{i}" for t in range(4) for i in range(15)]
    g.close()
