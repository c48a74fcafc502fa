"""``twinnet report`` on tiny models: the HTML references only files that exist, every plot is a
non-empty PNG; an image model with its training curves, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from twinnet import Trainer, TripletLoss, build_model, save
from twinnet.cli import app
from twinnet.config import ModelConfig, TrainConfig, ValidationConfig
from twinnet.data.archives import read_items
from twinnet.metrics import calc_roc
from twinnet.report.calc import calc_confused, calc_det, calc_precision_curve

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def check_report(index: Path) -> set[str]:
    page = index.read_text(encoding="utf-8")
    refs = set(re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page))
    assert refs, "the report shows no plot"
    for ref in refs:
        target = index.parent / ref
        assert target.is_file(), f"{ref} is referenced but missing"
        data = target.read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, f"{ref} is not a non-empty PNG"
    return refs


def test_calc_helpers_against_metrics():
    sim = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])
    same = np.array([1, 0, 1, 1, 0, 0], bool)
    far, frr = calc_det(sim, same)
    roc_far, tar, _ = calc_roc(sim, same)
    assert np.allclose(far, roc_far) and np.allclose(frr, 1 - tar)
    worst = calc_confused(sim, same, threshold=0.5, k=4)
    assert worst["false_accepts"].tolist() == [1] and worst["false_rejects"].tolist() == [3]
    _, share = calc_precision_curve(np.array([0.0, 5.0, np.nan, 30.0]), max_pixels=20)
    assert share[0] == 0.25 and share[20] == 0.5


@pytest.fixture
def trained_image_run(image_folder_factory, tmp_path: Path) -> Path:
    folder = image_folder_factory(classes=6, per_class=8, size=16)
    spec_config = ModelConfig.model_validate(
        {
            "input": {"kind": "image", "channels": 1, "size": [16, 16]},
            "encoder": {"name": "conv4", "params": {"hidden": 8, "blocks": 2, "embedding_dim": 16}},
            "normalize": True,
        }
    )
    items = read_items(folder, spec_config.input)
    torch.manual_seed(0)
    model = build_model(spec_config)
    run = tmp_path / "run"
    labels = np.asarray(items.labels)
    train, val = np.nonzero(labels < 4)[0], np.nonzero(labels >= 4)[0]
    config = TrainConfig(
        epochs=2,
        samples_per_epoch=64,
        classes_per_batch=4,
        items_per_class=4,
        progress=False,
        validation=ValidationConfig(pairs=60),
    )
    result = Trainer(
        model, TripletLoss(margin=0.3), items.subset(train), config, val_items=items.subset(val), run_dir=run
    ).fit()
    assert result.model_dir is not None
    return folder


def test_image_model_report_and_explain(trained_image_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(run / "model"), "--data", str(trained_image_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    refs = check_report(out / "index.html")
    assert {"roc.png", "det.png", "scores.png", "embedding_pca.png", "embedding_tsne.png", "training.png"} <= refs
    assert refs & {"false_accepts.png", "false_rejects.png"}
    page = (out / "index.html").read_text()
    assert "FAR ≤ 0.01" in page and "operating point" in page
    a, b = sorted((trained_image_run / "class_0").iterdir())[:2]
    result = runner.invoke(
        app, ["explain", str(run / "model"), str(a), str(b), "--out", str(tmp_path / "p.png"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").read_bytes().startswith(PNG)
    assert '"method": "gradients"' in result.output


def test_report_bad_input_is_one_line(trained_image_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["report", str(run / "model"), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output
    a, b = sorted((trained_image_run / "class_0").iterdir())[:2]
    result = runner.invoke(app, ["explain", str(run / "model"), str(a), str(b), "--method", "magic"])
    assert result.exit_code == 2 and "magic" in result.output


@pytest.mark.parametrize(
    ("best", "says"),
    [(2, "; the saved model is epoch 2's."), (0, "; the saved model is the starting weights (no epoch beat them).")],
)
def test_training_section_names_the_saved_epoch(tmp_path: Path, best: int, says: str):
    from twinnet.report.sections import ReportContext, training

    run = tmp_path / "run"
    run.mkdir()
    records = [{"epoch": e, "train_loss": 1.0 / e, "lr": 0.1, "val_spearman": 0.8, "best_epoch": best} for e in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    context = ReportContext(model=None, data=None, protocol=None, result=None, out=tmp_path, run_dir=run)
    section = training(context)
    assert section is not None and section.text[0].endswith(says)


def test_tracker_report(tmp_path: Path):
    from PIL import Image

    rng = np.random.default_rng(0)
    background = (rng.random((120, 160, 3)) * 80 + 40).astype(np.uint8)
    seq = tmp_path / "seqs" / "square"
    (seq / "imgs").mkdir(parents=True)
    lines = []
    for i in range(6):  # a red square moving right and down over texture
        frame = background.copy()
        x, y = 30 + 4 * i, 20 + 2 * i
        frame[y : y + 20, x : x + 20] = (230, 40, 40)
        Image.fromarray(frame).save(seq / "imgs" / f"{i + 1:08d}.png")
        lines.append(f"{x + 1},{y + 1},20,20")
    (seq / "groundtruth_rect.txt").write_text("\n".join(lines) + "\n")
    config = ModelConfig.model_validate(
        {
            "input": {"kind": "image", "channels": 3, "size": [127, 127]},
            "input_b": {"kind": "image", "channels": 3, "size": [255, 255]},
            "encoder": {"name": "siamfc_light", "params": {"channels": [8, 16, 16, 16, 16]}},
            "comparator": {"name": "xcorr"},
        }
    )
    torch.manual_seed(0)
    model_dir = save(build_model(config), tmp_path / "tracker")
    out = tmp_path / "report"
    result = runner.invoke(
        app, ["report", str(model_dir), "--data", str(seq.parent), "--protocol", "tracking", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert {"success.png", "precision.png", "frames.png"} <= check_report(out / "index.html")
