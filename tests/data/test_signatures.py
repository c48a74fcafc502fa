"""Signatures: readers, preprocessing, writer-independent splits, and short real end-to-end runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from twinnet.cli import app
from twinnet.config import InputSpec, load_config
from twinnet.data.signatures import (
    otsu_threshold,
    preprocess_signature,
    read_offline_signatures,
    read_online_signatures,
    read_svc_file,
    trajectory_features,
)
from twinnet.errors import DataError
from twinnet.train import load_training_data


def draw_signature(path, seed, forged=False):
    rng = np.random.default_rng(seed)
    img = Image.new("L", (220, 90), color=235)
    d = ImageDraw.Draw(img)
    pts = [(20 + 30 * i + rng.integers(-4, 5), 45 + rng.integers(-25, 26)) for i in range(6)]
    d.line(pts, fill=30 if not forged else 60, width=3)
    img.save(path)


def make_offline(root, writers=4, genuine=6, forged=4):
    for w in range(1, writers + 1):
        (root / f"{w:03d}").mkdir(parents=True)
        (root / f"{w:03d}_forg").mkdir()
        for i in range(genuine):
            draw_signature(root / f"{w:03d}" / f"{i:02d}_{w:03d}.png", w * 100 + i)
        for i in range(forged):
            draw_signature(root / f"{w:03d}_forg" / f"{i:02d}_{w:03d}.PNG", w * 1000 + i, forged=True)
    return root


def test_offline_reader_labels_writers_and_forgeries(tmp_path):
    items = read_offline_signatures(make_offline(tmp_path / "sig"), InputSpec(size=(48, 96)))
    assert len(items) == 40 and items.data.shape == (40, 1, 48, 96)
    assert items.attributes["genuine"].sum() == 24
    # genuine of writer w is class 2w, its forgeries class 2w+1: forgeries are negatives
    w, g = items.attributes["writer"], items.attributes["genuine"]
    assert np.array_equal(items.labels, 2 * w + (~g))
    assert items.class_names[:2] == ["001", "001_forg"]


def test_offline_reader_names_an_unreadable_image(tmp_path):
    root = make_offline(tmp_path / "sig", writers=2)
    (root / "002" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"broken\.png"):
        read_offline_signatures(root, InputSpec(size=(48, 96)))
    assert len(read_offline_signatures(root, InputSpec(size=(48, 96)), skip_bad=True)) == 20
    with pytest.raises(DataError, match="signature folder not found"):
        read_offline_signatures(tmp_path / "none", InputSpec())


def test_otsu_and_preprocessing():
    gray = np.full((40, 80), 230, np.uint8)
    gray[15:25, 30:50] = 20
    assert 20 <= otsu_threshold(gray) < 230
    out = preprocess_signature(Image.fromarray(gray), InputSpec(size=(30, 60)))[0].numpy()
    assert out.shape == (30, 60)
    assert out.max() > 200 and out[0, 0] == 0  # ink high, background removed
    rows, cols = np.nonzero(out)
    assert abs((rows.min() + rows.max()) / 2 - 14.5) <= 2 and abs((cols.min() + cols.max()) / 2 - 29.5) <= 2  # centred


def write_svc(path, n=50, declared=None):
    t = np.arange(n) * 10
    rows = [f"{100 + i} {200 + 2 * i} {t[i]} 1 1500 700 {300 + i}" for i in range(n)]
    path.write_text(f"{declared if declared is not None else n}\n" + "\n".join(rows) + "\n")


def test_svc_reader_and_malformed_files(tmp_path):
    good = tmp_path / "U1S1.TXT"
    write_svc(good)
    assert read_svc_file(good).shape == (50, 7)
    bad = tmp_path / "U1S2.TXT"
    write_svc(bad, n=50, declared=60)
    with pytest.raises(DataError, match=r"U1S2.TXT: the header says 60 points but the file has 50 rows"):
        read_svc_file(bad)
    cols = tmp_path / "U1S3.TXT"
    cols.write_text("2\n1 2 3 4 5 6 7\n1 2 3\n")
    with pytest.raises(DataError, match=r"U1S3.TXT:3: expected 7 values"):
        read_svc_file(cols)
    nan = tmp_path / "U1S4.TXT"
    nan.write_text("2\n1 2 3 4 5 6 7\n1 2 x 4 5 6 7\n")
    with pytest.raises(DataError, match=r"U1S4.TXT:3: not a number"):
        read_svc_file(nan)
    with pytest.raises(DataError, match="U1S2.TXT"):
        read_online_signatures(tmp_path)  # the folder reader stops at the bad file, naming it


def test_trajectory_features_are_normalised():
    pts = np.zeros((40, 7))
    pts[:, 0] = np.linspace(1000, 3000, 40)
    pts[:, 1] = np.sin(np.linspace(0, 6, 40)) * 500 + 4000
    pts[:, 2] = np.arange(40) * 10
    pts[:, 6] = 400
    f = trajectory_features(pts, length=64)
    assert f.shape == (9, 64) and f.dtype == np.float32
    assert abs(f[0].mean()) < 1e-5 and abs(f[1].mean()) < 1e-5 and abs(f[1].std() - 1) < 1e-3
    assert np.allclose(f[4] ** 2 + f[5] ** 2, 1, atol=1e-4)  # direction as a unit vector


def test_no_writer_is_in_two_splits(tmp_path):
    root = make_offline(tmp_path / "sig", writers=10, genuine=3, forged=2)
    cfg = load_config("configs/signatures-offline.yaml", [f"data.path={root}", "data.val_classes=0.3",
                                                          "model.input.size=[48,96]"])  # fmt: skip
    train, val, _, _ = load_training_data(cfg)
    assert set(train.attributes["writer"]).isdisjoint(val.attributes["writer"])
    assert len(set(val.groups)) == 3 and len(set(train.groups)) == 7


@pytest.mark.slow
def test_short_online_run_beats_chance_widely(tmp_path, shared_data):
    runner = CliRunner()
    args = ["train", "--data", str(shared_data / "svc2004" / "Task2"), "--out", str(tmp_path / "run"), "--config",
            "configs/signatures-online.yaml", "--quiet", "--json", "train.epochs=6", "train.samples_per_epoch=1024",
            "data.val_classes=0.2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)["model"]
    # evaluating on all 30 users includes training writers; the point here is the pipeline
    ev = runner.invoke(app, ["evaluate", model, "--data", str(shared_data / "svc2004" / "Task2"), "--protocol",
                             "signature", "--references", "5", "--json"])  # fmt: skip
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert report["eer"] < 0.3 and report["roc_auc"] > 0.75 and report["test_writers"] == 30
    assert report["far"] is not None  # the threshold calibrated on validation writers travelled in the model


@pytest.mark.slow
def test_short_offline_run_on_unseen_writers(tmp_path, shared_data):
    import shutil

    source = shared_data / "signatures-sigcomp2011" / "train"
    writers = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.endswith("_forg"))
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    for i, w in enumerate(writers[:24]):
        target = test_dir if i % 4 == 0 else train_dir  # 6 unseen writers
        for suffix in ("", "_forg"):
            shutil.copytree(source / f"{w}{suffix}", target / f"{w}{suffix}")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(train_dir), "--out", str(tmp_path / "run"), "--config",
                                 "configs/signatures-offline.yaml", "--quiet", "--json", "train.epochs=4",
                                 "train.samples_per_epoch=768", "model.input.size=[64,128]"])  # fmt: skip
    assert result.exit_code == 0, result.output
    ev = runner.invoke(app, ["evaluate", json.loads(result.stdout)["model"], "--data", str(test_dir), "--protocol",
                             "signature", "--json", "--pairs-file", str(shared_data / "signatures-sigcomp2011" /
                                                                      "train_data.csv")])  # fmt: skip
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert report["test_writers"] == 6 and report["roc_auc"] > 0.65 and report["eer"] < 0.4
    assert report["pairs"]["pairs"] > 0 and report["pairs"]["accuracy"] > 0.55
