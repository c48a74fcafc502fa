"""Texts through the CLI, the gallery (enrol documents, identify = search) and the REST service."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
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
    native = np.r_[rng.uniform(0.5, 1, 50), rng.uniform(-0.1, 0.5, 50)]
    model.calibration = calibrate(native, np.r_[np.ones(50, bool), np.zeros(50, bool)], model.comparator.orientation)
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
    assert r.exit_code == 2 and "the oneshot protocol needs labelled items" in r.output


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


QUERIES = ["Who is playing the guitar?", "Did the stock market drop?", "What is she chopping?", "Who scored?"]


def small_text_half_twin() -> twinnet.HalfTwinNetwork:
    """A query → document half-twin of two small (untrained) GRU text encoders, whose document
    tower is perturbed so that embedding a document with the wrong tower gives other values."""
    torch.manual_seed(0)
    small = {"name": "small_text", "params": {"embedding_dim": 32, "token_dim": 16, "hidden": 16}}
    config = ModelConfig.model_validate({"input": {"kind": "text", "max_length": 12}, "encoder": small,
                                         "encoder_b": small, "comparator": {"name": "cosine"}})  # fmt: skip
    model = twinnet.build_model(config, texts=[t for _, t in DOCUMENTS] + QUERIES).eval()
    with torch.no_grad():
        for p in model.encoder_for("b").parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model


def test_http_verify_of_a_half_twin_equals_twinnet_verify_with_the_document_tower_for_b():
    model = small_text_half_twin()
    a, b = QUERIES[0], DOCUMENTS[0][1]
    z_a = twinnet.embed(model, [a], side="a")
    with torch.no_grad():
        right = float(model.comparator(z_a, twinnet.embed(model, [b], side="b"))[0])
        wrong = float(model.comparator(z_a, twinnet.embed(model, [b], side="a"))[0])
    assert abs(right - wrong) > 1e-2, "the towers must differ for this test to mean anything"
    threshold = (right + wrong) / 2  # the two towers give opposite decisions at it
    model.calibration = calibrate(np.array([right, wrong]), np.array([True, False]), model.comparator.orientation)
    long_a = " ".join(["guitar"] * 30)  # over max_length: both report the truncation
    with TestClient(create_app(model, None, ServiceSettings(no_auth=True))) as client:
        for text_a, t in ((a, None), (a, threshold), (long_a, threshold)):
            r = client.post("/verify" if t is None else f"/verify?threshold={t!r}", json={"a": text_a, "b": b})
            assert r.status_code == 200, r.text
            got, expected = r.json(), twinnet.verify(model, text_a, b, t).to_dict()
            assert got.keys() == expected.keys() and got.pop("score") == pytest.approx(expected.pop("score"), abs=1e-6)
            assert got == expected
    assert twinnet.verify(model, a, b).value == pytest.approx(right, abs=1e-6)
    assert "notes" in expected and expected["notes"][0].startswith("A: 30 tokens")
    decided = twinnet.verify(model, a, b, threshold)
    assert decided.same == bool(model.comparator.matches(right, threshold))
    assert decided.same != bool(model.comparator.matches(wrong, threshold))


def test_half_twin_service_enrols_documents_with_side_b_and_queries_with_side_a(tmp_path):
    model = small_text_half_twin()
    gallery = Gallery.create(tmp_path / "g", model)
    with TestClient(create_app(model, gallery, ServiceSettings(no_auth=True))) as client:
        for identity, text in DOCUMENTS:
            r = client.post("/enroll", json={"identity": identity, "inputs": [text]})
            assert r.status_code == 200, r.text
        r = client.post(f"/identify?top_k={len(DOCUMENTS)}", json={"inputs": QUERIES})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
    docs = twinnet.embed(model, [t for _, t in DOCUMENTS], side="b")
    assert np.allclose(gallery.store.templates_of("market", 32), docs[1:2].numpy(), atol=1e-5)
    with torch.no_grad():
        scores = model.comparator.pairwise(twinnet.embed(model, QUERIES, side="a"), docs).numpy()
    for q, result in enumerate(results):
        order = model.comparator.orientation.rank(scores[q])
        assert [m["identity"] for m in result["matches"]] == [DOCUMENTS[i][0] for i in order]
        assert [m["score"] for m in result["matches"]] == pytest.approx(scores[q, order].tolist(), abs=1e-5)
    gallery.close()
