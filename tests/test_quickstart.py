"""The embedded default: the targets of the core issue, through the real command."""

import json
import subprocess
import sys

import pytest

from twinnet import load


@pytest.mark.slow
def test_quickstart_meets_its_targets(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "twinnet", "quickstart", "--out", str(tmp_path / "qs"), "--json", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["seen"]["roc_auc"] >= 0.98
    assert result["unseen"]["roc_auc"] >= 0.80
    assert result["unseen"]["oneshot_4way_accuracy"] >= 0.65
    assert result["seconds"] < 120
    model = load(result["model"])
    assert model.calibration is not None and model.calibration.orientation.is_distance
    assert len(list((tmp_path / "qs" / "examples" / "unseen").glob("*/*.png"))) == result["unseen"]["items"]
