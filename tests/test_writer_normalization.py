"""Writer-dependent score normalisation of the signature protocol, on numbers small enough to
check by hand, and how its operating points are stored, matched and used."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import twinnet
from twinnet.calibrate import Calibration
from twinnet.compare import DISTANCE, EuclideanDistance
from twinnet.data.items import ItemSet
from twinnet.data.sources import Dataset
from twinnet.errors import ConfigError
from twinnet.normalize import REFERENCE_NORMALIZATIONS, ReferenceRatio, ReferenceShift, ReferenceZScore
from twinnet.operating import drift_report, recalibrate
from twinnet.protocols import build_protocol
from twinnet.protocols.signature import signature_scores


class Identity(nn.Module):
    output_dim = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def model() -> twinnet.TwinNetwork:
    return twinnet.TwinNetwork(Identity(), EuclideanDistance()).eval()


def square_writer() -> ItemSet:
    """One writer: four genuine signatures on the corners of a unit square, one forgery 2 above its
    centre. Whichever 3 corners are the references, the left-out corner is 1, 1 and √2 from them, and
    the forgery √4.5 from each: the figures below hold for any choice of references."""
    points = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0.5, 0.5, 2]]
    genuine = np.array([True, True, True, True, False])
    return ItemSet(torch.tensor(points, dtype=torch.float32), np.r_[0, 0, 0, 0, 1], ["w0", "w0_forg"],
                   names=[f"w0/{i}.png" for i in range(5)],
                   attributes={"writer": np.zeros(5, int), "genuine": genuine})  # fmt: skip


def test_reference_normalisation_by_hand():
    # references on an L (3 corners): leave-one-out mean distances: the corner 1, each end (1 + √2)/2
    r2 = math.sqrt(2)
    d = (1 - r2) / 2  # the ends' similarity minus the corner's
    mu = -(2 + r2) / 3
    sigma = r2 * abs(d) / 3  # population std of (−1, −(1+√2)/2, −(1+√2)/2)
    values, genuine, owner = signature_scores(model(), square_writer(), references=3, aggregate="mean",
                                              normalization=ReferenceZScore())  # fmt: skip
    forgery, corner = values[~genuine][0], values[genuine][0]
    assert corner == pytest.approx(0.0, abs=1e-6)  # its mean similarity −(2+√2)/3 is exactly μ
    assert forgery == pytest.approx((-math.sqrt(4.5) - mu) / sigma, rel=1e-5)
    shift, g, _ = signature_scores(model(), square_writer(), references=3, aggregate="mean",
                                   normalization=ReferenceShift())  # fmt: skip
    assert shift[g][0] == pytest.approx(0.0, abs=1e-6) and shift[~g][0] == pytest.approx(-math.sqrt(4.5) - mu)
    ratio, g, _ = signature_scores(model(), square_writer(), references=3, aggregate="mean",
                                   normalization=ReferenceRatio())  # fmt: skip
    assert ratio[g][0] == pytest.approx(-1.0) and ratio[~g][0] == pytest.approx(-math.sqrt(4.5) / -mu)
    # min (nearest reference): every reference's nearest other is 1 away, so μ = −1
    nearest, g, _ = signature_scores(model(), square_writer(), references=3, aggregate="min",
                                     normalization=ReferenceShift())  # fmt: skip
    assert nearest[g][0] == pytest.approx(0.0, abs=1e-6) and nearest[~g][0] == pytest.approx(1 - math.sqrt(4.5))
    # the normalised values are similarities: the genuine one is above the forgery
    assert corner > forgery and owner.tolist() == [0, 0]


def test_statistics_need_enough_references():
    with pytest.raises(ValueError, match="at least 3 references"):
        ReferenceZScore().statistics(np.zeros((2, 2)), "min")
    with pytest.raises(ConfigError, match="needs at least 3 references"):
        build_protocol("signature", {"references": 2, "normalization": "zscore"})
    assert REFERENCE_NORMALIZATIONS.names() == ["ratio", "shift", "zscore"]


def writers(seed: int = 0, n: int = 8, real: int = 10, fakes: int = 8) -> ItemSet:
    """Writers whose genuine signatures spread very differently (a per-writer scale), so one raw
    threshold cannot fit them all, and forgeries a little further out than each writer's spread."""
    r = np.random.default_rng(seed)
    writer = np.repeat(np.arange(n), real + fakes)
    genuine = np.tile(np.r_[np.ones(real, bool), np.zeros(fakes, bool)], n)
    spread = np.geomspace(0.05, 2.0, n)[writer]
    centre = r.normal(size=(n, 3))[writer] * 30
    points = centre + spread[:, None] * np.where(genuine[:, None], 1.0, 2.5) * r.normal(size=(len(writer), 3))
    names = [f"/s/{w:03d}{'' if g else '_forg'}/{i:03d}.png" for i, (w, g) in enumerate(zip(writer, genuine))]
    return ItemSet(torch.tensor(points, dtype=torch.float32), 2 * writer + ~genuine,
                   [f"w{i // 2}{'_forg' if i % 2 else ''}" for i in range(2 * n)], names=names,
                   attributes={"writer": writer, "genuine": genuine})  # fmt: skip


