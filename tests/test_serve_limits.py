"""The service's limits and error bodies: no request stalls the others, and nothing is a 500.

Through a real uvicorn server in a thread (``test_serve.Server``) and real HTTP clients: the test
client serialises requests, so it could not show one request stalling another.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib
from urllib.parse import quote

import httpx
import pytest
import torch
from PIL import Image
from test_serve import Server, png, save_small_model

import twinnet.serve
from twinnet.gallery import Gallery
from twinnet.io import load
from twinnet.serve import ServiceSettings, create_app

KEY = "s" * 24
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_small_model(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """6000×6000 of one grey: 36 megapixels (under the default 40) in 48 KB, ~0.15 s to decode."""
    buf = io.BytesIO()
    Image.new("L", (6000, 6000), 128).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width × height`` pixels but holds almost none: what a decompression
    bomb's header looks like, made in microseconds."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def served(model_dir, tmp_path):
    """A service with a gallery; ``served(**settings)`` for other settings (default: the defaults)."""
    started = []

    def start(**overrides):
        model = load(model_dir)
        gallery = Gallery.create(tmp_path / f"g{len(started)}", model)
        server = Server(create_app(model, gallery, ServiceSettings(api_keys=[KEY], **overrides)))
        url = server.__enter__()
        started.append((server, gallery))
        return url, gallery

    yield start
    for server, gallery in started:
        server.__exit__(None, None, None)
        gallery.close()


@pytest.fixture
def count_decodes(monkeypatch):
    """How many images the service decoded: the library's decode_image, counted."""
    calls = []
    real = twinnet.serve.decode_image

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(twinnet.serve, "decode_image", counting)
    return calls


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body


# -- 1. no request stalls the others ------------------------------------------------------------------


def test_health_and_a_small_verify_answer_within_100_ms_during_the_worst_allowed_request(served, big_png):
    url, _ = served()  # the default limits: 64 inputs, 40 MP an image, 200 MP a request
    # 5 × 36 MP = 180 MP of the 200 MP a request may have (a sixth would be refused), and 64 inputs in all
    worst = [("inputs", big_png)] * 5 + [("inputs", png(i)) for i in range(64 - 5)]
    done: dict[str, float | int] = {}

    def heavy() -> None:
        t = time.perf_counter()
        with httpx.Client(headers=H, timeout=120) as client:
            done["status"] = client.post(f"{url}/embed", files=worst).status_code
        done["seconds"] = time.perf_counter() - t

    with httpx.Client(headers=H, timeout=10) as probe:
        assert probe.get(f"{url}/health").status_code == 200  # connected and warm before the load
        assert probe.post(f"{url}/verify", files={"a": png(1), "b": png(2)}).status_code == 200
        thread = threading.Thread(target=heavy)
        thread.start()
        time.sleep(0.05)  # the heavy request is in
        latencies: dict[str, list[float]] = {"/health": [], "/verify": []}
        while thread.is_alive():
            for path in latencies:
                t = time.perf_counter()
                if path == "/health":
                    r = probe.get(f"{url}/health")
                else:
                    r = probe.post(f"{url}/verify", files={"a": png(1), "b": png(2)})
                if not thread.is_alive():  # finished after the heavy request: not measured under load
                    break
                assert r.status_code == 200, r.text
                latencies[path].append(time.perf_counter() - t)
            time.sleep(0.01)
        thread.join()
    assert done["status"] == 200 and done["seconds"] > 0.4, done  # the heavy request did decode 180 MP
    assert len(latencies["/health"]) >= 3 and len(latencies["/verify"]) >= 3, latencies
    for path, seen in latencies.items():
        # within 100 ms (idle machine: /health at most ~30 ms, /verify ~45 ms). Other processes on a
        # busy 2-core machine can delay any one answer by a scheduler slice, so the bound is on 9 in 10
        # answers, and no answer may stall: before, the event loop froze for the whole decode (~0.8 s)
        ranked = sorted(seen)
        p90, worst_ms = ranked[int(0.9 * (len(ranked) - 1))], ranked[-1] * 1000
        assert p90 < 0.1, f"{path}: p90 {p90 * 1000:.0f} ms during the heavy request ({done})"
        assert worst_ms < 300, f"{path}: {worst_ms:.0f} ms during the heavy request ({done})"


