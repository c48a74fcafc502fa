"""Texts through the CLI, the gallery (enrol documents, identify = search) and the REST service."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from test_serve import Server
from typer.testing import CliRunner

import twinnet
from twinnet.calibrate import calibrate
from twinnet.cli import app
from twinnet.config import ModelConfig
from twinnet.gallery import Gallery
from twinnet.serve import ServiceSettings, create_app

runner = CliRunner()
KEY = "t" * 24
H = {"X-API-Key": KEY}
DOCUMENTS = [
    ("guitar", "A man is playing a guitar on stage."),
    ("market", "Stock markets fell sharply after the announcement."),
    ("cooking", "She is slicing onions in the kitchen."),
    ("football", "The team scored a goal in the final minute."),
]


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory):
    """The packaged MiniLM, untrained by us, with a threshold calibrated on a few labelled pairs."""
    config = ModelConfig.model_validate({"input": {"kind": "text"}, "encoder": {"name": "text"},
                                         "comparator": {"name": "cosine"}})  # fmt: skip
    model = twinnet.build_model(config).eval()
    rng = np.random.default_rng(0)
    model.calibration = calibrate(np.r_[rng.uniform(0.5, 1, 50), rng.uniform(-0.1, 0.5, 50)],
                                  np.r_[np.ones(50, bool), np.zeros(50, bool)], is_distance=False)  # fmt: skip
    path = tmp_path_factory.mktemp("text") / "model"
    twinnet.save(model, path)
    return path


def test_cli_verify_texts(text_model_dir):
    r = runner.invoke(app, ["verify", str(text_model_dir), "A man plays the guitar.", "Someone is playing guitar.",
                            "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["score"] > 0.7 and out["same"] is True and out["rule"] == "same if score >= threshold"
    r = runner.invoke(app, ["verify", str(text_model_dir), "A man plays the guitar.", "Interest rates rose.", "--json"])
    assert json.loads(r.stdout)["same"] is False


def test_cli_embed_text_lines(text_model_dir, tmp_path):
    f = tmp_path / "texts.txt"
    f.write_text("first text\n\nthird text\n", encoding="utf-8")
    r = runner.invoke(app, ["embed", str(text_model_dir), str(f), "--out", str(tmp_path / "e.npy")])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "e.npy").shape == (3, 384)
    assert (tmp_path / "e.txt").read_text(encoding="utf-8").splitlines() == [f"{f}:1", f"{f}:2", f"{f}:3"]


def test_cli_evaluate_text_protocols(text_model_dir, tmp_path):
    f = tmp_path / "pairs.jsonl"
    rows = [{"text_a": q, "text_b": d, "label": 1} for q, d in [
        ("Who is playing the guitar?", DOCUMENTS[0][1]), ("Did the stock market drop?", DOCUMENTS[1][1]),
        ("What is she chopping?", DOCUMENTS[2][1]), ("Who scored the goal?", DOCUMENTS[3][1])]]  # fmt: skip
    rows += [{"text_a": "Who is playing the guitar?", "text_b": DOCUMENTS[1][1], "label": 0},
             {"text_a": "What is she chopping?", "text_b": DOCUMENTS[3][1], "label": 0}]  # fmt: skip
    f.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    r = runner.invoke(app, ["evaluate", str(text_model_dir), "--data", str(f), "--protocol", "retrieval", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_queries"] == 4 and out["n_documents"] == 4 and out["recall@1"] == 1.0 and out["mrr@10"] == 1.0
    r = runner.invoke(app, ["evaluate", str(text_model_dir), "--data", str(f), "--protocol", "pairs", "--json"])
    out = json.loads(r.stdout)
    assert out["roc_auc"] == 1.0 and {"accuracy", "f1", "average_precision", "threshold"} <= set(out)
    r = runner.invoke(app, ["evaluate", str(text_model_dir), "--data", str(f), "--protocol", "sts"])
    assert r.exit_code == 2 and "needs graded pairs" in r.output
    r = runner.invoke(app, ["evaluate", str(text_model_dir), "--data", str(f), "--protocol", "oneshot"])
    assert r.exit_code == 2 and "a text model takes sts, pairs, retrieval" in r.output


def test_gallery_documents_search(text_model_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"id": i, "text": t, "metadata": {"n": n}})
                              for n, (i, t) in enumerate(DOCUMENTS)), encoding="utf-8")  # fmt: skip
    g = str(tmp_path / "g")
    assert runner.invoke(app, ["gallery", "create", str(text_model_dir), "-g", g]).exit_code == 0
    r = runner.invoke(app, ["gallery", "enroll", str(text_model_dir), "-g", g, "--documents", str(docs), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["identities"] == 4
    r = runner.invoke(app, ["gallery", "identify", str(text_model_dir), "-g", g, "Who plays guitar?",
                            "Onions being chopped", "--json", "-k", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["matches"][0]["identity"] for row in rows] == ["guitar", "cooking"]
    r = runner.invoke(app, ["gallery", "verify", str(text_model_dir), "-g", g, "A goal was scored late.", "--id",
                            "football", "--json"])  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["same"] is True
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "ok"}\n{"id": 3, "text": "no"}\n', encoding="utf-8")
    r = runner.invoke(app, ["gallery", "enroll", str(text_model_dir), "-g", g, "--documents", str(bad)])
    assert r.exit_code == 2 and "bad.jsonl:2: expected an object with string fields id and text" in r.output


def test_service_takes_texts(text_model_dir, tmp_path):
    model = twinnet.load(text_model_dir)
    gallery = Gallery.create(tmp_path / "g", model)
    settings = ServiceSettings(api_keys=[KEY], max_text_chars=5000)
    with Server(create_app(model, gallery, settings)) as url:
        r = httpx.post(
            f"{url}/verify", json={"a": "A man plays guitar.", "b": "Someone is playing a guitar."}, headers=H
        )
        assert r.status_code == 200 and r.json()["same"] is True, r.text
        r = httpx.post(f"{url}/embed", json={"inputs": ["one", "two", ""]}, headers=H)
        assert r.status_code == 200 and r.json()["dim"] == 384 and len(r.json()["embeddings"]) == 3
        for identity, text in DOCUMENTS:
            r = httpx.post(f"{url}/enroll", json={"identity": identity, "inputs": [text]}, headers=H)
            assert r.status_code == 200, r.text
        r = httpx.post(f"{url}/identify?top_k=1", json={"inputs": ["markets dropped", "a late goal"]}, headers=H)
        assert [x["matches"][0]["identity"] for x in r.json()["results"]] == ["market", "football"]
        r = httpx.post(f"{url}/verify", json={"a": "x" * 6000, "b": "y"}, headers=H)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = httpx.post(f"{url}/verify", json={"a": 3, "b": "y"}, headers=H)
        assert r.status_code == 400 and "expected a text" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/verify", files={"a": b"\xff\xfe", "b": b"ok"}, headers=H)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_text"
        r = httpx.post(f"{url}/verify", json={"a": "x", "b": "y"})
        assert r.status_code == 401
    gallery.close()
