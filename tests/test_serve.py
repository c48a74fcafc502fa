"""The REST service through a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image

from twinnet.calibrate import calibrate
from twinnet.config import ModelConfig
from twinnet.errors import ConfigError, DataError, NotFoundError, TwinnetError
from twinnet.gallery import Gallery
from twinnet.io import load, save
from twinnet.model import build_model
from twinnet.serve import ServiceSettings, check_auth_settings, create_app, error_status

KEY = "k" * 24


def png(seed: int, size=(8, 8)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def save_small_model(path):
    """A small calibrated conv model on 8×8 images, saved at ``path`` (the services under test serve it)."""
    torch.manual_seed(0)
    encoder = {"name": "conv4", "params": {"hidden": 8, "blocks": 2, "embedding_dim": 12}}
    model = build_model(ModelConfig.model_validate({"input": {"size": [8, 8]}, "encoder": encoder})).eval()
    rng = np.random.default_rng(0)
    model.calibration = calibrate(rng.random(200), rng.random(200) < 0.5, model.comparator.orientation)
    save(model, path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_small_model(tmp_path_factory.mktemp("m") / "model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def service(model_dir, tmp_path):
    model = load(model_dir)
    gallery = Gallery.create(tmp_path / "g", model)
    settings = ServiceSettings(api_keys=[KEY], max_body_bytes=200_000, max_pixels=250_000)
    with Server(create_app(model, gallery, settings)) as url:
        yield url, gallery
    gallery.close()


H = {"X-API-Key": KEY}


def test_auth(service):
    url, _ = service
    assert httpx.get(f"{url}/health").status_code == 200  # health needs no key
    files = {"a": png(1), "b": png(2)}
    r = httpx.post(f"{url}/verify", files=files)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert httpx.post(f"{url}/verify", files=files, headers={"X-API-Key": "x" * 24}).status_code == 401
    assert httpx.post(f"{url}/verify", files=files, headers=H).status_code == 200
    assert httpx.post(f"{url}/verify", files=files, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_verify_enroll_identify_remove_round_trip(service):
    url, _ = service
    r = httpx.post(f"{url}/verify", files={"a": png(1), "b": png(1)}, headers=H).json()
    assert r["distance"] == pytest.approx(0.0, abs=1e-4) and r["same"] is True and "threshold" in r
    b64 = {"a": base64.b64encode(png(1)).decode(), "b": base64.b64encode(png(2)).decode()}
    j = httpx.post(f"{url}/verify", json=b64, headers=H).json()
    assert j["distance"] > 0 and isinstance(j["same"], bool)
    for i in range(4):
        r = httpx.post(f"{url}/enroll", data={"identity": f"person{i}", "metadata": '{"team": "a"}'},
                       files=[("inputs", png(10 + i)), ("inputs", png(20 + i))], headers=H)  # fmt: skip
        assert r.status_code == 200 and r.json()["templates_added"] == 2, r.text
    r = httpx.post(f"{url}/enroll", json={"identity": "json-person", "inputs": [base64.b64encode(png(99)).decode()]},
                   headers=H)  # fmt: skip
    assert r.status_code == 200, r.text
    found = httpx.post(f"{url}/identify?top_k=2", files={"inputs": png(12)}, headers=H).json()["results"][0]
    assert found["identity"] == "person2" and len(found["matches"]) == 2
    listing = httpx.get(f"{url}/identities", headers=H).json()
    by_id = {x["id"]: x for x in listing["identities"]}
    assert (
        listing["count"] == 5 and by_id["person0"]["metadata"] == {"team": "a"} and by_id["person0"]["templates"] == 2
    )
    assert httpx.delete(f"{url}/identities/person2", headers=H).json()["templates_removed"] == 2
    after = httpx.post(f"{url}/identify", files={"inputs": png(12)}, headers=H).json()["results"][0]
    assert after["matches"][0]["identity"] != "person2"
    emb = httpx.post(f"{url}/embed", files=[("inputs", png(1)), ("inputs", png(2))], headers=H).json()
    assert emb["dim"] == 12 and len(emb["embeddings"]) == 2


def test_bad_inputs_are_4xx_with_clear_errors(service):
    url, _ = service
    big = png(3, size=(600, 600))  # 360,000 pixels > 250,000
    whole = png(4, size=(64, 64))
    truncated = whole[: len(whole) // 2]  # a valid header, then the data stops
    cases = [
        (dict(files={"a": b"not an image at all", "b": png(1)}), 400, "not_an_image"),
        (dict(files={"a": truncated, "b": png(1)}), 400, "bad_image"),
        (dict(files={"a": big, "b": png(1)}), 413, "too_large"),
        (dict(files={"a": b"x" * 300_000, "b": png(1)}), 413, "too_large"),
        (dict(content=b"", headers={"Content-Type": "application/json"}), 400, "empty_body"),
        (dict(), 400, "empty_body"),
        (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
        (dict(content=b"{not json", headers={"Content-Type": "application/json"}), 400, "bad_json"),
        (dict(json={"a": "%%%", "b": "%%%"}), 400, "bad_base64"),
        (dict(json={"a": base64.b64encode(png(1)).decode()}), 400, "missing_input"),
        (dict(files={"a": b"", "b": png(1)}), 400, "empty_input"),
    ]
    for kwargs, status, code in cases:
        headers = {**H, **kwargs.pop("headers", {})}
        r = httpx.post(f"{url}/verify", headers=headers, **kwargs)
        assert r.status_code == status, (code, r.text)
        assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    r = httpx.delete(f"{url}/identities/nobody", headers=H)
    assert r.status_code == 404 and r.json()["error"] == {"code": "unknown_identity",
                                                          "message": "unknown identity 'nobody'"}  # fmt: skip
    assert httpx.post(f"{url}/identify?top_k=0", files={"inputs": png(1)}, headers=H).status_code == 422
    assert httpx.post(f"{url}/enroll", data={"identity": ""}, files={"inputs": png(1)}, headers=H).status_code == 400


def test_concurrent_enrol_and_identify_lose_nothing(service):
    url, gallery = service

    def work(i):
        with httpx.Client(headers=H, timeout=30) as client:
            r = client.post(f"{url}/enroll", data={"identity": f"c{i}"}, files={"inputs": png(1000 + i)})
            assert r.status_code == 200, r.text
            r = client.post(f"{url}/identify", files={"inputs": png(1000 + i)})
            assert r.status_code == 200, r.text
            return f"c{i}"

    with ThreadPoolExecutor(16) as pool:
        acknowledged = list(pool.map(work, range(48)))
    assert all(identity in gallery for identity in acknowledged)
    assert gallery.count()["identities"] == 48
    health = httpx.get(f"{url}/health").json()
    assert health["batches"] < health["embedded"]  # several requests shared a model batch


def test_no_auth_mode(model_dir, tmp_path):
    model = load(model_dir)
    with Server(create_app(model, None, ServiceSettings(no_auth=True))) as url:
        assert httpx.post(f"{url}/verify", files={"a": png(1), "b": png(2)}).status_code == 200
        r = httpx.post(f"{url}/identify", files={"inputs": png(1)})
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_gallery"


def test_auth_settings_are_checked():
    with pytest.raises(ConfigError, match="no API keys"):
        check_auth_settings(ServiceSettings(), "127.0.0.1")
    with pytest.raises(ConfigError, match="only allowed on a loopback"):
        check_auth_settings(ServiceSettings(no_auth=True), "0.0.0.0")
    with pytest.raises(ConfigError, match="at least 16"):
        check_auth_settings(ServiceSettings(api_keys=["short"]), "127.0.0.1")
    check_auth_settings(ServiceSettings(no_auth=True), "::1")


def test_serve_command_refuses_to_start_without_a_key(model_dir):
    proc = subprocess.run([sys.executable, "-m", "twinnet", "serve", str(model_dir), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})  # fmt: skip
    assert proc.returncode == 2 and "no API keys" in proc.stderr and "Traceback" not in proc.stderr


class RaisingGallery:
    """A gallery whose ``remove`` raises a given error: what the service maps it to is then all
    that a request can show."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def remove(self, identity: str) -> int:
        raise self.error

    def count(self) -> dict[str, int]:
        return {"identities": 0, "templates": 0}

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (NotFoundError("no such person here"), 404, "unknown_identity"),  # a message without "unknown identity"
        (DataError("unknown identity 'x'"), 400, "bad_input"),  # the old message text, but not a NotFoundError
        (TwinnetError("anything"), 400, "bad_input"),
    ],
)
def test_errors_map_to_statuses_by_type_not_by_message(model_dir, error, status, code):
    from fastapi.testclient import TestClient

    assert error_status(error) == (status, code)
    app = create_app(load(model_dir), RaisingGallery(error), ServiceSettings(no_auth=True))
    with TestClient(app) as client:
        r = client.delete("/identities/someone")
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"code": code, "message": str(error)}}


