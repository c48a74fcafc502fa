"""The service's drift visibility without labels: per window, the distribution of the scores it
answered and the share each operating point accepted (``GET /stats``, ``stats_log``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.test_cohort_deployed import Z, identity_model, with_points
from twinnet.errors import ConfigError
from twinnet.gallery import Gallery
from twinnet.inference import Scores
from twinnet.serve import ScoreLog, ServiceSettings, create_app

KEY = "k" * 24
H = {"X-API-Key": KEY}


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_windows_by_hand(tmp_path):
    model = with_points(identity_model())  # default: distance ≤ 3.5; znorm: normalised score ≥ −1
    clock = Clock(1000.0)
    log = ScoreLog(model, 60.0, tmp_path / "s" / "stats.jsonl", clock=clock)
    for d in (1.0, 2.0, 3.0, 4.0):
        log.record("verify", Scores(np.array([d]), np.array([-d / 4]), "znorm"))
    now = log.snapshot()["current"]["verify"]
    assert now["count"] == 4 and now["native"]["mean"] == pytest.approx(2.5)
    assert now["native"]["quantiles"]["p50"] == pytest.approx(2.5)
    assert now["native"]["quantiles"]["p05"] == pytest.approx(1.15)  # numpy's linear quantile of 1, 2, 3, 4
    assert now["normalized"]["mean"] == pytest.approx(-0.625)
    assert now["accepted"] == {"default": 0.75, "znorm": 1.0}  # 3 of 4 distances ≤ 3.5; every −d/4 ≥ −1
    clock.t = 1075.0  # the next window: the first one closes, and goes to the log file
    log.record("verify", Scores(np.array([9.0])))
    assert [w["verify"]["count"] for w in log.snapshot()["recent"]] == [4]
    assert log.snapshot()["current"]["verify"]["accepted"] == {"default": 0.0}  # no normalised score to decide
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "s" / "stats.jsonl").read_text().splitlines()]
    assert [line["verify"]["count"] for line in lines] == [4, 1]
    assert lines[0]["start"] == "1970-01-01T00:16:00Z" and lines[0]["end"] == "1970-01-01T00:17:00Z"
    assert "partial" not in lines[0] and lines[1]["partial"] is True
    with pytest.raises(ConfigError, match="positive"):
        ScoreLog(model, 0.0)
    with pytest.raises(ConfigError, match="positive"):
        ScoreLog(model, math.nan)


def test_stats_endpoint_and_log_through_the_service(tmp_path):
    model = with_points(identity_model())
    path = tmp_path / "stats.jsonl"
    with Gallery.create(tmp_path / "g", model) as g:
        g.enroll("five", [np.array([5.0], np.float32)])
        app = create_app(model, g, ServiceSettings(api_keys=[KEY], stats_window_s=3600, stats_log=path))
        with TestClient(app) as client:
            answers = [client.post("/verify", json={"a": [a], "b": [5.0]}, headers=H).json() for a in (1.0, 2.0, 4.0)]
            assert [a["same"] for a in answers] == [False, True, True]  # distances 4, 3, 1 at ≤ 3.5
            r = client.post("/identify?operating_point=znorm", json={"inputs": [[1.0]]}, headers=H)
            assert r.status_code == 200, r.text
            assert client.get("/stats").status_code == 401  # behind the API key
            stats = client.get("/stats", headers=H).json()
            verify = stats["current"]["verify"]
            assert verify["count"] == 3 and verify["native"]["mean"] == pytest.approx(8 / 3, rel=1e-6)
            assert verify["accepted"]["default"] == pytest.approx(2 / 3)
            identify = stats["current"]["identify"]
            assert identify["count"] == 1 and identify["normalized"]["mean"] == pytest.approx(Z, rel=1e-5)
            assert stats["log"] == str(path) and stats["recent"] == []
        # the service's shutdown wrote the open window
        (line,) = path.read_text().splitlines()
        written = json.loads(line)
        assert written["partial"] is True and written["verify"]["count"] == 3
