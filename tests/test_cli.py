import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
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
    assert set(v) == {"distance", "threshold", "operating_point", "same", "rule", "scale"} and isinstance(
        v["same"], bool
    )
    assert v["scale"] == "native"  # no normaliser: the decision is on the comparator's own values
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


# -- issue 11, "no silent wrong answers": each bad input below is one line naming its cause, exit 2 --


TINY = """
model:
  input: {kind: image, channels: 1, size: [8, 8]}
  encoder: {name: mlp, params: {hidden: [16], embedding_dim: 4}}
  comparator: {name: euclidean}
loss: {name: contrastive}
data: {val_classes: 0.34}
train: {epochs: 1, samples_per_epoch: 32, batch_size: 16, progress: false, validation: {pairs: 40}}
"""


def one_line_error(result, *messages):
    """Exit status 2, no traceback, and one line ``error: …`` holding every message."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (ValueError, RuntimeError))
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for message in messages:
        assert message in lines[0], (message, lines[0])


@pytest.fixture
def tiny(tmp_path, image_folder_factory):
    """A small untrained image model saved to disk, its config and an 8×8 image folder of 6 classes."""
    import twinnet
    from twinnet.config import load_config

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    model_dir = twinnet.save(twinnet.build_model(load_config(cfg).model), tmp_path / "model")
    return model_dir, cfg, image_folder_factory(classes=6, per_class=4, size=8)


def tamper_nan(model_dir):
    """Overwrite the saved weights with NaN and re-hash the manifest, as someone hiding the change would."""
    from safetensors.torch import load_file, save_file

    from twinnet.io import WEIGHTS, write_manifest

    tensors = load_file(str(model_dir / WEIGHTS))
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()},
              str(model_dir / WEIGHTS))  # fmt: skip
    (model_dir / "twinnet.json").unlink()
    write_manifest(model_dir)


def png_header(width, height):
    """A tiny PNG file whose header declares ``width`` × ``height`` pixels (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "content",
    [bytes(range(256)) * 8, "a,b,label\nä.png,ö.png,1\nx.png,y.png,0\n".encode("latin-1")],
    ids=["binary", "latin-1"],
)
def test_binary_or_non_utf8_pairs_file_is_one_line_naming_it(tmp_path, tiny, content):
    model_dir, cfg, _ = tiny
    pairs = tmp_path / "pairs.csv"
    pairs.write_bytes(content)
    one_line_error(run("evaluate", model_dir, "--data", pairs), f"{pairs}:")
    one_line_error(run("train", "--data", pairs, "--out", tmp_path / "r", "-c", cfg, "-q"), f"{pairs}:")


def test_pairs_file_with_one_label_does_not_train(tmp_path, tiny):
    model_dir, cfg, data = tiny
    pairs = tmp_path / "same.csv"
    pairs.write_text("".join(f"{data}/class_{k}/img_0.png,{data}/class_{k}/img_1.png,1\n" for k in range(6)))
    result = run("train", "--data", pairs, "--out", tmp_path / "r", "-c", cfg, "-q")
    one_line_error(result, f"{pairs}: all 6 pairs are labelled same (1)")
    assert not (tmp_path / "r" / "model").exists()
    one_line_error(run("evaluate", model_dir, "--data", pairs), "need both same and different pairs")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=0", "train.lr: Input should be greater than 0"),
        ("train.lr=-1", "train.lr: Input should be greater than 0"),
        ("train.lr=.nan", "train.lr: Input should be a finite number"),
        ("train.epochs=-5", "train.epochs: Input should be greater than 0"),
        ("train.samples_per_epoch=0", "train.samples_per_epoch: Input should be greater than 0"),
        ("train.batch_size=0", "train.batch_size: Input should be greater than 0"),
        ("train.seed=-1", "train.seed: Input should be greater than or equal to 0"),
        ("train.validation.pairs=0", "train.validation.pairs: Input should be greater than or equal to 2"),
        ("train.early_stopping.patience=0", "train.early_stopping.patience: Input should be greater than 0"),
        ("model.encoder.params.embedding_dim=0", "model.encoder.params (encoder 'mlp'): embedding_dim must be at"),
        ("model.encoder.params.embedding_dim=-3", "model.encoder.params (encoder 'mlp'): embedding_dim must be at"),
        ("model.encoder.params.embedding_dim=100000000000000", "model.encoder: cannot build encoder 'mlp'"),
    ],
)  # fmt: skip
def test_out_of_range_training_settings_are_one_line_naming_the_key(tmp_path, tiny, override, message):
    _, cfg, data = tiny
    result = run("train", "--data", data, "--out", tmp_path / "r", "-c", cfg, "-q", override)
    one_line_error(result, message)
    assert not (tmp_path / "r" / "model").exists()  # train.epochs=-5 used to save an untrained model, exit 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "nway", "--ways", "0"], "--ways: must be at least 2, not 0"),
        (["--protocol", "nway", "--ways", "1"], "--ways: must be at least 2, not 1"),
        (["--protocol", "nway", "--shots", "0"], "--shots: must be at least 1, not 0"),
        (["--protocol", "nway", "--episodes", "0"], "--episodes: must be at least 1, not 0"),
        (["--pairs", "0"], "--pairs: must be at least 2, not 0"),
        (["--seed", "-1"], "--seed: must be at least 0, not -1"),
    ],
)
def test_evaluate_count_options_out_of_range_name_the_option(tiny, args, message):
    model_dir, _, data = tiny
    one_line_error(run("evaluate", model_dir, "--data", data, *args), message)


