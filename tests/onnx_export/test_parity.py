"""ONNX export and the ONNX Runtime backend: every registered encoder exports (or says why not),
and the exported model embeds and decides as the PyTorch one (fp32: within 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from twinnet.config import ModelConfig
from twinnet.encoders import ENCODERS
from twinnet.io import load
from twinnet.model import build_model
from twinnet.onnx.export import export_onnx
from twinnet.onnx.runtime import OnnxEncoder

TEXTS = ["a man plays a guitar", "the cat sat on the mat today", "hi", "one two three four five six seven",
         "a woman is slicing an onion", "dogs run in the park", "", "the cat sat on a mat"]  # fmt: skip

#: A tiny model of each built-in encoder. Encoders registered later (by other modules) are tried by
#: test_every_registered_encoder_exports_or_says_why with their default parameters.
TINY: dict[str, dict] = {
    "conv4": {"input": {"size": [12, 12]}, "encoder": {"name": "conv4", "params": {"hidden": 8, "blocks": 2}}},
    "koch": {"input": {"size": [105, 105]},
             "encoder": {"name": "koch", "params": {"width": 0.125, "embedding_dim": 16}}},
    "signet": {"input": {"size": [40, 56]}, "encoder": {"name": "signet", "params": {"width": 0.05, "hidden": 16,
                                                                                       "embedding_dim": 8}}},
    "face_resnet": {"input": {"channels": 3, "size": [32, 32]},
                    "encoder": {"name": "face_resnet", "params": {"widths": [4, 8, 8, 8], "embedding_dim": 8}}},
    "mlp": {"input": {"kind": "vector", "features": 10}, "encoder": {"name": "mlp", "params": {"hidden": [16]}}},
    "tdnn": {"input": {"kind": "sequence", "features": 5, "length": 24},
             "encoder": {"name": "tdnn", "params": {"channels": [8, 8], "kernel": 3, "embedding_dim": 8}}},
    "gru": {"input": {"kind": "sequence", "features": 5, "length": 24},
            "encoder": {"name": "gru", "params": {"hidden": 8, "layers": 2, "embedding_dim": 8}}},
    "small_text": {"input": {"kind": "text"}, "encoder": {"name": "small_text", "params": {
        "embedding_dim": 12, "token_dim": 8, "hidden": 8, "layers": 2, "oov_buckets": 16}}},
}  # fmt: skip


def tiny_model(name: str, comparator: str = "euclidean", normalize: bool = False) -> nn.Module:
    if name not in ENCODERS:
        pytest.skip(f"encoder {name} is not registered in this checkout")
    torch.manual_seed(0)
    cfg = ModelConfig.model_validate({**TINY[name], "comparator": {"name": comparator}, "normalize": normalize})
    model = build_model(cfg, texts=TEXTS).eval()
    with torch.no_grad():  # BatchNorm statistics other than the initial 0/1, so they matter
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def inputs_for(model: nn.Module, n: int, seed: int = 1):
    """A batch of ``n`` inputs of another size than the export's example (and for sequences another length)."""
    spec = model.input_spec("a")
    if spec.kind == "text":
        rng = np.random.default_rng(seed)
        return [TEXTS[i] for i in rng.integers(0, len(TEXTS), n)]
    shape = list(spec.example_shape())
    if spec.kind == "sequence":
        shape[-1] += 11
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def embed(model, x):
    with torch.no_grad():
        return model.embed(x if isinstance(x, torch.Tensor) else model.tokenize(x))


@pytest.mark.parametrize("name", sorted(TINY))
def test_encoder_parity_and_decisions(name: str, tmp_path: Path) -> None:
    model = tiny_model(name, normalize=name in ("gru", "small_text"))
    meta = export_onnx(model, tmp_path / "onnx")
    assert meta["quantization"] is None
    assert max(meta["graphs"]["encoder"]["parity_max_abs_error"].values()) < 1e-5
    served = load(tmp_path / "onnx", runtime="onnx")
    assert isinstance(served.encoder_for("a"), OnnxEncoder)
    assert not any(p.device.type == "meta" for p in served.parameters())
    x = inputs_for(model, 7)
    ref, got = embed(model, x), embed(served, x)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-5
    # same decisions on a small verification set: every pair of the batch, thresholded at a value
    # well between two of the torch distances
    a, b = torch.triu_indices(len(ref), len(ref), 1)
    d_ref = model.comparator(ref[a], ref[b])
    d_got = served.comparator(got[a], got[b])
    values = d_ref.sort().values
    gap = int((values[1:] - values[:-1]).argmax())
    threshold = float(values[gap : gap + 2].mean())
    assert torch.equal(d_ref <= threshold, d_got <= threshold)
    assert served.fingerprint == model.fingerprint or served.fingerprint is not None


def test_text_encoder_takes_raw_texts_and_counts_tokens(tmp_path: Path) -> None:
    model = tiny_model("small_text")
    export_onnx(model, tmp_path / "e")
    served = load(tmp_path / "e", runtime="onnx")
    assert served.takes_texts("a")
    enc = served.encoder_for("a")
    assert enc.count_tokens(["a b c"]) == model.encoder_for("a").count_tokens(["a b c"])
    assert enc.max_length == model.encoder_for("a").max_length
    with torch.no_grad():
        assert (enc(["hi there", "x"]) - model.encoder_for("a")(["hi there", "x"])).abs().max() < 1e-5
    with pytest.raises(AttributeError, match="torch encoder"):
        _ = enc.embedding  # the torch module is not held


