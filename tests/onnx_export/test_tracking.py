"""Tracking models through ONNX: the backbone is exported alone (its comparator compares feature maps,
which a traced graph cannot do for any batch), the ONNX runtime tracks as PyTorch does; an error of a
comparator's export names the comparator, not the encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from typer.testing import CliRunner

from tests.tracking.conftest import square_frames, write_otb
from tests.tracking.test_tracker import tiny_model_config
from twinnet.cli import app
from twinnet.compare import COMPARATORS, DISTANCE, Comparator
from twinnet.config import ModelConfig
from twinnet.io import load, save
from twinnet.model import build_model
from twinnet.onnx.export import export_onnx
from twinnet.onnx.runtime import OnnxEncoder
from twinnet.onnx.spec import OnnxExportError
from twinnet.tracking import build_tracker, read_sequence


@pytest.fixture
def square(tmp_path: Path) -> Path:
    """A tiny OTB sequence: a red square moving over a textured background."""
    return write_otb(tmp_path / "square", *square_frames())


def tracking_model(comparator: dict[str, object]) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig.model_validate(tiny_model_config().model_dump(mode="json") | {"comparator": comparator})
    model = build_model(config).eval()
    with torch.no_grad():  # BatchNorm statistics other than the initial 0/1, so they matter
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


HEADS = [
    {"name": "xcorr"},
    {"name": "rpn", "params": {"channels": 8}},
    {"name": "anchor_free", "params": {"channels": 8}},
]


@pytest.mark.parametrize("comparator", HEADS, ids=lambda c: c["name"])
def test_a_tracking_model_exports_its_backbone_and_tracks_the_same(comparator, square: Path, tmp_path: Path) -> None:
    # before: "comparator CrossCorrelation cannot be exported to ONNX: ValueError: xcorr needs (n, C, h, w)
    # … (give the encoder an onnx_export_spec method …)": the comparator was traced on vectors
    root = square
    model = tracking_model(comparator)
    meta = export_onnx(model, tmp_path / "e")
    assert set(meta["graphs"]) == {"encoder"}
    assert meta["graphs"]["encoder"]["dynamic_axes"]["input"] == {"0": "batch", "2": "height", "3": "width"}
    head = meta["comparator"]
    assert head["name"] == comparator["name"] and head["compares"] == "maps" and head["graph"] is None
    assert head["weights"] == "comparator.safetensors" and (tmp_path / "e" / "comparator.safetensors").is_file()
    assert not (tmp_path / "e" / "onnx" / "comparator.onnx").exists()
    served = load(tmp_path / "e", runtime="onnx")
    assert isinstance(served.encoder_for("b"), OnnxEncoder)
    seq = read_sequence(root)
    with torch.no_grad():  # the backbone on a search image (255, not the exemplar's 127 it was traced on)
        x = torch.rand(2, 3, 255, 255)
        assert (served.embed(x, "b") - model.embed(x, "b")).abs().max() < 1e-4
    ours, theirs = build_tracker(model).track(seq), build_tracker(served).track(seq)
    np.testing.assert_allclose(theirs.boxes, ours.boxes, atol=1e-2)
    np.testing.assert_allclose(theirs.scores, ours.scores, atol=1e-4)


def test_cli_export_and_track_with_the_onnx_runtime(square: Path, tmp_path: Path) -> None:
    root = square
    model_dir = save(tracking_model({"name": "rpn", "params": {"channels": 8}}), tmp_path / "model")
    runner = CliRunner()
    exported = runner.invoke(app, ["export", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "e")])
    assert exported.exit_code == 0, exported.output
    assert "encoder: onnx/encoder.onnx" in exported.output
    assert "comparator rpn: compares feature maps, no graph" in exported.output
    runs = {}
    for runtime, path in (("torch", model_dir), ("onnx", tmp_path / "e")):
        result = runner.invoke(app, ["track", str(path), "--sequence", str(root), "--json", "--runtime", runtime])
        assert result.exit_code == 0, result.output
        runs[runtime] = json.loads(result.stdout)
    assert runs["onnx"]["frames"] == runs["torch"]["frames"] == 8
    assert runs["onnx"]["success_auc"] == pytest.approx(runs["torch"]["success_auc"], abs=1e-3)


class _Untraceable(Comparator):
    """A learned vector comparator the tracer cannot follow."""

    orientation: ClassVar = DISTANCE

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise RuntimeError("no tracing here")
        return ((a - b) ** 2).sum(dim=1) * self.weight


class _Refusing(_Untraceable):
    onnx_unsupported = "it looks its values up in a database"


@pytest.mark.parametrize(("cls", "message"), [(_Untraceable, "no tracing here"), (_Refusing, "in a database")])
def test_a_comparator_that_cannot_be_exported_is_named_not_the_encoder(cls, message, tmp_path: Path) -> None:
    COMPARATORS.register("_onnx_comparator")(cls)
    try:
        config = {"input": {"kind": "vector", "features": 6}, "encoder": {"name": "mlp", "params": {"hidden": [8]}},
                  "comparator": {"name": "_onnx_comparator"}}  # fmt: skip
        model = build_model(ModelConfig.model_validate(config)).eval()
        with pytest.raises(OnnxExportError, match=message) as err:
            export_onnx(model, tmp_path / "e")
    finally:
        COMPARATORS.unregister("_onnx_comparator")
    text = str(err.value)
    assert text.startswith("comparator _onnx_comparator") and "encoder" not in text
    assert not (tmp_path / "e").exists()