def test_embed_batch_size_zero_names_the_option(tmp_path, tiny):
    model_dir, _, data = tiny
    one_line_error(run("embed", model_dir, data, "--out", tmp_path / "e.npy", "--batch-size", "0"),
                   "--batch-size: must be at least 1, not 0")  # fmt: skip
    assert not (tmp_path / "e.npy").exists()


def test_gallery_identify_top_k_zero_names_the_option(tmp_path, tiny):
    model_dir, _, data = tiny
    gallery = tmp_path / "g"
    assert run("gallery", "create", model_dir, "-g", gallery).exit_code == 0
    assert run("gallery", "enroll", model_dir, "-g", gallery, "--folder", data).exit_code == 0
    probe = data / "class_0" / "img_0.png"
    one_line_error(run("gallery", "identify", model_dir, probe, "-g", gallery, "--top-k", "0"),
                   "--top-k: must be at least 1, not 0")  # fmt: skip
    one_line_error(run("gallery", "identify", model_dir, probe, "-g", gallery, "--threshold", "nan"),
                   "--threshold: nan is not a finite number")  # fmt: skip


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_verify_with_a_non_finite_threshold_is_an_error(tiny, value):
    model_dir, _, data = tiny
    a, b = data / "class_0" / "img_0.png", data / "class_1" / "img_0.png"
    one_line_error(run("verify", model_dir, a, b, "--threshold", value, "--json"),
                   f"--threshold: {float(value)} is not a finite number")  # fmt: skip


def test_nan_weights_with_a_rehashed_manifest_never_give_an_answer(tmp_path, tiny):
    model_dir, _, data = tiny
    tamper_nan(model_dir)
    a, b = data / "class_0" / "img_0.png", data / "class_0" / "img_1.png"
    result = run("verify", model_dir, a, b, "--json")
    one_line_error(result, "the model produced non-finite embeddings for A: its weights may be corrupt")
    assert "NaN" not in result.stdout and '"same"' not in result.stdout
    one_line_error(run("embed", model_dir, data, "--out", tmp_path / "e.npy"), "non-finite embeddings for")
    assert not (tmp_path / "e.npy").exists()
    # verification crashed inside scikit-learn; nway reported a chance-level accuracy with exit 0
    for options in (["--protocol", "verification"], ["--protocol", "nway", "--ways", "3"]):
        one_line_error(run("evaluate", model_dir, "--data", data, *options, "--json"),
                       "the model's weights are corrupt: ", "NaN")  # fmt: skip


def test_json_output_never_holds_nan(tiny, monkeypatch):
    import twinnet.evaluate
    from twinnet.cli import _print_json
    from twinnet.errors import DataError
    from twinnet.protocols.base import ProtocolResult

    with pytest.raises(DataError, match=r"non-finite number at scores\[1\]"):
        _print_json({"scores": [1.0, float("nan")]})
    with pytest.raises(DataError, match=r"non-finite number at a.b"):
        _print_json({"a": {"b": np.float32("inf")}})
    model_dir, _, data = tiny
    nan_result = ProtocolResult("verification", {"roc_auc": float("nan")}, "roc_auc")
    monkeypatch.setattr(twinnet.evaluate, "evaluate_model", lambda *a, **k: nan_result)
    result = run("evaluate", model_dir, "--data", data, "--json")
    one_line_error(result, "non-finite number at roc_auc")
    assert "NaN" not in result.stdout


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_verify_refuses_an_image_over_the_pixel_limit_before_decoding_it(tmp_path, tiny, monkeypatch):
    model_dir, _, data = tiny
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20000, 20000))  # 20000×20000 would decode to 400 MB, several GB in float
    small = data / "class_0" / "img_0.png"
    one_line_error(run("verify", model_dir, bomb, small), f"{bomb}: 20000×20000 pixels", "limit of 40 megapixels")
    monkeypatch.setenv("TWINNET_MAX_PIXELS", "63")  # the 8×8 images have 64 pixels
    one_line_error(run("verify", model_dir, small, small, "--json"), f"{small}: 8×8 pixels", "TWINNET_MAX_PIXELS")
    monkeypatch.setenv("TWINNET_MAX_PIXELS", "64")
    assert run("verify", model_dir, small, small, "--json").exit_code == 0


def test_error_messages_print_as_text_not_markup(tmp_path, tiny):
    model_dir, _, data = tiny
    for name in ("scan[draft].png", "scan[/].png"):  # rich dropped "[draft]" and crashed on "[/]"
        missing = tmp_path / name
        result = run("verify", model_dir, data / "class_0" / "img_0.png", missing)
        one_line_error(result, f"{missing}: image file not found")