@pytest.mark.parametrize("comparator", ["mlp", "mahalanobis", "weighted_l1"])
def test_learned_comparator_head(comparator: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    model = tiny_model("mlp", comparator)
    with torch.no_grad():
        for p in model.comparator.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # not the initial values
    meta = export_onnx(model, tmp_path / "e")
    info = meta["graphs"]["comparator"]
    assert info["orientation"] == model.comparator.orientation.to_json()
    session = ort.InferenceSession(str(tmp_path / "e" / info["file"]), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(3)
    za, zb = torch.randn(9, model.embedding_dim, generator=g), torch.randn(9, model.embedding_dim, generator=g)
    with torch.no_grad():
        ref = model.comparator(za, zb).numpy()
    got = session.run(None, {"a": za.numpy(), "b": zb.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-5
    served = load(tmp_path / "e", runtime="onnx")  # the runtime's comparator has the trained parameters
    with torch.no_grad():
        assert torch.allclose(served.comparator(za, zb), model.comparator(za, zb))
    assert not (tmp_path / "e" / "weights.safetensors").exists()


def test_parameterless_comparator_has_no_head(tmp_path: Path) -> None:
    meta = export_onnx(tiny_model("conv4", "cosine"), tmp_path / "e")
    assert set(meta["graphs"]) == {"encoder"}
    assert not (tmp_path / "e" / "comparator.safetensors").exists()


def test_half_twin_exports_both_sides(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.model_validate({
        "input": {"kind": "vector", "features": 6},
        "encoder": {"name": "mlp", "params": {"hidden": [8], "embedding_dim": 8}},
        "input_b": {"kind": "image", "size": [12, 12]},
        "encoder_b": {"name": "conv4", "params": {"hidden": 8, "blocks": 2, "embedding_dim": 8}},
        "comparator": {"name": "cosine"}})  # fmt: skip
    model = build_model(cfg).eval()
    meta = export_onnx(model, tmp_path / "e")
    assert set(meta["graphs"]) == {"encoder", "encoder_b"}
    assert meta["graphs"]["encoder_b"]["side"] == "b"
    served = load(tmp_path / "e", runtime="onnx")
    xa, xb = torch.randn(4, 6), torch.rand(4, 1, 12, 12)
    with torch.no_grad():
        assert (served.embed(xb, "b") - model.embed(xb, "b")).abs().max() < 1e-5
        assert (served(xa, xb) - model(xa, xb)).abs().max() < 1e-5


def test_every_registered_encoder_exports_or_says_why(tmp_path: Path) -> None:
    """Encoders registered beyond the tiny table (new ones) are tried with their defaults."""
    from twinnet.onnx.spec import OnnxExportError

    for name in ENCODERS.names():
        if name in TINY or name == "text":  # text: test_minilm.py (the pretrained weights)
            continue
        candidates = [{"kind": "image", "channels": c, "size": [s, s]} for c in (1, 3) for s in (64, 128)]
        candidates += [{"kind": "vector", "features": 8}, {"kind": "sequence", "features": 9, "length": 32}]
        for spec in candidates:
            try:
                model = build_model(ModelConfig.model_validate({"input": spec, "encoder": {"name": name}})).eval()
            except Exception:
                continue
            try:
                meta = export_onnx(model, tmp_path / name)
            except OnnxExportError as err:
                if "cannot run on an example input" in str(err):
                    continue  # this input does not fit the encoder: try the next
                assert "cannot be exported" in str(err)
            else:
                assert max(meta["graphs"]["encoder"]["parity_max_abs_error"].values()) < 1e-4
            break


def test_export_json_describes_inputs(tmp_path: Path) -> None:
    export_onnx(tiny_model("gru"), tmp_path / "e")
    meta = json.loads((tmp_path / "e" / "onnx.json").read_text())
    graph = meta["graphs"]["encoder"]
    assert graph["inputs"][0]["shape"] == ["batch", 5, "time"]
    assert graph["dynamic_axes"]["input"] == {"0": "batch", "2": "time"}
    assert meta["exporter"].startswith("torch.onnx.export")
    manifest = json.loads((tmp_path / "e" / "twinnet.json").read_text())
    assert manifest["format"] == "twinnet-onnx" and "onnx/encoder.onnx" in manifest["files"]


def test_text_half_twin_with_shared_embeddings(tmp_path: Path) -> None:
    torch.manual_seed(0)
    small = {"name": "small_text", "params": {"embedding_dim": 8, "token_dim": 8, "hidden": 4, "oov_buckets": 8}}
    cfg = ModelConfig.model_validate({"input": {"kind": "text"}, "encoder": small, "encoder_b": small,
                                      "share": ["embedding"], "comparator": {"name": "cosine"}})  # fmt: skip
    model = build_model(cfg, texts=TEXTS).eval()
    meta = export_onnx(model, tmp_path / "e")
    assert set(meta["graphs"]) == {"encoder", "encoder_b"}
    assert (tmp_path / "e" / "assets" / "encoder_b").is_dir()
    served = load(tmp_path / "e", runtime="onnx")
    queries, documents = TEXTS[:3], TEXTS[3:6]
    with torch.no_grad():
        assert (served.embed(documents, "b") - model.embed(documents, "b")).abs().max() < 1e-5
        assert (served(queries, documents) - model(queries, documents)).abs().max() < 1e-5
