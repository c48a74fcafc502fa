"""The ONNX export through the CLI, galleries and the service; int8; refusals and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from typer.testing import CliRunner  # noqa: E402

from twinnet.calibrate import calibrate  # noqa: E402
from twinnet.cli import app  # noqa: E402
from twinnet.config import ModelConfig  # noqa: E402
from twinnet.encoders import register_encoder  # noqa: E402
from twinnet.encoders.registry import ENCODERS  # noqa: E402
from twinnet.errors import ModelFormatError  # noqa: E402
from twinnet.gallery import Gallery  # noqa: E402
from twinnet.io import load, save  # noqa: E402
from twinnet.model import build_model  # noqa: E402
from twinnet.onnx.export import export_onnx  # noqa: E402
from twinnet.onnx.spec import OnnxExportError  # noqa: E402

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A small vector model with an MLP comparator (a learned head) and a calibration."""
    torch.manual_seed(0)
    cfg = ModelConfig.model_validate({"input": {"kind": "vector", "features": 6},
                                      "encoder": {"name": "mlp", "params": {"hidden": [16], "embedding_dim": 8}},
                                      "comparator": {"name": "mlp", "params": {"hidden": 8}}})  # fmt: skip
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    model.calibration = calibrate(rng.random(100), rng.random(100) < 0.5, model.comparator.orientation)
    path = tmp_path_factory.mktemp("m") / "model"
    save(model, path)
    return path


@pytest.fixture(scope="module")
def exported(saved: Path) -> Path:
    out = saved.parent / "exported"
    result = run("export", saved, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def vectors(tmp_path: Path, n: int = 2) -> list[Path]:
    rng = np.random.default_rng(5)
    paths = []
    for i in range(n):
        paths.append(tmp_path / f"v{i}.npy")
        np.save(paths[-1], rng.normal(size=6).astype(np.float32))
    return paths


def test_export_writes_no_encoder_weights_and_copies_the_rest(saved: Path, exported: Path) -> None:
    files = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert "weights.safetensors" not in files
    assert {"config.json", "calibration.json", "onnx.json", "onnx/encoder.onnx", "onnx/comparator.onnx",
            "comparator.safetensors", "twinnet.json"} <= files  # fmt: skip
    assert (exported / "calibration.json").read_text() == (saved / "calibration.json").read_text()
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".exported")]  # no temp dir left


def test_cli_verify_and_embed_with_onnx_runtime(saved: Path, exported: Path, tmp_path: Path) -> None:
    a, b = vectors(tmp_path)
    torch_result = json.loads(run("verify", saved, a, b, "--json").stdout)
    onnx_result = json.loads(run("verify", exported, a, b, "--json", "--runtime", "onnx").stdout)
    assert onnx_result["same"] == torch_result["same"]
    assert onnx_result["score"] == pytest.approx(torch_result["score"], abs=1e-5)
    assert run("embed", saved, a, b, "--out", tmp_path / "t.npy").exit_code == 0
    result = run("embed", exported, a, b, "--out", tmp_path / "o.npy", "--runtime", "onnx")
    assert result.exit_code == 0, result.output
    assert np.abs(np.load(tmp_path / "t.npy") - np.load(tmp_path / "o.npy")).max() < 1e-5


def test_cli_bad_input_is_one_line_and_status_2(saved: Path, exported: Path, tmp_path: Path) -> None:
    a, b = vectors(tmp_path)
    cases = [
        ("export", saved, "--format", "tflite", "--out", tmp_path / "x"),
        ("export", saved, "--quantize", "int4", "--out", tmp_path / "x"),
        ("export", tmp_path / "missing", "--out", tmp_path / "x"),
        ("export", saved, "--out", saved),  # never over the model itself
        ("export", saved, "--out", tmp_path),  # nor over a folder that is not an export (it holds v0.npy)
        ("export", exported, "--out", tmp_path / "y"),  # an export is not a saved torch model
        ("verify", saved, a, b, "--runtime", "onnx"),  # a torch model loaded as ONNX: says to export it
        ("verify", exported, a, b),  # an export loaded with torch
        ("verify", exported, a, b, "--runtime", "tensorrt"),
    ]
    for args in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) <= 3, args
    assert "twinnet export" in run("verify", saved, a, b, "--runtime", "onnx").output


