"""The service with an audio model: uploads to /verify, /embed, /enroll and /identify, the
duration limit checked from the header before decoding, bad audio as 400."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile")
from fastapi.testclient import TestClient  # noqa: E402

import twinnet  # noqa: E402
import twinnet.serve  # noqa: E402
from twinnet.gallery import Gallery  # noqa: E402
from twinnet.serve import ServiceSettings, create_app  # noqa: E402

KEY = "k" * 24
H = {"X-API-Key": KEY}


def clip(seed: int, seconds: float = 1.0, rate: int = 16000, fmt: str = "FLAC") -> bytes:
    buf = io.BytesIO()
    wave = np.random.default_rng(seed).normal(0, 0.1, int(rate * seconds)).astype(np.float32)
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    config = {"input": {"kind": "audio", "max_seconds": 2.0},
              "encoder": {"name": "xvector", "params": {"channels": 16, "embedding_dim": 8, "n_mels": 24}},
              "comparator": {"name": "cosine"}, "normalize": True}  # fmt: skip
    path: Path = tmp_path_factory.mktemp("audio") / "model"
    twinnet.save(twinnet.build_model(twinnet.ModelConfig.model_validate(config)), path)
    model = twinnet.load(path)
    gallery = Gallery.create(path.parent / "gallery", model)
    with TestClient(create_app(model, gallery, ServiceSettings(api_keys=[KEY]))) as c:
        yield c, model
    gallery.close()


def test_verify_embed_enroll_identify_with_uploads(client) -> None:
    c, model = client
    r = c.post("/verify", files={"a": ("a.flac", clip(1)), "b": ("b.wav", clip(1, fmt="WAV"))}, headers=H)
    assert r.status_code == 200, r.text
    assert r.json()["score"] == pytest.approx(1.0, abs=1e-4)
    # two lengths and two sample rates in one request: each embedded as it is (padding is trimmed as silence)
    r = c.post("/embed", files=[("inputs", clip(2, 0.6)), ("inputs", clip(3, 1.5, rate=8000))], headers=H)
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["embeddings"], np.float32)
    wave = twinnet.data.audio.decode_audio(clip(2, 0.6))
    expected = twinnet.embed(model, [wave]).numpy()[0]
    assert got.shape == (2, 8) and float(got[0] @ expected) > 0.98
    r = c.post("/enroll", data={"identity": "alice"}, files=[("inputs", clip(4)), ("inputs", clip(5))], headers=H)
    assert r.status_code == 200 and r.json()["templates_added"] == 2, r.text
    r = c.post("/identify", files={"inputs": clip(4)}, headers=H)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["matches"][0]["identity"] == "alice"


def test_duration_limit_before_decoding_and_bad_audio(client, monkeypatch: pytest.MonkeyPatch) -> None:
    c, _ = client
    decoded: list[str] = []
    real = twinnet.serve.decode_audio_bytes
    monkeypatch.setattr(twinnet.serve, "decode_audio_bytes", lambda d, n, s: decoded.append(n) or real(d, n, s))
    r = c.post("/verify", files={"a": clip(1), "b": clip(2, seconds=3.0)}, headers=H)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
    assert "3.0 s of audio" in r.json()["error"]["message"] and decoded == []  # nothing was decoded
    r = c.post("/verify", files={"a": clip(1), "b": b"not audio at all"}, headers=H)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_audio", r.text
    silent = io.BytesIO()
    sf.write(silent, np.zeros(8000, np.float32), 16000, format="WAV")
    r = c.post("/embed", files={"inputs": silent.getvalue()}, headers=H)
    assert r.status_code == 400 and "silent" in r.json()["error"]["message"], r.text


def test_mean_template_through_the_service_and_a_folder_of_recordings_through_the_cli(client, tmp_path) -> None:
    """A voice print from several clips: ``template=mean`` in /enroll, ``--template mean`` with a
    ``--folder`` of speaker sub-folders of recordings (audio files are inputs like images)."""
    from typer.testing import CliRunner

    from twinnet.cli import app

    c, model = client
    r = c.post("/enroll", data={"identity": "carol", "template": "mean"},
               files=[("inputs", clip(6)), ("inputs", clip(7)), ("inputs", clip(8))], headers=H)  # fmt: skip
    assert r.status_code == 200 and r.json() == {"identity": "carol", "templates_added": 1, "identity_templates": 1}
    r = c.post("/enroll", data={"identity": "carol", "template": "median"}, files=[("inputs", clip(6))], headers=H)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_template", r.text
    speakers = tmp_path / "speakers"
    for name, seeds in (("dave", (10, 11, 12)), ("erin", (13, 14))):
        (speakers / name).mkdir(parents=True)
        for s in seeds:
            (speakers / name / f"clip{s}.flac").write_bytes(clip(s))
    model_path = tmp_path / "model"
    twinnet.save(model, model_path)
    runner = CliRunner()
    g = str(tmp_path / "g")
    assert runner.invoke(app, ["gallery", "create", str(model_path), "-g", g]).exit_code == 0
    args = ["gallery", "enroll", str(model_path), "-g", g, "--folder", str(speakers), "--template", "mean", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json_tail(first.stdout) == {"enrolled": {"dave": 1, "erin": 1}, "identities": 2, "templates": 2}
    again = runner.invoke(app, args)  # the same clips: nothing new
    assert again.exit_code == 0 and json_tail(again.stdout)["enrolled"] == {"dave": 0, "erin": 0}
    bad = runner.invoke(app, [*args[:-3], "--template", "median"])
    assert bad.exit_code == 2 and "--template" in bad.output


def json_tail(stdout: str) -> dict:
    """The JSON object a ``--json`` command printed last (progress lines go to standard error)."""
    import json

    return json.loads(stdout[stdout.index("{") :])
