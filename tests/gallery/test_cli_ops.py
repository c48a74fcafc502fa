import json

import numpy as np
import torch
from typer.testing import CliRunner

from twinnet.calibrate import calibrate
from twinnet.cli import app
from twinnet.config import ModelConfig
from twinnet.io import save
from twinnet.model import build_model

runner = CliRunner()


def saved_model(path, seed=0):
    torch.manual_seed(seed)
    encoder = {"name": "conv4", "params": {"hidden": 8, "blocks": 3, "embedding_dim": 16}}
    model = build_model(ModelConfig.model_validate({"input": {"size": [16, 16]}, "encoder": encoder})).eval()
    rng = np.random.default_rng(0)
    model.calibration = calibrate(rng.random(100) * 0.01, rng.random(100) < 0.5, model.comparator.orientation)
    save(model, path)
    return path


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_gallery_commands(tmp_path, image_folder_factory):
    model = saved_model(tmp_path / "model")
    data = image_folder_factory(classes=4, per_class=3, size=16)
    g = tmp_path / "gallery"
    assert run("gallery", "create", model, "--gallery", g).exit_code == 0
    r = run("gallery", "enroll", model, "--gallery", g, "--folder", data, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["identities"] == 4 and json.loads(r.stdout)["templates"] == 12
    r = run("gallery", "enroll", model, "--gallery", g, "--id", "alice", data / "class_0" / "img_0.png",
            "--metadata", '{"desk": 7}', "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run("gallery", "identify", model, "--gallery", g, data / "class_2" / "img_1.png", "--top-k", "3", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["matches"][0]["identity"] == "class_2" and result["matches"][0]["distance"] < 1e-3
    r = run("gallery", "verify", model, "--gallery", g, "--id", "class_1", data / "class_1" / "img_2.png", "--json")
    assert json.loads(r.stdout)["same"] is True
    listing = json.loads(run("gallery", "list", model, "--gallery", g, "--json").stdout)
    assert {x["id"] for x in listing["identities"]} == {"alice", "class_0", "class_1", "class_2", "class_3"}
    assert run("gallery", "remove", model, "--gallery", g, "--id", "alice").exit_code == 0
    # errors: unknown identity, mismatched model, missing gallery, bad metadata
    cases = [
        (("gallery", "remove", model, "--gallery", g, "--id", "alice"), "unknown identity 'alice'"),
        (("gallery", "list", saved_model(tmp_path / "other", seed=1), "--gallery", g), "was built with model"),
        (("gallery", "list", model, "--gallery", tmp_path / "nope"), "gallery not found"),
        (("gallery", "enroll", model, "--gallery", g, "--id", "x", data / "class_0" / "img_0.png", "--metadata", "[1]"),
         "--metadata: must be a JSON object"),
        (("gallery", "enroll", model, "--gallery", g), "give --id ID with INPUTs, --folder DIR"),
    ]  # fmt: skip
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split())