def test_a_normalised_point_is_stored_matched_and_decides_on_its_scale():
    m = model()
    m.calibration = Calibration(DISTANCE)
    data = Dataset(writers())
    params = {"references": 4, "normalization": "zscore"}
    point = recalibrate(m, data, "signature", "eer", "zscore", params, make_default=True)
    assert point.scale == "writer-zscore" and point.provenance.settings["normalization"] == "zscore"
    assert point.interval == "bootstrap-identity"
    raw = recalibrate(m, data, "signature", "eer", "raw", {"references": 4, "normalization": "none"})
    assert raw.scale == "native" and "normalization" not in raw.provenance.settings
    # normalised scores are similarities: the threshold is not on the distance scale
    assert m.calibration.orientation_of("zscore").kind == "score"
    assert m.calibration.orientation_of("raw").kind == "distance"
    # evaluate without naming a normalisation: as the stored (default) point was fitted
    auto = build_protocol("signature", {"references": 4}).evaluate(m, data).metrics
    assert auto["normalization"] == "zscore" and auto["threshold"] == point.threshold
    assert auto["threshold_source"] == "operating point zscore" and auto["interval"] == "bootstrap-identity"
    plain = build_protocol("signature", {"references": 4, "normalization": "none"}).evaluate(m, data).metrics
    assert plain["threshold"] == raw.threshold and plain["scale"] == "native"
    # per-writer spreads: the normalised pooled EER is far below the raw one
    assert auto["eer"] < plain["eer"] - 0.05
    # the drift check measures each point on its own scale only
    report = drift_report(m, data, "signature", params)
    checks = {c.name: c for c in report.checks}
    assert report.interval == "bootstrap-identity"
    assert checks["zscore"].drifted is False and checks["raw"].drifted is None
    assert "normalization" in checks["raw"].message


def test_writer_normalisation_from_the_cli(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from tests.test_operating_points import TINY
    from twinnet.cli import app

    rng = np.random.default_rng(0)
    for w in range(6):  # per writer a pattern; genuine ones near it, forgeries further off
        base = rng.integers(0, 256, (8, 8))
        for folder, n, noise in ((f"{w:03d}", 6, 10), (f"{w:03d}_forg", 4, 60)):
            (tmp_path / "sigs" / folder).mkdir(parents=True)
            for i in range(n):
                img = np.clip(base + rng.normal(0, noise, (8, 8)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(tmp_path / "sigs" / folder / f"{i}.png")
    (tmp_path / "tiny.yaml").write_text(TINY)
    runner = CliRunner()

    def run(*args: object) -> dict:
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    assert runner.invoke(app, ["init", "-c", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "m")]).exit_code == 0
    data = ["--data", tmp_path / "sigs", "--format", "offline_signatures", "--protocol", "signature",
            "--references", "3"]  # fmt: skip
    p = run("calibrate", tmp_path / "m", *data, "--normalization", "zscore", "--name", "writers", "--json")
    assert p["scale"] == "writer-zscore" and p["interval"] == "bootstrap-identity"
    assert p["provenance"]["settings"]["normalization"] == "zscore"
    evaluated = run("evaluate", tmp_path / "m", *data, "--json")  # as the stored point was fitted
    assert evaluated["normalization"] == "zscore" and evaluated["threshold"] == pytest.approx(p["threshold"])
    raw = run("evaluate", tmp_path / "m", *data, "--normalization", "none", "--json")
    assert raw["scale"] == "native" and raw["threshold"] is None  # no raw point for these settings
    bad = runner.invoke(app, ["evaluate", str(tmp_path / "m"), *map(str, data), "--normalization", "nope"])
    assert bad.exit_code == 2 and "normalization" in bad.output
