"""Omniglot: archive reader, protocols, official run folders, download, and a short real run."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import make_shape_image
from PIL import Image
from typer.testing import CliRunner

from twinnet.cli import app
from twinnet.compare import EuclideanDistance
from twinnet.config import InputSpec
from twinnet.data.archives import looks_like_omniglot, read_items, with_rotated_classes
from twinnet.data.download import download_file
from twinnet.data.omniglot import Checksum, load_runs
from twinnet.errors import DataError
from twinnet.model import TwinNetwork
from twinnet.protocols import evaluate_runs, sample_within_group_episodes

SPEC = InputSpec(size=(16, 16))


class Pixels(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


PIXELS = TwinNetwork(Pixels(), EuclideanDistance())


def _png_bytes(kind: int, rng) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(make_shape_image(kind, rng, 16)).save(buf, format="PNG")
    return buf.getvalue()


def make_omniglot_zip(path: Path, alphabets=3, chars=4, drawers=4, top="images_background") -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for a in range(alphabets):
            for c in range(chars):
                for d in range(1, drawers + 1):
                    z.writestr(
                        f"{top}/Alpha{a}/character{c + 1:02d}/{a * 100 + c:04d}_{d:02d}.png",
                        _png_bytes(a * chars + c, rng),
                    )
    return path


def test_zip_reader_keeps_classes_groups_and_drawers(tmp_path):
    z = make_omniglot_zip(tmp_path / "om.zip")
    items = read_items(z, SPEC, class_depth=2)
    assert len(items) == 48 and len(items.class_names) == 12
    assert items.class_names[0] == "Alpha0/character01"
    assert sorted(set(items.groups.tolist())) == [0, 1, 2]
    assert sorted(set(items.attributes["drawer"].tolist())) == [1, 2, 3, 4]
    assert looks_like_omniglot(z)
    # the same files extracted read the same
    with zipfile.ZipFile(z) as archive:
        archive.extractall(tmp_path / "x")
    folder = read_items(tmp_path / "x" / "images_background", SPEC, class_depth=2)
    assert folder.class_names == items.class_names and torch.equal(folder.data, items.data)
    assert np.array_equal(folder.attributes["drawer"], items.attributes["drawer"])


def test_zip_reader_errors(tmp_path):
    with pytest.raises(DataError, match="archive not found"):
        read_items(tmp_path / "none.zip", SPEC)
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        read_items(tmp_path / "bad.zip", SPEC)
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as z:
        z.writestr("top/A/c1/0001_01.png", b"\x89PNG broken")
        z.writestr("top/A/c1/0001_02.png", _png_bytes(0, np.random.default_rng(0)))
    with pytest.raises(DataError, match=r"broken.zip:top/A/c1/0001_01.png: unreadable image"):
        read_items(tmp_path / "broken.zip", SPEC, class_depth=2)
    assert len(read_items(tmp_path / "broken.zip", SPEC, class_depth=2, skip_bad=True)) == 1


def test_within_group_episodes_follow_lakes_protocol(tmp_path):
    items = read_items(make_omniglot_zip(tmp_path / "om.zip", alphabets=3, chars=6, drawers=5), SPEC, class_depth=2)
    ep = sample_within_group_episodes(items, ways=5, episodes=40, seed=1)
    drawers = items.attributes["drawer"]
    for e in range(40):
        support, query = ep.support[e, :, 0], ep.query[e]
        assert np.array_equal(items.labels[support], items.labels[query])  # way w: same class
        assert len(set(items.labels[support].tolist())) == 5
        assert len(set(items.groups[np.r_[support, query]].tolist())) == 1  # one alphabet
        assert len(set(drawers[support].tolist())) == 1 and len(set(drawers[query].tolist())) == 1
        assert drawers[support][0] != drawers[query][0]  # drawer A ≠ drawer B
    again = sample_within_group_episodes(items, ways=5, episodes=40, seed=1)
    assert np.array_equal(ep.support, again.support)
    with pytest.raises(DataError, match="no group has 7 classes"):
        sample_within_group_episodes(items, ways=7, episodes=1)


def test_rotated_classes():
    from twinnet.data import from_arrays

    x = np.arange(2 * 1 * 3 * 3, dtype=np.uint8).reshape(2, 1, 3, 3)
    items = from_arrays(x, [0, 1])
    rot = with_rotated_classes(items)
    assert len(rot) == 8 and len(rot.class_names) == 8
    assert torch.equal(rot.data[2], torch.rot90(items.data[0], 1, dims=(1, 2)))
    assert rot.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def make_runs(root: Path, runs=2, ways=5) -> Path:
    rng = np.random.default_rng(3)
    for r in range(1, runs + 1):
        run = root / f"run{r:02d}"
        (run / "training").mkdir(parents=True)
        (run / "test").mkdir()
        images = [make_shape_image(k, rng, 16) for k in range(ways)]
        for k, img in enumerate(images):
            Image.fromarray(img).save(run / "training" / f"class{k + 1:02d}.png")
        order = rng.permutation(ways)
        lines = []
        for i, k in enumerate(order):
            Image.fromarray(images[k]).save(run / "test" / f"item{i + 1:02d}.png")
            lines.append(f"run{r:02d}/test/item{i + 1:02d}.png run{r:02d}/training/class{k + 1:02d}.png")
        (run / "class_labels.txt").write_text("\n".join(lines) + "\n")
    return root


def test_official_run_folders(tmp_path):
    runs = load_runs(make_runs(tmp_path / "runs"), SPEC)
    assert [r.name for r in runs] == ["run01", "run02"] and runs[0].support.shape == (5, 1, 16, 16)
    result = evaluate_runs(PIXELS, runs)
    assert result["accuracy"] == 1.0 and result["ways"] == 5  # test images are exact copies of their class
    labels = tmp_path / "runs" / "run02" / "class_labels.txt"
    labels.write_text("run02/test/item01.png run02/training/class99.png\n")
    with pytest.raises(DataError, match=r"class_labels.txt:1: run02/training/class99.png is not among"):
        load_runs(tmp_path / "runs", SPEC)
    labels.write_text("just one field\n")
    with pytest.raises(DataError, match=r"class_labels.txt:1: expected"):
        load_runs(tmp_path / "runs", SPEC)
    with pytest.raises(DataError, match="run folder not found"):
        load_runs(tmp_path / "nope", SPEC)


# -- downloads from a local HTTP server --------------------------------------------------------


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    ranges: ClassVar[list[str]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        header = self.headers.get("Range")
        if header:
            type(self).ranges.append(header)
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "served"
    root.mkdir()

    def handler(*args, **kwargs):
        return RangeHandler(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    RangeHandler.ranges = []
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _checksum(path: Path) -> Checksum:
    import hashlib

    return Checksum(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), size=path.stat().st_size)


def test_download_verifies_and_resumes(http_dir, tmp_path):
    root, url = http_dir
    z = make_omniglot_zip(root / "images_background_small1.zip")
    expected = _checksum(z)
    dest = tmp_path / "dl" / "images_background_small1.zip"
    assert "SHA-256" in download_file(url + z.name, dest, expected)
    assert dest.read_bytes() == z.read_bytes() and not dest.with_name(dest.name + ".part").exists()
    assert "already present" in download_file(url + z.name, dest, expected)
    # an interrupted download resumes with a range request
    dest.unlink()
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(z.read_bytes()[:1000])
    download_file(url + z.name, dest, expected)
    assert RangeHandler.ranges == ["bytes=1000-"] and dest.read_bytes() == z.read_bytes()


def test_download_refuses_a_wrong_file_and_reports_http_errors(http_dir, tmp_path):
    root, url = http_dir
    (root / "f.bin").write_bytes(b"x" * 5000)
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match="not the expected file, deleted it"):
        download_file(url + "f.bin", dest, Checksum(sha256="0" * 64))
    assert not dest.exists() and not dest.with_name("f.bin.part").exists()
    with pytest.raises(DataError, match="HTTP 404"):
        download_file(url + "missing.bin", dest, Checksum(sha256="0" * 64))
    with pytest.raises(DataError, match="download failed after 2 tries"):
        download_file("http://127.0.0.1:9/none", dest, Checksum(sha256="0" * 64), retries=2, timeout=2)


def test_cli_download_of_the_real_small_zip_checks_the_official_sha256(http_dir, tmp_path, shared_data):
    root, url = http_dir
    shutil.copy(shared_data / "omniglot" / "images_background_small1.zip", root)
    result = CliRunner().invoke(app, ["data", "download", "omniglot", "--to", str(tmp_path / "d"), "--base-url", url,
                                      "--file", "images_background_small1.zip", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "f38eb80f" in report["files"]["images_background_small1.zip"]
    bad = CliRunner().invoke(app, ["data", "download", "omniglot", "--to", str(tmp_path / "e"), "--base-url", url,
                                   "--file", "images_evaluation.zip"])  # fmt: skip
    assert bad.exit_code == 2 and "HTTP 404" in bad.output


# -- a short real run --------------------------------------------------------------------------


@pytest.mark.slow
def test_short_training_on_real_omniglot_beats_chance_widely(tmp_path, shared_data):
    omniglot = shared_data / "omniglot"
    overrides = [
        f"data.path={omniglot / 'images_background_small1.zip'}", "data.val_classes=0.2",
        "train.epochs=3", "train.samples_per_epoch=6400", "train.classes_per_batch=16", "train.items_per_class=4",
        "train.warmup_steps=20", "train.max_minutes=null", "train.validation.params.episodes=40",
        "model.encoder.params={hidden: 32, blocks: 4}",
    ]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--config", "configs/omniglot.yaml",
                                 "--quiet", "--json", *overrides])  # fmt: skip
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)["model"]
    ev = runner.invoke(app, ["evaluate", model, "--data", str(omniglot / "images_evaluation.zip"),
                             "--protocol", "within-alphabet", "--ways", "20", "--episodes", "30",
                             "--json"])  # fmt: skip
    assert ev.exit_code == 0, ev.output
    within = json.loads(ev.stdout)
    assert within["accuracy"] > 0.35  # chance is 0.05
    # the trained model evaluates on official-style run folders built from real evaluation images
    items = read_items(omniglot / "images_evaluation.zip", InputSpec(size=(105, 105)), class_depth=2)
    root = tmp_path / "runs"
    for r, start in ((1, 0), (2, 40)):
        run = root / f"run{r:02d}"
        (run / "training").mkdir(parents=True)
        (run / "test").mkdir()
        lines = []
        for k in range(20):
            c = start + k
            idx = np.nonzero(items.labels == c)[0]
            Image.fromarray(items.data[idx[0], 0].numpy()).save(run / "training" / f"class{k + 1:02d}.png")
            Image.fromarray(items.data[idx[1], 0].numpy()).save(run / "test" / f"item{k + 1:02d}.png")
            lines.append(f"run{r:02d}/test/item{k + 1:02d}.png run{r:02d}/training/class{k + 1:02d}.png")
        (run / "class_labels.txt").write_text("\n".join(lines))
    runs = runner.invoke(app, ["evaluate", model, "--data", str(root), "--protocol", "omniglot-runs", "--json"])
    assert runs.exit_code == 0, runs.output
    assert json.loads(runs.stdout)["accuracy"] > 0.35 and json.loads(runs.stdout)["episodes"] == 2
