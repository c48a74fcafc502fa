"""A model that carries a cohort normaliser decides on normalised scores wherever it decides:
``twinnet.verify``, ``twinnet verify``, the gallery and the service, at operating points fitted on
them (``twinnet calibrate --normalize … --cohort …``), and on native values at the others."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import twinnet
from twinnet.calibrate import NATIVE, Calibration, OperatingPoint, Provenance
from twinnet.cli import app
from twinnet.config import ModelConfig
from twinnet.errors import ConfigError
from twinnet.gallery import Gallery
from twinnet.io import load, save
from twinnet.normalize import ScoreNormalizer
from twinnet.serve import ServiceSettings, create_app

runner = CliRunner()
KEY = "k" * 24
H = {"X-API-Key": KEY}
COHORT = np.array([[0.0], [2.0], [4.0]], np.float32)
# query 1, template 5: distance 4 (similarity −4); the template's similarities to the cohort are
# −5, −3, −1: mean −3, std √(8/3); z-norm (−4 + 3) / √(8/3) = −√(3/8)
Z = -math.sqrt(3 / 8)


def identity_model() -> twinnet.TwinNetwork:
    """A 1-d vector model whose embedding is its input (a linear layer of weight 1), Euclidean."""
    cfg = ModelConfig.model_validate({"input": {"kind": "vector", "features": 1},
                                      "encoder": {"name": "mlp", "params": {"hidden": [], "embedding_dim": 1}},
                                      "comparator": {"name": "euclidean"}})  # fmt: skip
    model = twinnet.build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.ones_like(p) if p.ndim == 2 else torch.zeros_like(p))
    return model.eval()


def point(threshold: float, scale: str = NATIVE, **settings: object) -> OperatingPoint:
    return OperatingPoint(threshold, "eer", 0.1, 0.1, 0.9, (0.05, 0.15), (0.05, 0.15), 10, 10,
                          Provenance(protocol="verification", settings=dict(settings)), scale=scale)  # fmt: skip


def with_points(model: twinnet.TwinNetwork) -> twinnet.TwinNetwork:
    """``default``: distance ≤ 3.5 (native; 4 is different); ``znorm``: z-normalised score ≥ −1 (same)."""
    model.normalizer = ScoreNormalizer(model.comparator, COHORT, "znorm")
    fingerprint = model.normalizer.fingerprint
    model.calibration = Calibration(model.comparator.orientation, {
        "default": point(3.5), "znorm": point(-1.0, "znorm", normalization="znorm", cohort=fingerprint)})  # fmt: skip
    return model


def test_verify_decides_on_the_normalised_score_by_hand():
    model = with_points(identity_model())
    q, t = torch.tensor([1.0]), torch.tensor([5.0])
    at_z = twinnet.verify(model, q, t, operating_point="znorm")
    assert at_z.value == pytest.approx(4.0) and at_z.normalized == pytest.approx(Z, rel=1e-5)
    assert at_z.same is True and at_z.scale == "znorm" and at_z.threshold == -1.0
    out = at_z.to_dict()
    assert out["normalized_score"] == pytest.approx(Z, rel=1e-5) and out["normalization"] == "znorm"
    assert "znorm-normalised score >= threshold" in out["rule"]
    native = twinnet.verify(model, q, t)  # the default point is native: decided on the distance
    assert native.same is False and native.scale == "native" and native.normalized == pytest.approx(Z, rel=1e-5)
    # a stricter normalised threshold rejects: the decision really is on the normalised score
    model.calibration.points["znorm"] = point(-0.5, "znorm", normalization="znorm",
                                              cohort=model.normalizer.fingerprint)  # fmt: skip
    assert twinnet.verify(model, q, t, operating_point="znorm").same is False
    # without the normaliser, or with another cohort, the normalised point refuses to decide
    model.normalizer = ScoreNormalizer(model.comparator, COHORT + 1, "znorm")
    with pytest.raises(ConfigError, match="another cohort"):
        twinnet.verify(model, q, t, operating_point="znorm")
    model.normalizer = None
    with pytest.raises(ConfigError, match="no normaliser"):
        twinnet.verify(model, q, t, operating_point="znorm")


def test_cli_verify_output_follows_the_normaliser(tmp_path):
    np.save(tmp_path / "q.npy", np.array([1.0], np.float32))
    np.save(tmp_path / "t.npy", np.array([5.0], np.float32))
    save(with_points(identity_model()), tmp_path / "m")
    plain = identity_model()
    plain.calibration = with_points(identity_model()).calibration
    plain.calibration.points.pop("znorm")
    save(plain, tmp_path / "plain")
    args = [str(tmp_path / "q.npy"), str(tmp_path / "t.npy"), "--json"]
    before = json.loads(runner.invoke(app, ["verify", str(tmp_path / "plain"), *args]).stdout)
    assert "normalized_score" not in before and before["same"] is False
    r = runner.invoke(app, ["verify", str(tmp_path / "m"), *args, "--operating-point", "znorm"])
    assert r.exit_code == 0, r.output
    after = json.loads(r.stdout)
    assert after["normalized_score"] == pytest.approx(Z, rel=1e-5) and after["same"] is True
    assert after["scale"] == "znorm" and after["distance"] == pytest.approx(4.0)
    text = runner.invoke(app, ["verify", str(tmp_path / "m"), *args[:2], "--operating-point", "znorm"])
    assert "znorm-normalised" in text.stdout and "same" in text.stdout


def test_gallery_and_service_decide_on_normalised_scores(tmp_path):
    model = with_points(identity_model())
    with Gallery.create(tmp_path / "g", model) as g:
        g.enroll("five", [np.array([5.0], np.float32)])
        g.enroll("zero", [np.array([0.0], np.float32)])
        v = g.verify(np.array([1.0], np.float32), "five", operating_point="znorm").to_dict()
        assert v["normalized_score"] == pytest.approx(Z, rel=1e-5) and v["same"] is True
        assert g.verify(np.array([1.0], np.float32), "five").to_dict()["same"] is False  # native default
        found = g.identify(np.array([1.0], np.float32), operating_point="znorm").to_dict()
        # zero is 1 away (similarity −1); it is a cohort member, left out of its own statistics: its
        # similarities to 2 and 4 are −2 and −4 (mean −3, std 1), so its z-norm is (−1 + 3) / 1 = 2
        by_id = {m["identity"]: m for m in found["matches"]}
        assert by_id["five"]["normalized_score"] == pytest.approx(Z, rel=1e-5)
        assert by_id["zero"]["normalized_score"] == pytest.approx(2.0, rel=1e-5)
        assert found["identity"] == "zero"
        with TestClient(create_app(model, g, ServiceSettings(api_keys=[KEY]))) as client:
            body = {"a": [1.0], "b": [5.0]}
            r = client.post("/verify?operating_point=znorm", json=body, headers=H)
            assert r.status_code == 200, r.text
            assert r.json()["normalized_score"] == pytest.approx(Z, rel=1e-5) and r.json()["same"] is True
            assert client.post("/verify", json=body, headers=H).json()["same"] is False


def test_calibrate_fits_a_normaliser_and_its_threshold_on_normalised_scores(tmp_path):
    from tests.test_operating_points import TINY, image_folder

    data = image_folder(tmp_path / "images")
    cohort = image_folder(tmp_path / "cohort", classes=4, seed=7)
    (tmp_path / "tiny.yaml").write_text(TINY)
    r = runner.invoke(app, ["init", "-c", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    raw = runner.invoke(app, ["calibrate", str(tmp_path / "m"), "--data", str(data), "--name", "raw", "--pairs", "300"])
    assert raw.exit_code == 0, raw.output
    r = runner.invoke(app, ["calibrate", str(tmp_path / "m"), "--data", str(data), "--normalize", "snorm",
                            "--cohort", str(cohort), "--name", "snorm", "--pairs", "300", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    p = json.loads(r.stdout)
    assert p["scale"] == "snorm" and p["interval"] == "bootstrap-identity"
    assert p["provenance"]["settings"]["normalization"] == "snorm"
    model = load(tmp_path / "m")
    assert model.normalizer is not None and model.normalizer.kind == "snorm" and len(model.normalizer.cohort) == 32
    assert p["provenance"]["settings"]["cohort"] == model.normalizer.fingerprint
    a, b = data / "class_0" / "img_0.png", data / "class_1" / "img_0.png"
    out = json.loads(runner.invoke(app, ["verify", str(tmp_path / "m"), str(a), str(b), "--operating-point", "snorm",
                                         "--json"]).stdout)  # fmt: skip
    assert out["scale"] == "snorm" and out["threshold"] == pytest.approx(p["threshold"])
    native = json.loads(runner.invoke(app, ["verify", str(tmp_path / "m"), str(a), str(b), "--json"]).stdout)
    assert native["scale"] == "native" and native["normalized_score"] == pytest.approx(out["normalized_score"])
    # the drift check measures each point on its own scale: the native one and the normalised one
    check = runner.invoke(app, ["calibrate", str(tmp_path / "m"), "--data", str(data), "--check", "--pairs", "300",
                                "--json"])  # fmt: skip
    assert check.exit_code == 0, check.output
    checked = {c["name"]: c for c in json.loads(check.stdout)["checks"]}
    assert checked["raw"]["drifted"] is not None and checked["snorm"]["drifted"] is False
    assert checked["raw"]["threshold"] != checked["snorm"]["threshold"]
    one = runner.invoke(app, ["calibrate", str(tmp_path / "m"), "--data", str(data), "--normalize", "snorm"])
    assert one.exit_code == 2 and "--cohort" in one.output