def test_gallery_from_the_float_export_and_refusal_of_int8(saved: Path, exported: Path, tmp_path: Path) -> None:
    model = load(saved)
    served = load(exported, runtime="onnx")
    assert served.fingerprint == model.fingerprint  # the same embeddings: a gallery enrolled with torch opens
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(6, 6)).astype(np.float32))
    with Gallery.create(tmp_path / "g", model) as g:
        g.enroll("alice", x[:3])
        g.enroll("bob", x[3:])
    with Gallery.open(tmp_path / "g", served) as g:
        found = g.identify_batch(x[[0, 4]], 1)
        ref = Gallery.open(tmp_path / "g", model).identify_batch(x[[0, 4]], 1)
        assert [r.to_dict()["matches"][0]["identity"] for r in found] == [
            r.to_dict()["matches"][0]["identity"] for r in ref
        ]
    out = tmp_path / "int8"
    assert run("export", saved, "--out", out, "--quantize", "int8").exit_code == 0
    quantized = load(out, runtime="onnx")
    assert quantized.fingerprint != model.fingerprint
    with pytest.raises(Exception, match="(?i)fingerprint|different model"):
        Gallery.open(tmp_path / "g", quantized)


def test_int8_is_said_everywhere_and_close(saved: Path, tmp_path: Path) -> None:
    meta = export_onnx(load(saved), tmp_path / "q", quantize="int8")
    assert meta["quantization"]["dtype"] == "int8"
    info = meta["graphs"]["encoder"]
    assert info["file"] == "onnx/encoder.int8.onnx" and info["quantization"]["integer_nodes"] > 0
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "q" / info["file"])).metadata_props}
    assert props["twinnet.quantization"] == "int8"
    float_meta = export_onnx(load(saved), tmp_path / "f")
    assert float_meta["quantization"] is None  # never implied
    served, model = load(tmp_path / "q", runtime="onnx"), load(saved)
    # a seeded batch: int8 error on a 6→16→8 MLP depends on the inputs (max |error| 0.08–0.32 over 12
    # seeds), and the unseeded batch this once drew made the test pass or fail by suite order
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z, ref = served.embed(x), model.embed(x)
    assert (z - ref).abs().max() > 0  # quantised, not the float graph
    assert torch.nn.functional.cosine_similarity(z, ref).mean() > 0.9  # still the same embedding, roughly


def test_service_answers_with_the_onnx_runtime(exported: Path) -> None:
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from twinnet.serve import ServiceSettings, create_app

    served = load(exported, runtime="onnx")
    settings = ServiceSettings(api_keys=["k" * 24])
    with TestClient(create_app(served, None, settings)) as client:
        vec = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float32)
        body = {"a": vec[0].tolist(), "b": vec[1].tolist()}
        r = client.post("/verify", json=body, headers={"X-API-Key": "k" * 24})
        assert r.status_code == 200, r.text
        with torch.no_grad():
            expected = float(served(torch.from_numpy(vec[:1]), torch.from_numpy(vec[1:])))
        assert r.json()["score"] == pytest.approx(expected, abs=1e-5)


