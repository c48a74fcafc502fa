"""The fingerprint walk-through through the CLI: evaluate with the FVC protocol, verify two files,
enrol fingers and identify, on a tiny untrained model and synthetic impressions."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from tests.fingerprints.test_model import CONFIG
from twinnet.cli import app
from twinnet.config import ModelConfig
from twinnet.fingerprints.synthetic import write_fvc_folder
from twinnet.io import save
from twinnet.model import build_model

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_evaluate_verify_enrol_identify(tmp_path):
    data = write_fvc_folder(tmp_path / "DB1_B", fingers=3, impressions=2)
    torch.manual_seed(0)
    model = save(build_model(ModelConfig.model_validate(CONFIG)).eval(), tmp_path / "model")
    r = run("evaluate", model, "--data", data, "--protocol", "fvc", "--impostors", "all", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["genuine"] == 3 and result["impostors"] == 12 and result["primary_metric"] == "eer"
    assert run("evaluate", model, "--data", data, "--protocol", "fvc", "--impostors", "some").exit_code == 2
    r = run("verify", model, data / "101_1.tif", data / "101_2.tif", "--json")
    assert r.exit_code == 0, r.output
    assert -1.0 <= json.loads(r.stdout)["score"] <= 1.0
    g = tmp_path / "gallery"
    assert run("gallery", "create", model, "--gallery", g).exit_code == 0
    for finger in ("101", "102", "103"):
        r = run("gallery", "enroll", model, "--gallery", g, "--id", finger, data / f"{finger}_1.tif", "--json")
        assert r.exit_code == 0, r.output
    r = run("gallery", "identify", model, "--gallery", g, data / "102_1.tif", "--top-k", "2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["matches"][0]["identity"] == "102"  # an enrolled impression finds itself