def test_counts_and_sizes_are_checked_before_any_image_is_decoded(served, big_png, count_decodes):
    url, _ = served(max_inputs=4)
    too_many = {"inputs": [b64(big_png)] * 5}
    t = time.perf_counter()
    r = httpx.post(f"{url}/embed", json=too_many, headers=H, timeout=60)
    assert_error(r, 413, "too_many_inputs")
    assert count_decodes == []
    r = httpx.post(f"{url}/embed", files=[("inputs", big_png)] * 5, headers=H, timeout=60)
    assert_error(r, 413, "too_many_inputs")
    # more parts than a form may have (inputs + 2)
    r = httpx.post(f"{url}/embed", files=[("inputs", big_png)] * 7, headers=H, timeout=60)
    assert_error(r, 413, "too_many_inputs")
    assert count_decodes == [] and time.perf_counter() - t < 2  # refused from the count alone
    r = httpx.post(f"{url}/enroll", data={"identity": "p", "metadata": "x" * 1_100_000}, files={"inputs": png(1)},
                   headers=H)  # fmt: skip
    assert_error(r, 413, "too_large")  # a form field over 1 MB
    # four images each under the 40 MP limit, 144 MP in all: over a request's 100 MP
    url, _ = served(max_inputs=4, max_request_pixels=100_000_000)
    r = httpx.post(f"{url}/embed", files=[("inputs", big_png)] * 4, headers=H, timeout=60)
    assert_error(r, 413, "too_large")
    assert "per request" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/verify", json={"a": b64(big_png), "b": b64(big_png)}, headers=H, timeout=60)
    assert r.status_code == 200  # 72 MP: within the request's budget
    r = httpx.post(f"{url}/enroll", data={"identity": "p"}, files=[("inputs", png(1)), ("inputs", b"junk")], headers=H)
    assert_error(r, 400, "not_an_image")  # the second input is refused before the first is decoded
    assert len(count_decodes) == 2  # only the /verify's two images were decoded


def test_a_decompression_bomb_is_413_not_400(served):
    url, _ = served()
    bomb = png_header_only(30_000, 30_000)  # 900 megapixels declared in 100 bytes: Pillow's own guard refuses it
    with Image.open(io.BytesIO(png_header_only(300, 200))) as check:
        assert check.size == (300, 200)  # the helper makes a header Pillow reads
    for kwargs in (dict(files={"a": bomb, "b": png(1)}), dict(json={"a": b64(bomb), "b": b64(png(1))})):
        assert_error(httpx.post(f"{url}/verify", headers=H, **kwargs), 413, "too_large")
    over = png_header_only(7000, 7000)  # 49 megapixels: under Pillow's guard, over the service's 40
    assert_error(httpx.post(f"{url}/embed", files={"inputs": over}, headers=H), 413, "too_large")


# -- 2. chunked bodies over the limit ------------------------------------------------------------------------