def _batches_for_one_pair(config: dict) -> tuple[int, int]:
    """(model batches, items) the micro-batcher runs for one a input and one b input arriving together."""
    import asyncio

    from twinnet.serve import MicroBatcher

    model = build_model(ModelConfig.model_validate(config)).eval()
    batcher = MicroBatcher(model, window_s=0.05, max_batch=64)

    async def run() -> None:
        await batcher.start()
        x = torch.rand(1, 1, 8, 8)
        ea, eb = await asyncio.gather(batcher.embed(x, "a"), batcher.embed(x, "b"))
        np.testing.assert_allclose(ea, model.embed(x, "a").detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(eb, model.embed(x, "b").detach().numpy(), atol=1e-6)
        await batcher.stop()

    asyncio.run(run())
    return batcher.batches, batcher.items


def test_micro_batcher_runs_one_forward_per_encoder_not_per_side():
    encoder = {"name": "conv4", "params": {"hidden": 8, "blocks": 2, "embedding_dim": 12}}
    twin = {"input": {"size": [8, 8]}, "encoder": encoder}
    assert _batches_for_one_pair(twin) == (1, 2)  # a shared-weight twin: both sides in one batch
    half = {**twin, "encoder_b": encoder}
    assert _batches_for_one_pair(half) == (2, 2)  # a half-twin: each encoder its own batch


def test_small_and_per_image_decoding_answer_the_same(model_dir):
    """A small request is checked and decoded in one job; a big one image by image: same answers."""
    from fastapi.testclient import TestClient

    model = load(model_dir)
    answers, decoded = [], []
    for small in (1_000_000, 0):  # 0: every request takes the per-image path
        app = create_app(model, None, ServiceSettings(no_auth=True, small_request_pixels=small))
        with TestClient(app) as client:
            r = client.post("/verify", files={"a": png(1), "b": png(2)})
            assert r.status_code == 200, r.text
            answers.append(r.json())
            bad = client.post("/verify", files={"a": png(1), "b": b"not an image"})
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "not_an_image"
            decoded.append(client.get("/health").json()["decoded"])
    assert answers[0] == answers[1]
    assert decoded == [2, 2]  # the bad request is refused before any of its images is decoded
