import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import twinnet
from twinnet.calibrate import calibrate
from twinnet.compare import DISTANCE
from twinnet.config import ModelConfig
from twinnet.errors import ConfigError, ModelFormatError
from twinnet.io import atomic_directory, load, save
from twinnet.model import build_model

CFG = ModelConfig.model_validate(
    {
        "input": {"size": [12, 12]},
        "encoder": {"name": "conv4", "params": {"hidden": 8, "embedding_dim": 6}},
        "comparator": {"name": "mahalanobis"},
    }
)


def _trained_model():
    torch.manual_seed(0)
    model = build_model(CFG)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):  # move weights and BatchNorm statistics away from their initial values
        model(torch.rand(8, 1, 12, 12), torch.rand(8, 1, 12, 12)).mean().backward()
        opt.step()
    return model.eval()


def test_save_load_gives_identical_outputs_and_carries_calibration(tmp_path):
    model = _trained_model()
    rng = np.random.default_rng(0)
    model.calibration = calibrate(rng.random(100), rng.random(100) < 0.5, DISTANCE)
    save(model, tmp_path / "m", metrics={"roc_auc": 0.9})
    loaded = load(tmp_path / "m")
    x1, x2 = torch.rand(5, 1, 12, 12), torch.rand(5, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x1, x2), loaded(x1, x2))
    assert loaded.calibration == model.calibration
    assert loaded.metrics == {"roc_auc": 0.9}
    assert loaded.fingerprint == model.fingerprint and len(loaded.fingerprint) == 64
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "calibration.json", "config.json", "metrics.json", "twinnet.json", "weights.safetensors",
    ]  # fmt: skip


def test_half_twin_with_shared_part_round_trips(tmp_path):
    cfg = ModelConfig.model_validate(
        {
            "input": {"size": [12, 12]},
            "encoder": {"name": "conv4", "params": {"hidden": 4, "embedding_dim": 3}},
            "encoder_b": {"name": "conv4", "params": {"hidden": 4, "embedding_dim": 3}},
            "share": ["features"],
        }
    )
    model = build_model(cfg).eval()
    save(model, tmp_path / "h")
    loaded = load(tmp_path / "h")
    assert loaded.encoder_a.features is loaded.encoder_b.features
    x = torch.rand(2, 1, 12, 12)
    assert torch.equal(model(x, x), loaded(x, x))


def test_load_accepts_a_run_directory(tmp_path):
    save(_trained_model(), tmp_path / "run" / "model")
    assert load(tmp_path / "run").config == CFG


def test_incomplete_and_corrupt_models_are_refused(tmp_path):
    with pytest.raises(ModelFormatError, match="model directory not found"):
        load(tmp_path / "missing")
    save(_trained_model(), tmp_path / "m")
    (tmp_path / "m" / "twinnet.json").rename(tmp_path / "manifest.bak")
    with pytest.raises(ModelFormatError, match="incomplete or not a twinnet model"):
        load(tmp_path / "m")
    (tmp_path / "manifest.bak").rename(tmp_path / "m" / "twinnet.json")
    weights = tmp_path / "m" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="corrupt or modified"):
        load(tmp_path / "m")
    weights.unlink()
    with pytest.raises(ModelFormatError, match="weights.safetensors is missing"):
        load(tmp_path / "m")


def test_newer_format_version_is_refused(tmp_path):
    save(_trained_model(), tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "twinnet.json").read_text())
    manifest["format_version"] = 99
    (tmp_path / "m" / "twinnet.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match="format version 99 is not supported"):
        load(tmp_path / "m")


def test_config_that_no_longer_fits_is_refused(tmp_path):
    save(_trained_model(), tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["encoder"]["params"]["colour"] = "blue"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="colour"):
        load(tmp_path / "m", verify=False)


def test_saving_a_network_without_config_says_how():
    net = twinnet.TwinNetwork(twinnet.encoders.MLPEncoder(in_features=4), "euclidean")
    with pytest.raises(ConfigError, match="register_encoder"):
        save(net, "/tmp/never-written")


def test_failed_write_leaves_previous_version_intact(tmp_path):
    target = tmp_path / "m"
    first = _trained_model()
    save(first, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("crash in the middle of a save")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # the temporary directory is gone


_SAVER = """
import os, sys, torch
from pathlib import Path
from twinnet.io import save
from twinnet.model import build_model
from twinnet.config import ModelConfig
cfg = ModelConfig.model_validate({"input": {"size": [28, 28]},
    "encoder": {"name": "conv4", "params": {"hidden": 64, "embedding_dim": 512}}})
target, marker = Path(sys.argv[1]), Path(sys.argv[2])
i = 0
while True:
    torch.manual_seed(i)
    save(build_model(cfg), target, metrics={"i": i})
    # atomically, so a kill cannot leave the marker empty
    marker.with_suffix(".tmp").write_text(str(i))
    os.replace(marker.with_suffix(".tmp"), marker)
    i += 1
"""


@pytest.mark.slow
def test_killed_while_saving_never_leaves_a_broken_model(tmp_path):
    target, marker = tmp_path / "model", tmp_path / "done"
    for delay in (0.05, 0.13, 0.29):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(target), str(marker)])
        try:
            deadline = time.time() + 60
            while not marker.exists():
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.02)
            time.sleep(delay)  # somewhere inside a later save
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        model = load(target)  # loads, and is one of the completed saves
        assert model.metrics["i"] <= int(marker.read_text()) + 1
        marker.unlink()
