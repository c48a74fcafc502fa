import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from twinnet.cli import app

runner = CliRunner()

CONFIG = """
model:
  input: {kind: image, channels: 1, size: [16, 16]}
  encoder: {name: conv4, params: {hidden: 16, blocks: 3, embedding_dim: 16}}
  comparator: {name: euclidean}
  normalize: true
data:
  val_classes: 0.34
  augment: {enabled: true, rotation: 5, shear: 0.05, scale: [0.95, 1.05], translate: 0.03}
loss: {name: triplet, params: {margin: 0.3, mining: batch_hard}}
train:
  epochs: 3
  samples_per_epoch: 256
  classes_per_batch: 4
  items_per_class: 4
  lr: 0.003
  validation: {pairs: 200}
"""


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture
def trained(tmp_path, image_folder_factory):
    data = image_folder_factory(classes=6, per_class=8, size=16)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG)
    result = run("train", "--data", data, "--out", tmp_path / "run", "--config", cfg, "--quiet", "--json",
                 "train.seed=3")  # fmt: skip
    assert result.exit_code == 0, result.output
    return tmp_path, data, json.loads(result.stdout)


def test_train_evaluate_verify_embed(trained):
    tmp_path, data, summary = trained
    model = Path(summary["model"])
    assert model == tmp_path / "run" / "model" and (model / "calibration.json").exists()
    assert (tmp_path / "run" / "config.yaml").read_text().count("seed: 3") == 1

    ev = run("evaluate", model, "--data", data, "--protocol", "verification", "--pairs", "300", "--json")
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert {"roc_auc", "eer", "best_accuracy", "tar@far=0.01", "calibrated"} <= set(report)
    assert 0.5 < report["roc_auc"] <= 1.0

    one = run("evaluate", tmp_path / "run", "--data", data, "--protocol", "oneshot", "--ways", "3",
              "--episodes", "50", "--json")  # fmt: skip
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["ways"] == 3 and "ci95" in json.loads(one.stdout)

    a, b = data / "class_0" / "img_0.png", data / "class_0" / "img_1.png"
    ver = run("verify", model, a, b, "--json")
    assert ver.exit_code == 0, ver.output
    v = json.loads(ver.stdout)
    assert set(v) == {"distance", "threshold", "same", "rule"} and isinstance(v["same"], bool)
    assert run("verify", model, a, a, "--json").stdout.count('"same": true') == 1  # identical images
    assert "threshold" in run("verify", model, a, b).stdout

    out = tmp_path / "emb.npy"
    emb = run("embed", model, data / "class_1", a, "--out", out)
    assert emb.exit_code == 0, emb.output
    array = np.load(out)
    assert array.shape == (9, 16) and array.dtype == np.float32
    assert np.allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)  # normalize: true
    assert len(out.with_suffix(".txt").read_text().splitlines()) == 9


def test_train_resume_continues(trained):
    tmp_path, data, _ = trained
    cfg = tmp_path / "config.yaml"
    result = run("train", "--data", data, "--out", tmp_path / "run", "--config", cfg, "--quiet", "--json",
                 "--resume", "train.seed=3", "train.epochs=4")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]


def test_evaluate_on_a_pairs_file(trained):
    tmp_path, data, summary = trained
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "a,b,label\n" + "".join(f"{data}/class_{k}/img_0.png,{data}/class_{k}/img_1.png,1\n" for k in range(6))
        + "".join(f"{data}/class_{k}/img_0.png,{data}/class_{(k + 1) % 6}/img_1.png,0\n" for k in range(6))
    )  # fmt: skip
    ev = run("evaluate", summary["model"], "--data", pairs, "--json")
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["n_pairs"] == 12


def test_bad_inputs_exit_2_with_a_named_cause(tmp_path, trained):
    _, data, summary = trained
    cases = [
        (["train", "--data", tmp_path / "nowhere", "--out", tmp_path / "r"], "data not found: "),
        (["train", "--data", data, "--out", tmp_path / "r", "train.lrr=1"], "train.lrr: unknown key"),
        (["train", "--data", data, "--out", tmp_path / "r", "--config", tmp_path / "no.yaml"], "config file not found"),
        (["train", "--data", data, "--out", tmp_path / "r", "loss.name=nope"], "unknown loss 'nope'"),
        (["evaluate", tmp_path, "--data", data], "incomplete or not a twinnet model"),
        (["evaluate", summary["model"], "--data", data, "--protocol", "magic"],
         "--protocol: unknown protocol 'magic'; known: "),
        (["verify", summary["model"], data / "class_0" / "img_0.png", tmp_path / "none.png"],
         "none.png: image file not found"),
        (["embed", summary["model"], tmp_path / "nothing", "--out", tmp_path / "e.npy"], "input not found"),
    ]  # fmt: skip
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output


def test_one_item_class_and_truncated_image_through_the_real_command(tmp_path, image_folder_factory):
    data = image_folder_factory(classes=3, per_class=4, size=16)
    for f in list((data / "class_2").iterdir())[1:]:
        f.unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "twinnet", "train", "--data", data, "--out", tmp_path / "r", "--quiet",
         "model.input.size=[16,16]", "data.val_classes=0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "class_2" in proc.stderr and "fewer than 2 items" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = data / "class_0" / "img_0.png"
    bad.write_bytes(bad.read_bytes()[:50])
    proc = subprocess.run(
        [sys.executable, "-m", "twinnet", "evaluate", tmp_path, "--data", data], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_every_command_has_help():
    for command in ("train", "evaluate", "verify", "embed", "quickstart"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output