def chunks(data: bytes, size: int = 16 * 1024):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_chunked_uploads_over_the_body_limit_are_413(served):
    url, _ = served(max_body_bytes=100_000)
    body = json.dumps({"a": "A" * 200_000, "b": "B"}).encode()
    r = httpx.post(f"{url}/verify", content=chunks(body), headers={**H, "Content-Type": "application/json"})
    assert "content-length" not in r.request.headers  # sent chunked: the size is seen only as it streams in
    assert_error(r, 413, "too_large")
    boundary = "twinnetboundary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="a"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\0" * 200_000
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**H, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = httpx.post(f"{url}/verify", content=chunks(multipart), headers=headers)
    assert_error(r, 413, "too_large")
    assert "TaskGroup" not in r.text
    # under the limit, the same way of sending works
    small = json.dumps({"a": b64(png(1)), "b": b64(png(2))}).encode()
    r = httpx.post(f"{url}/verify", content=chunks(small, 100), headers={**H, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text


# -- 3, 4. JSON that cannot be parsed, stored or served back -----------------------------------------------------


def test_deeply_nested_json_is_400(served):
    url, _ = served()
    jh = {**H, "Content-Type": "application/json"}
    for depth in (100_000, 2_000):
        r = httpx.post(f"{url}/verify", content=b"[" * depth + b"]" * depth, headers=jh)
        assert_error(r, 400, "bad_json")
        r = httpx.post(f"{url}/enroll", content=b'{"identity": "x", "metadata": ' + b"[" * depth + b"]" * depth
                       + b', "inputs": []}', headers=jh)  # fmt: skip
        assert_error(r, 400, "bad_json")
    nested: dict = {}
    for _ in range(40):  # parses, but over the 32 levels a body may have
        nested = {"n": nested}
    r = httpx.post(f"{url}/enroll", json={"identity": "x", "metadata": nested, "inputs": [b64(png(1))]}, headers=H)
    assert_error(r, 400, "bad_json")
    r = httpx.post(f"{url}/enroll", data={"identity": "x", "metadata": json.dumps(nested)}, files={"inputs": png(1)},
                   headers=H)  # fmt: skip
    assert_error(r, 400, "bad_json")


def test_strings_utf8_cannot_encode_and_non_finite_numbers_are_refused_and_never_stored(served):
    url, gallery = served()
    jh = {**H, "Content-Type": "application/json"}
    image = b64(png(1))

    def body(fields: str) -> str:  # JSON text as a client may write it, escapes and all
        return "{" + fields + ', "inputs": ["' + image + '"]}'

    refused = [
        (body('"identity": "\\ud800"'), "bad_text"),  # a lone surrogate, as JSON writes it
        (body('"identity": "ok", "metadata": {"name": "\\udfff"}'), "bad_text"),
        (body('"identity": "ok", "metadata": {"\\ud83d": 1}'), "bad_text"),  # in a key
        (body('"identity": "ok", "metadata": {"x": NaN}'), "bad_json"),
        (body('"identity": "ok", "metadata": {"x": -Infinity}'), "bad_json"),
        (body('"identity": "ok", "metadata": {"x": 1e999}'), "bad_json"),  # parses as inf
    ]
    for text, code in refused:
        assert_error(httpx.post(f"{url}/enroll", content=text.encode(), headers=jh), 400, code)
    for metadata, code in (('{"name": "\\ud800"}', "bad_text"), ('{"x": NaN}', "bad_json")):  # multipart: the same
        r = httpx.post(f"{url}/enroll", data={"identity": "ok", "metadata": metadata}, files={"inputs": png(1)},
                       headers=H)  # fmt: skip
        assert_error(r, 400, code)
    assert_error(httpx.post(f"{url}/verify", content=b'{"a": "\\ud800", "b": "x"}', headers=jh), 400, "bad_text")
    assert gallery.count()["identities"] == 0
    # a surrogate pair is one valid character, stored and served back
    pair = body('"identity": "ok", "metadata": {"emoji": "\\ud83d\\ude00"}')
    r = httpx.post(f"{url}/enroll", content=pair.encode(), headers=jh)
    assert r.status_code == 200, r.text
    listing = httpx.get(f"{url}/identities", headers=H)
    assert listing.status_code == 200 and listing.json()["identities"][0]["metadata"] == {"emoji": "😀"}


def test_the_listing_serves_what_other_writers_may_have_stored():
    # Python or the CLI can store metadata JSON cannot carry; the listing still answers, and says so
    deep: dict = {}
    for _ in range(2000):
        deep = {"d": deep}
    items = [{"id": "nan", "metadata": {"x": float("nan"), "y": [float("-inf")]}, "templates": 1},
             {"id": "\ud800", "metadata": {"k": "\udfff"}, "templates": 1},
             {"id": "deep", "metadata": deep, "templates": 1}]  # fmt: skip
    body = json.loads(twinnet.serve.StoredDataResponse({"identities": items, "count": 3}).body)
    by_id = {item["id"]: item for item in body["identities"]}
    assert by_id["nan"]["metadata"] == {"x": "NaN", "y": ["-Infinity"]}
    assert by_id["\ud800"]["metadata"] == {"k": "\udfff"}  # escaped, so read back as it was stored
    assert by_id["deep"]["metadata"] is None and by_id["deep"]["metadata_error"]


# -- 5. every identity that can be enrolled can be removed --------------------------------------------------------


@pytest.mark.parametrize("identity", ["a/b", "/leading", "trailing/", "a//b", "100% sure?#x", "ünï cödé", " spaced "])
def test_an_identity_with_any_characters_can_be_enrolled_and_removed(served, identity):
    url, gallery = served()
    r = httpx.post(f"{url}/enroll", data={"identity": identity}, files={"inputs": png(1)}, headers=H)
    assert r.status_code == 200 and r.json()["identity"] == identity, r.text
    gallery.enroll(identity + "/cli", torch.rand(1, 1, 8, 8))  # as `twinnet gallery enroll --id` does
    for name in (identity, identity + "/cli"):
        r = httpx.delete(f"{url}/identities/{quote(name, safe='')}", headers=H)
        assert r.status_code == 200 and r.json() == {"identity": name, "templates_removed": 1}, r.text
    assert gallery.count()["identities"] == 0
    assert_error(httpx.delete(f"{url}/identities/{quote(identity, safe='')}", headers=H), 404, "unknown_identity")


# -- 6. thresholds -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_non_finite_thresholds_are_refused_on_every_endpoint_that_takes_one(served, value):
    url, _ = served()
    r = httpx.post(f"{url}/verify?threshold={value}", files={"a": png(1), "b": png(2)}, headers=H)
    assert_error(r, 422, "invalid_request")
    r = httpx.post(f"{url}/identify?threshold={value}", files={"inputs": png(1)}, headers=H)
    assert_error(r, 422, "invalid_request")
    assert "finite" in r.json()["error"]["message"]


# -- 7. one error body everywhere ------------------------------------------------------------------------------------


def test_unknown_routes_and_wrong_methods_answer_with_the_error_body(served):
    url, _ = served()
    assert_error(httpx.get(f"{url}/nowhere", headers=H), 404, "not_found")
    r = httpx.get(f"{url}/verify", headers=H)
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]
    assert_error(httpx.put(f"{url}/identities", headers=H), 405, "method_not_allowed")
    assert_error(httpx.get(f"{url}/nowhere"), 401, "unauthorized")  # the key is checked first
    assert httpx.get(f"{url}/openapi.json").status_code == 200


# -- 8. start-up messages ---------------------------------------------------------------------------------------------


def test_no_auth_over_configured_keys_warns_and_serving_is_said_after_the_checks(model_dir, monkeypatch, capsys):
    import uvicorn

    from twinnet.data import images

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append(kwargs))
    # serve() sets the process's pixel limits from its settings: put them back afterwards
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    monkeypatch.setattr(images, "MAX_PIXELS", getattr(images, "MAX_PIXELS", None), raising=False)
    with pytest.raises(twinnet.serve.ConfigError, match="no API keys"):
        twinnet.serve.serve(model_dir, None, "127.0.0.1", 8123, ServiceSettings())
    assert "serving" not in capsys.readouterr().err and runs == []  # refused: no claim that it serves
    twinnet.serve.serve(model_dir, None, "127.0.0.1", 8123, ServiceSettings(api_keys=[KEY], no_auth=True))
    err = capsys.readouterr().err
    assert "warning: --no-auth" in err and "1 configured API key" in err and "without a key" in err
    assert err.index("warning") < err.index("serving") and "http://127.0.0.1:8123" in err and len(runs) == 1
    twinnet.serve.serve(model_dir, None, "::1", 8124, ServiceSettings(api_keys=[KEY]))
    err = capsys.readouterr().err
    assert "warning" not in err and "serving" in err and "http://[::1]:8124" in err
