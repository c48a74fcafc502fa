"""Operating points wired through inference, the CLI (calibrate, init, verify, gallery, evaluate),
the gallery, the REST service and model files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import twinnet
from tests.test_cli import TINY
from twinnet.cli import app
from twinnet.config import load_config
from twinnet.errors import ConfigError
from twinnet.gallery import Gallery
from twinnet.io import load, read_manifest, save
from twinnet.serve import ServiceSettings, create_app

runner = CliRunner()
KEY = "k" * 24
H = {"X-API-Key": KEY}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *messages):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for message in messages:
        assert message in lines[0], (message, lines[0])


def image_folder(root: Path, classes: int = 6, per_class: int = 8, seed: int = 0) -> Path:
    """``classes`` classes of 8×8 grey images: a class pattern plus noise."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        base = rng.integers(0, 256, (8, 8))
        (root / f"class_{k}").mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class_{k}" / f"img_{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained by ``twinnet train`` (calibrated on its validation pairs), and its data."""
    tmp = tmp_path_factory.mktemp("op")
    data = image_folder(tmp / "images")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY)
    result = run("train", "--data", data, "--out", tmp / "run", "--config", cfg, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["model"]), data, cfg


@pytest.fixture(scope="module")
def strict(trained):
    """The trained model with an operating point ``strict`` (FAR ≤ 0.1) fitted by ``twinnet calibrate``."""
    model, data, _ = trained
    r = run("calibrate", model, "--data", data, "--target", "far=0.1", "--name", "strict", "--pairs", "400", "--json")
    assert r.exit_code == 0, r.output
    return model, data, json.loads(r.stdout)


def png(path: Path) -> bytes:
    return path.read_bytes()


def test_training_points_carry_the_validation_data_provenance(trained):
    model = load(trained[0])
    p = model.calibration.point().provenance
    assert p.identities is not None and p.identities > 0
    assert p.fingerprint is not None and p.fingerprint.startswith("sha256:")
    assert p.protocol == "verification" and p.settings["pairs"] == "balanced"


def test_calibrate_stores_a_named_point_and_keeps_the_default(strict):
    model_dir, _, point = strict
    assert point["name"] == "strict" and point["default"] is False and point["target"] == "far=0.1"
    assert len(point["far_ci95"]) == 2 and point["provenance"]["identities"] == 6
    model = load(model_dir)  # saved in place, and the manifest still verifies
    assert model.calibration.default == "default" and "strict" in model.calibration.names()
    assert model.calibration.threshold("strict") == pytest.approx(point["threshold"])


def test_calibrate_prints_the_point_with_its_intervals(trained, tmp_path):
    model_dir, data, _ = trained
    copy = tmp_path / "model"
    save(load(model_dir), copy)
    r = run("calibrate", copy, "--data", data, "--pairs", "300", "--name", "eer", "--default")
    assert r.exit_code == 0, r.output
    # balanced pairs of labelled classes: the intervals resample identities, and say so
    assert "bootstrap-by-identity" in r.stdout and "FAR" in r.stdout and "FRR" in r.stdout
    assert "6 identities" in r.stdout and "impostor pairs" in r.stdout
    assert load(copy).calibration.default == "eer"


@pytest.mark.parametrize("target", ["far=2", "nonsense", "frr=0"])
def test_calibrate_with_a_bad_target_is_one_line(trained, target):
    one_line_error(run("calibrate", trained[0], "--data", trained[1], "--target", target), "--target")


def test_calibrate_refuses_too_few_pairs_for_its_target(trained):
    one_line_error(run("calibrate", trained[0], "--data", trained[1], "--target", "far=1e-4", "--pairs", "200",
                       "--name", "x"), "impostor pairs")  # fmt: skip


def test_verify_at_a_named_operating_point(strict):
    model_dir, data, point = strict
    a, b = data / "class_0" / "img_0.png", data / "class_1" / "img_0.png"
    r = run("verify", model_dir, a, b, "--operating-point", "strict", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["operating_point"] == "strict" and out["threshold"] == pytest.approx(point["threshold"])
    default = json.loads(run("verify", model_dir, a, b, "--json").stdout)
    assert default["operating_point"] == "default"
    explicit = json.loads(run("verify", model_dir, a, b, "--threshold", "0.5", "--operating-point", "strict",
                              "--json").stdout)  # fmt: skip
    assert explicit["operating_point"] is None and explicit["threshold"] == 0.5
    text = run("verify", model_dir, a, b, "--operating-point", "strict")
    assert "operating point strict" in text.stdout


def test_unknown_operating_point_is_an_error_everywhere(strict, tmp_path):
    model_dir, data, _ = strict
    a = data / "class_0" / "img_0.png"
    one_line_error(run("verify", model_dir, a, a, "--operating-point", "nope"), "unknown operating point 'nope'",
                   "strict")  # fmt: skip
    model = load(model_dir)
    with pytest.raises(ConfigError, match="strict"):
        twinnet.verify(model, str(a), str(a), operating_point="nope")
    with pytest.raises(ConfigError, match="no calibration"):
        twinnet.verify(twinnet.build_model(model.config), str(a), str(a), operating_point="strict")
    with Gallery.create(tmp_path / "g", model) as g:
        g.enroll("x", [str(a)])
        with pytest.raises(ConfigError, match="unknown operating point"):
            g.identify(str(a), operating_point="nope")
        with pytest.raises(ConfigError, match="unknown operating point"):
            g.verify(str(a), "x", operating_point="nope")


def test_gallery_identify_and_verify_at_an_operating_point(strict, tmp_path):
    model_dir, data, point = strict
    g = tmp_path / "gallery"
    assert run("gallery", "create", model_dir, "-g", g).exit_code == 0
    assert run("gallery", "enroll", model_dir, "-g", g, "--folder", data).exit_code == 0
    probe = data / "class_2" / "img_1.png"
    r = run("gallery", "identify", model_dir, probe, "-g", g, "--operating-point", "strict", "--json")
    assert r.exit_code == 0, r.output
    found = json.loads(r.stdout)
    assert found["operating_point"] == "strict" and found["threshold"] == pytest.approx(point["threshold"])
    r = run("gallery", "verify", model_dir, probe, "-g", g, "--id", "class_2", "--operating-point", "strict", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["operating_point"] == "strict"
    r = run("gallery", "verify", model_dir, probe, "-g", g, "--id", "class_2", "--threshold", "1.0", "--json")
    assert json.loads(r.stdout)["operating_point"] is None
    one_line_error(run("gallery", "identify", model_dir, probe, "-g", g, "--operating-point", "nope"), "strict")
    with Gallery.open(g, load(model_dir)) as opened:
        assert opened.default_threshold("strict") == pytest.approx(point["threshold"])
        assert opened.identify(str(probe)).operating_point == "default"


def test_rest_verify_and_identify_at_an_operating_point(strict, tmp_path):
    model_dir, data, point = strict
    model = load(model_dir)
    a, b = png(data / "class_0" / "img_0.png"), png(data / "class_0" / "img_1.png")
    with Gallery.create(tmp_path / "g", model) as g:
        g.enroll("zero", [str(data / "class_0" / "img_2.png")])
        with TestClient(create_app(model, g, ServiceSettings(api_keys=[KEY]))) as client:
            r = client.post("/verify?operating_point=strict", files={"a": a, "b": b}, headers=H)
            assert r.status_code == 200, r.text
            assert r.json()["operating_point"] == "strict"
            assert r.json()["threshold"] == pytest.approx(point["threshold"])
            assert client.post("/verify", files={"a": a, "b": b}, headers=H).json()["operating_point"] == "default"
            r = client.post("/verify?operating_point=strict&threshold=0.5", files={"a": a, "b": b}, headers=H)
            assert r.json()["operating_point"] is None
            bad = client.post("/verify?operating_point=nope", files={"a": a, "b": b}, headers=H)
            assert bad.status_code == 400
            assert bad.json()["error"]["code"] == "bad_input" and "strict" in bad.json()["error"]["message"]
            found = client.post("/identify?operating_point=strict", files={"inputs": a}, headers=H)
            assert found.status_code == 200, found.text
            assert found.json()["results"][0]["operating_point"] == "strict"
            assert client.post("/identify?operating_point=nope", files={"inputs": a}, headers=H).status_code == 400
        settings = ServiceSettings(api_keys=[KEY], operating_point="strict")
        with TestClient(create_app(model, g, settings)) as client:
            assert client.post("/verify", files={"a": a, "b": b}, headers=H).json()["operating_point"] == "strict"


def drifted_copy(model_dir: Path, out: Path) -> Path:
    """The model with its ``strict`` point claiming a FAR its data cannot have (it will drift)."""
    model = load(model_dir)
    p = model.calibration.points["strict"]
    model.calibration.points["strict"] = replace(p, far=0.9, far_ci=(0.85, 0.95))
    return save(model, out)


def test_check_and_evaluate_warn_of_drifted_points(strict, tmp_path):
    model_dir, data, _ = strict
    drifted = drifted_copy(model_dir, tmp_path / "drifted")
    r = run("calibrate", drifted, "--data", data, "--check", "--pairs", "400")
    assert r.exit_code == 0, r.output
    assert "strict (far=0.1): drifted" in r.stdout and "warning: operating point strict" in r.stderr
    assert "bootstrap-by-identity" in r.stdout
    r = run("calibrate", drifted, "--data", data, "--check", "--pairs", "400", "--json")
    report = json.loads(r.stdout)
    assert report["interval"] == "bootstrap-identity"
    assert report["drifted"] is True and {c["name"]: c["drifted"] for c in report["checks"]}["strict"] is True
    r = run("evaluate", drifted, "--data", data, "--pairs", "400", "--json")
    assert r.exit_code == 0, r.output
    checks = {c["name"]: c for c in json.loads(r.stdout)["operating_points"]["checks"]}
    assert checks["strict"]["drifted"] is True
    assert "warning: operating point strict" in r.stderr
    text = run("evaluate", drifted, "--data", data, "--pairs", "400")
    assert text.exit_code == 0 and "drifted" in text.stdout
    episodes = run("evaluate", drifted, "--data", data, "--protocol", "nway", "--ways", "2", "--episodes", "5",
                   "--json")  # fmt: skip
    assert episodes.exit_code == 0, episodes.output
    assert "operating_points" not in json.loads(episodes.stdout)


def test_init_saves_an_untrained_baseline_that_the_same_commands_use(trained, tmp_path):
    _, data, cfg = trained
    r = run("init", "-c", cfg, "--out", tmp_path / "base")
    assert r.exit_code == 0, r.output
    assert load(tmp_path / "base").calibration is None
    ev = run("evaluate", tmp_path / "base", "--data", data, "--pairs", "300", "--json")
    assert ev.exit_code == 0, ev.output and "operating_points" not in json.loads(ev.stdout)
    r = run("init", "-c", cfg, "--out", tmp_path / "cal", "--calibrate-on", data, "--pairs", "300", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["operating_point"]["name"] == "default"
    a = data / "class_0" / "img_0.png"
    assert json.loads(run("verify", tmp_path / "cal", a, a, "--json").stdout)["operating_point"] == "default"
    ev = run("evaluate", tmp_path / "cal", "--data", data, "--pairs", "300", "--json")
    assert json.loads(ev.stdout)["operating_points"]["drifted"] is False
    one_line_error(run("init", "-c", cfg, "--out", tmp_path / "x", "--calibrate-on", data, "--target", "far=7"),
                   "--target")  # fmt: skip


def test_init_of_a_small_text_model_says_it_needs_training(tmp_path):
    cfg = tmp_path / "text.yaml"
    cfg.write_text("model:\n  input: {kind: text}\n  encoder: {name: small_text}\n  comparator: {name: cosine}\n")
    one_line_error(run("init", "-c", cfg, "--out", tmp_path / "t"), "small_text", "twinnet train")


def test_a_models_normalizer_is_saved_and_loaded(tmp_path):
    from twinnet.normalize import ScoreNormalizer

    torch.manual_seed(0)
    model = twinnet.build_model(load_config(_write(tmp_path, TINY)).model).eval()
    rng = np.random.default_rng(0)
    cohort = rng.normal(size=(6, 4)).astype(np.float32)
    model.normalizer = ScoreNormalizer(model.comparator, cohort, "znorm")
    model.normalizer.add_templates(["t1", "t2"], rng.normal(size=(2, 4)).astype(np.float32))
    save(model, tmp_path / "m")
    files = read_manifest(tmp_path / "m")["files"]
    assert "normalizer.json" in files and "normalizer.safetensors" in files
    back = load(tmp_path / "m")
    assert back.normalizer is not None and back.normalizer.to_json() == model.normalizer.to_json()
    q, t = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(back.normalizer.score(q, t), model.normalizer.score(q, t), rtol=1e-6)
    save(back, tmp_path / "again")  # a loaded normaliser saves again
    assert load(tmp_path / "again").normalizer.template_ids == ["t1", "t2"]
    plain = twinnet.build_model(model.config)
    save(plain, tmp_path / "plain")
    assert load(tmp_path / "plain").normalizer is None


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_pair_classification_decides_at_the_verification_point_and_names_it():
    from twinnet.calibrate import Calibration, Provenance, fit_operating_point
    from twinnet.data.pairs import Pairs
    from twinnet.protocols.text import PairClassificationProtocol

    torch.manual_seed(0)
    encoder = {"name": "mlp", "params": {"hidden": [8], "embedding_dim": 4}}
    cfg = {"input": {"kind": "vector", "features": 4}, "encoder": encoder}
    model = twinnet.build_model(twinnet.ModelConfig.model_validate(cfg)).eval()
    rng = np.random.default_rng(0)
    items = twinnet.from_arrays(rng.normal(size=(20, 4)).astype(np.float32), np.arange(20) % 4)
    pairs = Pairs(np.arange(0, 20, 2), np.arange(1, 21, 2) % 20, rng.random(10) < 0.5)
    orientation = model.comparator.orientation
    values, genuine = rng.random(40), np.arange(40) % 2 == 0
    cal = Calibration(orientation)
    sig = fit_operating_point(values, genuine, orientation, "eer", provenance=Provenance(protocol="signature"))
    ver = replace(sig, threshold=0.25, provenance=Provenance(protocol="verification"))
    cal.add("sig", sig)
    cal.add("pairs", ver)
    result = PairClassificationProtocol().run(model, items, pairs, cal).to_dict()
    assert result["operating_point"] == "pairs" and result["threshold"] == 0.25