class _Loops(nn.Module):
    """Traces to a graph fixed to the example's batch size (a Python loop over the rows)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 4)
        self.output_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.linear(x[i]) for i in range(x.shape[0])])


class _Refuses(nn.Module):
    onnx_unsupported = "it calls back into Python for every batch"

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 4)
        self.output_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class _FullyConvolutional(nn.Module):
    """Any image size: declares its dynamic spatial axes for the export."""

    onnx_dynamic_axes: ClassVar[dict[int, str]] = {2: "height", 3: "width"}

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.output_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


@pytest.fixture
def registered():
    names = {"_onnx_loops": _Loops, "_onnx_refuses": _Refuses, "_onnx_fcn": _FullyConvolutional}
    for name, cls in names.items():
        register_encoder(name)(cls)
    yield
    for name in names:
        ENCODERS.unregister(name)


def test_encoders_that_cannot_export_say_why_and_leave_nothing(registered, tmp_path: Path) -> None:
    for name, message in (("_onnx_loops", "differs from PyTorch"), ("_onnx_refuses", "calls back into Python")):
        cfg = ModelConfig.model_validate({"input": {"kind": "vector", "features": 3}, "encoder": {"name": name}})
        with pytest.raises(OnnxExportError, match=message):
            export_onnx(build_model(cfg).eval(), tmp_path / name)
        assert not list(tmp_path.iterdir())  # atomic: neither the target nor a temporary directory


def test_declared_dynamic_axes(registered, tmp_path: Path) -> None:
    cfg = ModelConfig.model_validate({"input": {"size": [16, 16]}, "encoder": {"name": "_onnx_fcn"}})
    model = build_model(cfg).eval()
    meta = export_onnx(model, tmp_path / "e")
    assert meta["graphs"]["encoder"]["inputs"][0]["shape"] == ["batch", 1, "height", "width"]
    served = load(tmp_path / "e", runtime="onnx")
    x = torch.randn(3, 1, 40, 24)  # another size than the export's
    with torch.no_grad():
        assert (served.embed(x) - model.embed(x)).abs().max() < 1e-5


def test_reexport_replaces_and_tampering_is_caught(saved: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    export_onnx(load(saved), out)
    export_onnx(load(saved), out, quantize="int8")  # an earlier export may be replaced
    assert json.loads((out / "onnx.json").read_text())["quantization"]["dtype"] == "int8"
    graph = out / "onnx" / "encoder.int8.onnx"
    graph.write_bytes(graph.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelFormatError, match="SHA-256"):
        load(out, runtime="onnx")


class _FeatureMap(nn.Module):
    """Gives a feature map (a tracking backbone): exported with dynamic image size, undeclared."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3))
        self.output_dim = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_feature_map_encoders_get_dynamic_image_size(tmp_path: Path) -> None:
    register_encoder("_onnx_map")(_FeatureMap)
    try:
        cfg = ModelConfig.model_validate({"input": {"size": [15, 15]}, "encoder": {"name": "_onnx_map"}})
        model = build_model(cfg).eval()
        meta = export_onnx(model, tmp_path / "e")
        served = load(tmp_path / "e", runtime="onnx")
    finally:
        ENCODERS.unregister("_onnx_map")
    graph = meta["graphs"]["encoder"]
    assert graph["inputs"][0]["shape"] == ["batch", 1, "height", "width"]
    assert graph["dynamic_axes"]["embedding"] == {"0": "batch", "2": "map_height", "3": "map_width"}
    x = torch.randn(2, 1, 31, 23)  # a search image larger than the exemplar
    with torch.no_grad():
        ref, got = model.encoder_for("a")(x), served.encoder_for("a")(x)
    assert got.shape == ref.shape == (2, 3, 27, 19)
    assert (got - ref).abs().max() < 1e-5


def test_cli_evaluate_and_gallery_with_onnx_runtime(tmp_path: Path, image_folder_factory) -> None:
    data = image_folder_factory(classes=4, per_class=5, size=12)
    torch.manual_seed(0)
    cfg = ModelConfig.model_validate({"input": {"size": [12, 12]}, "normalize": True,
                                      "encoder": {"name": "conv4", "params": {"hidden": 8, "blocks": 2}}})  # fmt: skip
    save(build_model(cfg).eval(), tmp_path / "model")
    assert run("export", tmp_path / "model", "--out", tmp_path / "onnx").exit_code == 0
    args = ("--data", data, "--protocol", "verification", "--pairs", "60", "--json")
    ref = json.loads(run("evaluate", tmp_path / "model", *args).stdout)
    got = json.loads(run("evaluate", tmp_path / "onnx", *args, "--runtime", "onnx").stdout)
    assert got["roc_auc"] == pytest.approx(ref["roc_auc"], abs=1e-6)
    g = tmp_path / "gallery"
    onnx_args = ("--gallery", g, "--runtime", "onnx")
    assert run("gallery", "create", tmp_path / "onnx", *onnx_args).exit_code == 0
    result = run("gallery", "enroll", tmp_path / "onnx", "--folder", data, *onnx_args)
    assert result.exit_code == 0, result.output
    probe = sorted((data / "class_2").iterdir())[0]
    found = json.loads(run("gallery", "identify", tmp_path / "onnx", probe, *onnx_args, "--json").stdout)
    by_torch = json.loads(run("gallery", "identify", tmp_path / "model", probe, "--gallery", g, "--json").stdout)
    assert found["identity"] == by_torch["identity"] == "class_2"  # its own template is enrolled
    listed = json.loads(run("gallery", "list", tmp_path / "onnx", *onnx_args, "--json").stdout)
    assert listed["counts"]["identities"] == 4
