"""A fingerprint twin end to end on synthetic impressions: preprocessing saved with the model
(save → load → identical scores), local matching, verify from files; the Bozorth3 anchor on real
impressions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import twinnet
from twinnet.config import ModelConfig
from twinnet.data.fingerprints import read_fingerprints
from twinnet.data.images import load_image, to_float
from twinnet.data.sources import Dataset
from twinnet.fingerprints.local import LocalTemplate, local_templates, match_score
from twinnet.fingerprints.synthetic import write_fvc_folder
from twinnet.protocols import build_protocol

#: A tiny fingerprint model (64 px at 200 dpi), shared by the CLI tests.
CONFIG = {
    "input": {"kind": "image", "channels": 1, "size": [64, 64],
              "preprocess": [{"name": "fingerprint", "params": {"dpi": 200, "source_dpi": 500}}]},
    "encoder": {"name": "fingerprint_net", "params": {"widths": [4, 8, 8, 16], "embedding_dim": 16, "local_dim": 8}},
    "comparator": {"name": "cosine"},
    "normalize": True,
}  # fmt: skip


def test_save_load_gives_identical_scores_and_keeps_the_preprocessing(tmp_path):
    root = write_fvc_folder(tmp_path / "DB", fingers=3, impressions=2)
    torch.manual_seed(0)
    model = twinnet.build_model(ModelConfig.model_validate(CONFIG)).eval()
    items = read_fingerprints(root, model.input_spec())
    protocol = build_protocol("fvc", {"impostors": "all"})
    before = protocol.evaluate(model, Dataset(items)).metrics
    twinnet.save(model, tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert "preprocess" in json.dumps(saved)
    loaded = twinnet.load(tmp_path / "model")
    assert loaded.input_spec().preprocess[0].params == {"dpi": 200, "source_dpi": 500}
    after = protocol.evaluate(loaded, Dataset(read_fingerprints(root, loaded.input_spec()))).metrics
    assert json.dumps(before, sort_keys=True) == json.dumps(after, sort_keys=True)
    # a file read as `twinnet verify` reads it goes through the same preprocessing
    a, b = (to_float(load_image(root / name, loaded.input_spec()))[None] for name in ("101_1.tif", "102_1.tif"))
    with torch.no_grad():
        direct = model(a, b).item()
    assert twinnet.verify(loaded, a[0], b[0]).to_dict()["score"] == pytest.approx(direct, abs=1e-6)


def test_local_templates_and_matching(tmp_path):
    root = write_fvc_folder(tmp_path / "DB", fingers=2, impressions=1)
    torch.manual_seed(0)
    model = twinnet.build_model(ModelConfig.model_validate(CONFIG)).eval()
    templates = local_templates(model, read_fingerprints(root, model.input_spec()))
    assert len(templates) == 2 and templates[0].descriptors.shape[1] == 8
    assert 0 < len(templates[0].positions) <= 64  # only cells on the ridge region
    t = templates[0]
    self_score = match_score(t, t, min_similarity=0.0)
    assert self_score == pytest.approx(len(t.descriptors), rel=1e-4)  # every cell matches itself, one motion


def test_geometric_consistency_rejects_scattered_matches():
    rng = np.random.default_rng(0)
    desc = rng.normal(size=(30, 8)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    pos = rng.uniform(0, 20, size=(30, 2)).astype(np.float32)
    a = LocalTemplate(desc, pos)
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = LocalTemplate(desc, (pos @ rot.T + 3).astype(np.float32))  # a rigid motion: all consistent
    scattered = LocalTemplate(desc, rng.permutation(pos).astype(np.float32))  # same parts, wrong places
    assert match_score(a, moved) == pytest.approx(30, rel=1e-4)
    assert match_score(a, scattered) < 10


def test_bozorth3_scores_mated_impressions_higher(shared_data):
    from twinnet.fingerprints.bozorth import Bozorth3

    root = shared_data / "fingerprints" / "fvc2002_db1b"
    nbis = Bozorth3()
    a1, a3 = (nbis.template(root / "fvc2002_db1_101" / f"{i}.png") for i in (1, 3))
    b1 = nbis.template(root / "fvc2002_db1_102" / "1.png")
    assert nbis.minutiae_count(a1) > 10
    assert nbis.compare(a1, a3) > 40 > nbis.compare(a1, b1)
    assert nbis.compare(a1, a3) == nbis.compare(a1, a3)
