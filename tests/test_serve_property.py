"""A standing guard for the service's input parsers (JSON bodies, multipart, identities, query
parameters): whatever a client sends, the answer is a value or a 4xx with the JSON error body,
never a 500 and never an exception escaping."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from twinnet.calibrate import calibrate
from twinnet.config import ModelConfig
from twinnet.gallery import Gallery
from twinnet.model import build_model
from twinnet.serve import ServiceSettings, create_app

KEY = "k" * 24
EXAMPLES = int(os.environ.get("TWINNET_PROPERTY_EXAMPLES", "60"))
GUARD = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    torch.manual_seed(0)
    encoder = {"name": "conv4", "params": {"hidden": 8, "blocks": 2, "embedding_dim": 12}}
    model = build_model(ModelConfig.model_validate({"input": {"size": [8, 8]}, "encoder": encoder})).eval()
    rng = np.random.default_rng(0)
    model.calibration = calibrate(rng.random(200), rng.random(200) < 0.5, model.comparator.orientation)
    gallery = Gallery.create(tmp_path_factory.mktemp("g") / "g", model)
    gallery.enroll("known", torch.rand(1, 1, 8, 8))
    app = create_app(model, gallery, ServiceSettings(api_keys=[KEY], max_body_bytes=100_000))
    with TestClient(app, headers={"X-API-Key": KEY}, raise_server_exceptions=False) as c:
        yield c
    gallery.close()


def answered(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@GUARD
@given(body=st.dictionaries(st.sampled_from(["a", "b", "inputs", "identity", "metadata", "replace", "x"]),
                            json_values, max_size=5))  # fmt: skip
def test_any_json_body_is_answered(client, body):
    for path in ("/verify", "/identify", "/enroll", "/embed"):
        answered(client.post(path, json=body))


@GUARD
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_a_json_body_are_answered(client, raw):
    for path in ("/verify", "/enroll"):
        answered(client.post(path, content=raw, headers={"content-type": "application/json"}))


@GUARD
@given(parts=st.lists(st.tuples(st.sampled_from(["a", "b", "inputs"]), st.binary(max_size=200)), max_size=4),
       identity=st.text(max_size=30))  # fmt: skip
def test_any_multipart_upload_is_answered(client, parts, identity):
    files = [(name, ("f.png", data, "image/png")) for name, data in parts]
    answered(client.post("/verify", files=files or None, data={"x": "1"}))
    answered(client.post("/enroll", files=files or None, data={"identity": identity}))


@GUARD
@given(identity=st.text(max_size=40))
def test_any_identity_can_be_asked_for_and_whatever_is_enrolled_is_listed_again(client, identity):
    r = client.post("/enroll", data={"identity": identity}, files=[("inputs", ("f.png", png(2), "image/png"))])
    answered(r)
    listing = client.get("/identities", params={"limit": 10_000})
    answered(listing)
    if r.status_code == 200:
        assert identity in [item["id"] for item in listing.json()["identities"]]
        answered(client.request("DELETE", "/identities/" + _quote(identity)))


@GUARD
@given(threshold=st.text(max_size=12), top_k=st.text(max_size=6))
def test_any_query_parameter_is_answered(client, threshold, top_k):
    files = {"a": ("a.png", png(1), "image/png"), "b": ("b.png", png(2), "image/png")}
    answered(client.post("/verify", params={"threshold": threshold}, files=files))
    r = client.post("/identify", params={"threshold": threshold, "top_k": top_k},
                    files={"inputs": ("a.png", png(1), "image/png")})  # fmt: skip
    answered(r)
    if r.status_code == 200:
        json.dumps(r.json(), allow_nan=False)  # never NaN in an answer


def _quote(identity: str) -> str:
    from urllib.parse import quote

    return quote(identity, safe="")


@GUARD
@given(
    identity=st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12),
    metadata=st.dictionaries(
        st.text(alphabet=st.characters(exclude_categories=()), max_size=6),
        st.text(alphabet=st.characters(exclude_categories=()), max_size=6),
        max_size=2,
    ),
)
def test_json_escapes_of_any_code_point_are_answered_and_never_stored_unservable(client, identity, metadata):
    # json.dumps escapes lone surrogates as \ud800: valid JSON a careless or hostile client can send
    import base64

    body = {"identity": identity, "metadata": metadata, "inputs": [base64.b64encode(png(3)).decode()]}
    answered(client.post("/enroll", content=json.dumps(body), headers={"content-type": "application/json"}))
    answered(client.get("/identities", params={"limit": 10_000}))
