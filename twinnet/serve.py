"""The REST service: a thin FastAPI layer over a model and (optionally) a gallery.

- Inputs: images as multipart uploads or base64 in JSON, vectors as JSON lists, texts (text
  models) as JSON strings or UTF-8 uploads; texts over the encoder's ``max_length`` tokens are
  truncated, and texts over ``max_text_chars`` characters are refused with 413.
- Auth: an ``X-API-Key`` header (or ``Authorization: Bearer KEY``), compared in constant time
  with every configured key; without keys the service refuses to start unless told ``no_auth``
  on a loopback address. ``/health`` and the OpenAPI pages need no key.
- Limits, all checked before any image is decoded: the request body (default 10 MB, also when
  sent chunked), inputs per request (64), pixels per image (40 M, read from the image header)
  and per request (200 M); each is a 413.
- Bad input is a 4xx with ``{"error": {"code", "message"}}``, never a 500; unknown routes and
  methods answer with the same body. JSON must be UTF-8-encodable, finite and at most
  :data:`MAX_JSON_DEPTH` levels deep, so that whatever is stored can be served back.
- Nothing heavy runs on the event loop: JSON is parsed on a thread, images are decoded on a
  small pool (:class:`DecodePool`, one image at a time per request), and embedding requests that
  arrive together run through the model as one batch on a worker thread (:class:`MicroBatcher`).
- Drift without labels (:class:`ScoreLog`): per time window, the distribution of the scores the
  service answered (count, mean, quantiles; normalised scores too for a model with a normaliser)
  and the share each stored operating point would accept, for /verify and /identify's best match;
  ``GET /stats`` (behind the API key) shows the open window and the recent ones, and with
  ``stats_log`` each closed window is appended as one JSON line to that file by a writer thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import json
import math
import os
import queue
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import Headers, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twinnet.calibrate import NATIVE
from twinnet.config import InputSpec
from twinnet.data.images import decode_image, to_float
from twinnet.embedding import embed_batches
from twinnet.errors import ConfigError, DataError, NotFoundError, TwinnetError
from twinnet.gallery.gallery import QUERY_SIDE, TEMPLATE_SIDE, Gallery
from twinnet.inference import Scores, check_operating_point, decide, score, truncation_notes
from twinnet.model import SIDES, AnyTwin, Side
from twinnet.normalize import normalizer_of

API_KEY_ENV = "TWINNET_API_KEYS"
#: Paths that need no API key.
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
#: JSON nesting allowed in a body (metadata included): deep enough for any real metadata, and far
#: below the recursion limit, so that what is stored can always be encoded again.
MAX_JSON_DEPTH = 32
#: A body is handed to the app in pieces of this size, yielding to the event loop between them,
#: so that parsing a big multipart body lets other requests run.
BODY_CHUNK = 64 * 1024

T = TypeVar("T")


@dataclass
class ServiceSettings:
    api_keys: list[str] = field(default_factory=list)
    no_auth: bool = False
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    """Pixels per image, read from its header before it is decoded (:func:`serve` sets the
    library's own limit, ``twinnet.data.images.MAX_PIXELS``, to the same)."""
    max_request_pixels: int = 200_000_000
    """Pixels of all the images of one request together: the decoding work one request can queue."""
    batch_window_ms: float = 2.0
    max_batch: int = 64
    max_top_k: int = 100
    max_inputs: int = 64
    max_text_chars: int = 100_000
    operating_point: str | None = None
    """The model's operating point /verify and /identify decide at unless a request names another
    (``?operating_point=``) or gives a ``threshold``; None: the model's default."""
    decode_workers: int = 2
    """Threads decoding images. One request uses at most one of them at a time, so with two, one
    request with many big images never keeps a small one waiting for a worker."""
    small_request_pixels: int = 1_000_000
    """A request whose images have at most this many pixels in all is checked and decoded in one
    job on a decode worker (a few milliseconds at most); bigger ones decode an image per job, so
    that others get a worker between their images."""
    stats_window_s: float = 60.0
    """The length of a :class:`ScoreLog` window (seconds)."""
    stats_log: str | Path | None = None
    """A file each closed window's score distribution is appended to, one JSON line per window."""


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


#: What each kind of user error becomes, most specific first: decided by the exception's type,
#: so rewording a message never changes a status.
ERROR_STATUS: tuple[tuple[type[TwinnetError], int, str], ...] = (
    (NotFoundError, 404, "unknown_identity"),
    (TwinnetError, 400, "bad_input"),
)

#: Codes for the statuses the framework itself answers with (unknown route, wrong method).
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_status(err: TwinnetError) -> tuple[int, str]:
    """The HTTP status and error code for a user error."""
    for kind, status, code in ERROR_STATUS:
        if isinstance(err, kind):
            return status, code
    return 400, "bad_input"


# -- JSON in and out ----------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ServiceError(400, "bad_json", f"{name} is not a JSON number (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf, which could be stored but not served back
        raise ServiceError(400, "bad_json", f"{text[:40]}: numbers must be finite")
    return value


def check_utf8(value: str, what: str) -> None:
    """400 for a string UTF-8 cannot encode (a lone surrogate, which JSON's ``\\ud800`` escapes can
    make): it could be neither stored nor sent back."""
    if value.isascii():  # O(1) for str: the common case costs nothing
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ServiceError(400, "bad_text", f"{what}: a string that is not valid Unicode (a lone surrogate)") from None


def parse_json(raw: bytes | str, what: str) -> Any:
    """Parse untrusted JSON: 400 (never a 500) for bad syntax or encoding, non-finite numbers,
    nesting over :data:`MAX_JSON_DEPTH` and strings UTF-8 cannot encode."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:  # the C parser gives up after about 1,000 levels
        raise ServiceError(400, "bad_json", f"{what}: nested too deeply") from None
    except ValueError:  # JSONDecodeError, a bad encoding (UnicodeDecodeError), an integer of > 4,300 digits
        raise ServiceError(400, "bad_json", f"{what}: not valid JSON") from None
    check_json_value(data, what)
    return data


def check_json_value(data: Any, what: str) -> None:
    """Walk ``data`` without recursion: depth and the strings (keys included)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            check_utf8(value, what)
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ServiceError(400, "bad_json", f"{what}: nested more than {MAX_JSON_DEPTH} levels deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    check_utf8(key, what)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def _finite_or_named(value: Any) -> Any:
    """``value`` with non-finite floats spelt as strings ("NaN", "Infinity"): JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)
    if isinstance(value, dict):
        return {k: _finite_or_named(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_named(v) for v in value]
    return value


class StoredDataResponse(JSONResponse):
    """JSON for data read back from a gallery, which another writer (the CLI, Python) may have
    filled with what JSON cannot say: lone surrogates are escaped (``ensure_ascii``, losslessly),
    non-finite numbers are spelt as strings, and an item that still cannot be encoded (nested too
    deeply) has its metadata replaced by ``null`` with a ``metadata_error``, instead of a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
        except (ValueError, RecursionError):
            pass
        items = content.get("identities", []) if isinstance(content, dict) else []
        for item in items:
            try:
                item["metadata"] = _finite_or_named(item.get("metadata"))
                json.dumps(item, ensure_ascii=True, allow_nan=False)
            except (ValueError, RecursionError):
                item["metadata"], item["metadata_error"] = None, "the stored metadata cannot be written as JSON"
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


# -- scores answered, per window -------------------------------------------------------------------

#: The quantiles a :class:`ScoreLog` window reports.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Closed windows ``GET /stats`` keeps.
RECENT_WINDOWS = 60


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _distribution(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()),
            "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(v, q)) for q in QUANTILES}}  # fmt: skip


class ScoreLog:
    """The distribution of the scores a service answered, per window of ``window_s`` seconds: so
    that a population drifting away from the calibration shows without labels (the scores move, the
    share accepted at each operating point moves). Per endpoint (``verify``, ``identify``: the best
    match): ``count``, ``native`` (mean and :data:`QUANTILES` of the comparator's values),
    ``normalized`` (the same of cohort-normalised scores, for a model with a normaliser) and
    ``accepted`` (per stored operating point that decides on those scores, the share it accepts).
    Thread-safe; :meth:`record` is called off the event loop. A closed window goes to ``recent`` and,
    with ``path``, to a writer thread that appends it as one JSON line (the event loop never writes)."""

    def __init__(self, model: AnyTwin, window_s: float = 60.0, path: str | Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
            raise ConfigError(f"stats window: must be a positive number of seconds, not {window_s!r}")
        self.model, self.window_s, self.clock = model, float(window_s), clock
        self.path = None if path is None else Path(path)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_WINDOWS)
        self._lock = threading.Lock()
        self._start = self._window_of(clock())
        self._open: dict[str, dict[str, Any]] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8"):  # a path that cannot be written fails at start-up
                pass
            self._writer = threading.Thread(target=self._write, name="twinnet-score-log", daemon=True)
            self._writer.start()

    def _window_of(self, t: float) -> float:
        return math.floor(t / self.window_s) * self.window_s

    def record(self, endpoint: str, scores: Scores) -> None:
        """Count the scores of one answer (its native values, and normalised ones if any)."""
        calibration = getattr(self.model, "calibration", None)
        accepted: dict[str, list[bool]] = {}
        if calibration is not None:
            for name, p in calibration:
                if p.scale == NATIVE or p.scale == scores.scale:  # a writer-normalised point decides no pair
                    accepted[name] = calibration.decide(scores.on(p.scale), name).tolist()
        with self._lock:
            self._roll(self.clock())
            w = self._open.setdefault(endpoint, {"native": [], "normalized": [], "accepted": {}, "decided": {}})
            w["native"] += np.asarray(scores.native, np.float64).tolist()
            if scores.normalized is not None:
                w["normalized"] += np.asarray(scores.normalized, np.float64).tolist()
            for name, decisions in accepted.items():
                w["accepted"][name] = w["accepted"].get(name, 0) + sum(decisions)
                w["decided"][name] = w["decided"].get(name, 0) + len(decisions)

    def _summary(self, start: float, end: float, partial: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"start": _utc(start), "end": _utc(end), "window_s": self.window_s}
        if partial:
            out["partial"] = True
        for endpoint, w in sorted(self._open.items()):
            out[endpoint] = {
                "count": len(w["native"]), "native": _distribution(w["native"]),
                "normalized": _distribution(w["normalized"]),
                "accepted": {n: w["accepted"][n] / w["decided"][n] for n in w["decided"] if w["decided"][n]},
            }  # fmt: skip
        return out

    def _roll(self, now: float) -> None:
        """Close the open window when ``now`` is past it (a window with no answers is not written)."""
        if now < self._start + self.window_s:
            return
        if self._open:
            summary = self._summary(self._start, self._start + self.window_s)
            self.recent.append(summary)
            if self._writer is not None:
                self._queue.put(json.dumps(summary, allow_nan=False))
        self._open = {}
        self._start = self._window_of(now)

    def roll(self, now: float | None = None) -> None:
        with self._lock:
            self._roll(self.clock() if now is None else now)

    def snapshot(self) -> dict[str, Any]:
        """The open window (so far) and the recent closed ones, newest last."""
        with self._lock:
            self._roll(self.clock())
            current = self._summary(self._start, self.clock(), partial=True)
            return {"window_s": self.window_s, "log": None if self.path is None else str(self.path),
                    "current": current, "recent": list(self.recent)}  # fmt: skip

    def close(self) -> None:
        """Write the open window (marked ``partial``) and stop the writer thread."""
        with self._lock:
            if self._open:
                summary = self._summary(self._start, self.clock(), partial=True)
                self.recent.append(summary)
                if self._writer is not None:
                    self._queue.put(json.dumps(summary, allow_nan=False))
                self._open = {}
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)
            self._writer = None

    def _write(self) -> None:
        assert self.path is not None
        while True:
            line = self._queue.get()
            if line is None:
                return
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
                    f.flush()
            except OSError as err:  # the service keeps answering; the window stays in /stats
                print(f"twinnet: cannot write {self.path}: {err}", file=sys.stderr, flush=True)


# -- ASGI middleware --------------------------------------------------------------------------------------


class Gate:
    """ASGI middleware in front of the app: the API key, then the body size, both checked before
    any of the body is parsed. The body is read whole (at most ``max_body_bytes``, declared or sent
    chunked) and handed on in :data:`BODY_CHUNK` pieces, so the app never sees an oversized body.

    Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: an error raised while the body
    streamed through that one left its task group as a 500, or a 400 naming the ``TaskGroup``."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app, self.settings = app, settings

    def authorised(self, scope: Scope) -> bool:
        if self.settings.no_auth or scope["path"] in PUBLIC_PATHS:
            return True
        headers = Headers(scope=scope)
        given = headers.get("x-api-key") or ""
        bearer = headers.get("authorization", "")
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        ok = False
        for key in self.settings.api_keys:  # compare with every key, in constant time each
            ok |= secrets.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8", "replace"))
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.authorised(scope):
            response = error_response(401, "unauthorized", "missing or wrong API key (X-API-Key header)")
            await response(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        too_large = error_response(413, "too_large", f"request body over {limit} bytes")
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the client left: nobody to answer
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` in pieces, then whatever the client sends next (its
    disconnect)."""
    offset, done = 0, False

    async def replayed() -> Message:
        nonlocal offset, done
        if done:
            return await receive()
        if offset:
            await asyncio.sleep(0)  # let other requests run between the pieces of a big body
        chunk = body[offset : offset + BODY_CHUNK]
        offset += len(chunk)
        done = offset >= len(body)
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return replayed


# -- workers ------------------------------------------------------------------------------------------------


class DecodePool:
    """Image decoding on ``workers`` threads, off the event loop.

    Callers decode one image at a time per request (see ``create_app``), and wait their turn for a
    worker in arrival order, so a request with many big images holds one worker while the other
    serves everyone else: with two workers a small request waits for no big image unless two big
    requests are decoding at once, and then for one image at most."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self.executor: ThreadPoolExecutor | None = None
        self.slots = asyncio.Semaphore(self.workers)
        self.decoded = 0

    async def start(self) -> None:
        # made here, so each run of the app has a pool and a semaphore of its own event loop
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="twinnet-decode")
        self.slots = asyncio.Semaphore(self.workers)

    async def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.executor is None:  # used without the app's lifespan (a bare ASGI call)
            await self.start()
        async with self.slots:  # at most `workers` decodes admitted at once, the rest wait here
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


class MicroBatcher:
    """Collects embedding requests for up to ``window`` seconds (or ``max_batch`` inputs) and runs
    them through the model as one batch on a single worker thread."""

    def __init__(self, model: AnyTwin, window_s: float, max_batch: int) -> None:
        self.model, self.window_s, self.max_batch = model, window_s, max_batch
        # replaced in start(), so that each run of the app gets a queue of its own event loop
        self.queue: asyncio.Queue[tuple[torch.Tensor | list[str], Side, asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twinnet-model")
        self.batches = 0
        self.items = 0
        self._task: asyncio.Task | None = None
        # each side → the first side that shares its encoder (the model says which encoder a side uses)
        self._leader: dict[Side, Side] = {}
        for side in SIDES:
            encoder = model.encoder_for(side)
            self._leader[side] = next(s for s in SIDES if model.encoder_for(s) is encoder)
        self._leading_sides = [side for side in SIDES if self._leader[side] == side]

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twinnet-model")
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self.executor.shutdown(wait=False)

    async def embed(self, inputs: torch.Tensor | list[str], side: Side = QUERY_SIDE) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((inputs, side, future))
        return await future

    def _forward(self, batch: torch.Tensor | list[str], side: Side) -> np.ndarray:
        return embed_batches(self.model, batch, side=side, batch_size=max(1, len(batch))).numpy().astype(np.float32)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            pending = [first]
            size = len(first[0])
            deadline = loop.time() + self.window_s
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                pending.append(item)
                size += len(item[0])
            # one forward per encoder, not per side: a shared-weight twin embeds the a and b
            # inputs of every waiting /verify in a single batch (a half-twin still runs two)
            for side in self._leading_sides:
                group = [p for p in pending if self._leader[p[1]] == side]
                if not group:
                    continue
                try:
                    # one side's inputs are all of one kind: texts, or tensors
                    texts = [t for p in group if isinstance(p[0], list) for t in p[0]]
                    batch = texts if texts else _concat([p[0] for p in group if isinstance(p[0], torch.Tensor)])
                    out = await loop.run_in_executor(self.executor, self._forward, batch, side)
                    self.batches += 1
                    self.items += len(out)
                    start = 0
                    for part, _, future in group:
                        if not future.done():
                            future.set_result(out[start : start + len(part)])
                        start += len(part)
                except Exception as err:  # a model failure fails these requests, not the worker
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(err)


def _concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One batch of tensors; recordings of different lengths are zero-padded to the longest (an audio
    model trims the padding as silence). Images and vectors all have the model's one shape."""
    longest = max(t.shape[-1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, longest - t.shape[-1])) for t in tensors])


def decode_audio_bytes(data: bytes, name: str, spec: InputSpec) -> torch.Tensor:
    """Decode one recording (its header already checked) to the model's rate, mono: on a decode worker."""
    from twinnet.data.audio import decode_audio

    try:
        return decode_audio(data, spec.sample_rate, spec.max_seconds, name)
    except DataError as err:
        raise ServiceError(400, "bad_audio", str(err)) from None


def decoder_for(spec: InputSpec) -> Callable[[bytes, str, InputSpec], torch.Tensor]:
    """How an upload's bytes become the model's input: a recording, or an image."""
    return decode_audio_bytes if spec.kind == "audio" else decode_image_bytes


def audio_header(data: bytes, name: str, spec: InputSpec) -> None:
    """The duration from a recording's header, without decoding it: 413 over ``spec.max_seconds``."""
    from twinnet.data.audio import audio_info

    try:
        info = audio_info(data, name)
    except DataError as err:
        raise ServiceError(400, "bad_audio", str(err)) from None
    if info.frames <= 0:
        raise ServiceError(400, "bad_audio", f"{name}: empty recording")
    if info.seconds > spec.max_seconds:
        raise ServiceError(413, "too_large", f"{name}: {info.seconds:.1f} s of audio, over the limit of "
                                             f"{spec.max_seconds:g} s")  # fmt: skip


# -- images ---------------------------------------------------------------------------------------------------


def image_pixels(data: bytes, name: str, max_pixels: int) -> int:
    """The pixel count from an image's header, without decoding it: 413 over ``max_pixels``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            w, h = image.size
    except Exception as err:
        raise _image_error(err, name) from None
    if w * h > max_pixels:
        raise ServiceError(413, "too_large", f"{name}: {w}×{h} pixels, over the limit of {max_pixels}")
    return w * h


def decode_image_bytes(data: bytes, name: str, spec: InputSpec) -> torch.Tensor:
    """Decode one image (its header already checked) to the model's input: runs on a decode worker."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_float(decode_image(image, spec))
    except Exception as err:
        raise _image_error(err, name) from None


def _image_error(err: Exception, name: str) -> ServiceError:
    if isinstance(err, ServiceError):
        return err
    if isinstance(err, UnidentifiedImageError):
        return ServiceError(400, "not_an_image", f"{name}: not an image")
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ServiceError(413, "too_large", f"{name}: too many pixels ({err})")
    # any other failure to read the client's bytes (OSError, SyntaxError, ValueError, and the odd
    # struct.error or EOFError of a format plugin) is a bad image, not a fault of the service
    return ServiceError(400, "bad_image", f"{name}: unreadable or truncated image ({err})")


@dataclass
class Prepared:
    """One input, checked and sized but not yet decoded: an image's bytes, or a ready value."""

    name: str
    value: torch.Tensor | str | None = None
    data: bytes | None = None
    pixels: int = 0


# -- settings and start-up ---------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_api_keys(key_file: str | Path | None = None) -> list[str]:
    """Keys from ``$TWINNET_API_KEYS`` (comma-separated) and/or a file (one per line)."""
    keys = [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise ConfigError(f"API key file not found: {path}")
        keys += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return keys


def check_auth_settings(settings: ServiceSettings, host: str) -> None:
    if settings.no_auth:
        if not _is_loopback(host):
            raise ConfigError(f"--no-auth is only allowed on a loopback address, not {host}")
        return
    if not settings.api_keys:
        raise ConfigError(f"no API keys: set ${API_KEY_ENV} or --api-key-file, or use --no-auth on 127.0.0.1")
    if any(len(k) < 16 for k in settings.api_keys):
        raise ConfigError("API keys must be at least 16 characters")


def auth_warnings(settings: ServiceSettings) -> list[str]:
    """What to tell the operator at start-up about settings that override each other."""
    if settings.no_auth and settings.api_keys:
        n = len(settings.api_keys)
        return [f"warning: --no-auth: the {n} configured API key{'s' * (n != 1)} (${API_KEY_ENV} or --api-key-file) "
                "are ignored and every request is served without a key"]  # fmt: skip
    return []


# -- the app ----------------------------------------------------------------------------------------------------


def create_app(model: AnyTwin, gallery: Gallery | None = None, settings: ServiceSettings | None = None) -> Any:
    """The ASGI application for ``model`` (and ``gallery``, for identify/enroll): FastAPI behind
    :class:`Gate`.

    Inputs ``a`` (queries) and ``b`` (templates, documents) are decoded and embedded by the model's
    own side for each; a half-twin's second encoder embeds what a gallery holds."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    settings = settings or ServiceSettings()
    batcher = MicroBatcher(model, settings.batch_window_ms / 1000.0, settings.max_batch)
    decoder = DecodePool(settings.decode_workers)
    specs = {side: model.input_spec(side) for side in SIDES}  # how each side's inputs are decoded
    score_log = ScoreLog(model, settings.stats_window_s, settings.stats_log)

    async def roll_windows() -> None:  # closes windows when no answer comes to close them
        while True:
            await asyncio.sleep(min(score_log.window_s, 5.0))
            await run_in_threadpool(score_log.roll)

    @asynccontextmanager
    async def lifespan(_: Any):
        await batcher.start()
        await decoder.start()
        roller = asyncio.create_task(roll_windows())
        yield
        roller.cancel()
        await batcher.stop()
        await decoder.stop()
        await run_in_threadpool(score_log.close)
        if gallery is not None:
            await run_in_threadpool(gallery.flush)

    app = FastAPI(title="twinnet", version=_version(), lifespan=lifespan)
    app.state.batcher = batcher
    app.state.decoder = decoder
    app.state.score_log = score_log

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, err: ServiceError) -> JSONResponse:
        return error_response(err.status, err.code, err.message)

    @app.exception_handler(TwinnetError)
    async def _twinnet_error(_: Request, err: TwinnetError) -> JSONResponse:
        status, code = error_status(err)
        return error_response(status, code, str(err))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg')}")

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, err: HTTPException) -> JSONResponse:
        # the framework's own answers (unknown route, wrong method) in the service's error body;
        # a 405 keeps its Allow header
        code = HTTP_ERROR_CODES.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail), dict(err.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        # a bug, not the client's fault: still the one error body, and no internals in it
        # (Starlette logs the traceback after this answer)
        return error_response(500, "internal_error", f"internal error ({type(err).__name__})")

    # -- input parsing ------------------------------------------------------------------------------

    def check_text(value: str, name: str) -> str:
        if len(value) > settings.max_text_chars:
            raise ServiceError(413, "too_large", f"{name}: {len(value)} characters, over the limit of "
                                                 f"{settings.max_text_chars}")  # fmt: skip
        return value

    def prepare_bytes(data: bytes, name: str, side: Side) -> Prepared:
        s = specs[side]
        if s.kind == "text":  # an uploaded text file
            try:
                return Prepared(name, value=check_text(data.decode("utf-8"), name))
            except UnicodeDecodeError:
                raise ServiceError(400, "bad_text", f"{name}: not UTF-8 text") from None
        if not data:
            raise ServiceError(400, "empty_input", f"{name}: empty")
        if s.kind == "vector":
            raise ServiceError(400, "bad_input", f"{name}: this model takes vectors (JSON lists), not files")
        if s.kind == "audio":  # the duration from the header, before decoding (the size: max_body_bytes)
            audio_header(data, name, s)
            return Prepared(name, data=data)
        return Prepared(name, data=data, pixels=image_pixels(data, name, settings.max_pixels))

    def prepare_json_value(value: Any, name: str, side: Side) -> Prepared:
        s = specs[side]
        if s.kind == "text":
            if not isinstance(value, str):
                raise ServiceError(400, "bad_input", f"{name}: expected a text (a JSON string)")
            return Prepared(name, value=check_text(value, name))
        if isinstance(value, str):
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ServiceError(400, "bad_base64", f"{name}: not valid base64") from None
            return prepare_bytes(raw, name, side)
        if isinstance(value, list) and s.kind == "vector":
            shape = s.example_shape()
            if len(value) != shape[0]:  # before converting: a long list costs time, a right one little
                raise ServiceError(400, "bad_vector", f"{name}: expected {shape[0]} finite numbers")
            try:
                tensor = torch.tensor(value, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError):
                raise ServiceError(400, "bad_vector", f"{name}: not a list of numbers") from None
            if tuple(tensor.shape) != shape or not torch.isfinite(tensor).all():
                raise ServiceError(400, "bad_vector", f"{name}: expected {shape[0]} finite numbers")
            return Prepared(name, value=tensor)
        raise ServiceError(400, "bad_input", f"{name}: expected a base64 image string" + (
            " or a list of numbers" if s.kind == "vector" else ""))  # fmt: skip

    def prepare(fields: dict[str, Any], files: dict[str, list[bytes]], name: str, *, many: bool,
                side: Side) -> list[Prepared]:  # fmt: skip
        """Check one named input: how many (before looking at any), then each one's kind and size;
        images are sized from their headers and left for :func:`decode`."""
        if name in files:
            parts = files[name]
            labels = [f"{name}[{i}]" for i in range(len(parts))]
        elif name in fields:
            value = fields[name]
            parts = value if many and isinstance(value, list) and (not value or not _is_number(value[0])) else [value]
            labels = [f"{name}[{i}]" if many else name for i in range(len(parts))]
        else:
            raise ServiceError(400, "missing_input", f"missing input {name!r}")
        if not parts:
            raise ServiceError(400, "missing_input", f"{name}: no inputs")
        if len(parts) > settings.max_inputs:
            raise ServiceError(413, "too_many_inputs", f"{name}: at most {settings.max_inputs} inputs per request")
        if not many and len(parts) > 1:
            raise ServiceError(400, "bad_input", f"{name}: one input expected")
        if name in files:
            return [prepare_bytes(p, label, side) for p, label in zip(parts, labels)]
        return [prepare_json_value(p, label, side) for p, label in zip(parts, labels)]

    def prepare_all(fields: dict[str, Any], files: dict[str, list[bytes]],
                    wanted: tuple[tuple[str, bool, Side], ...]) -> list[list[Prepared]]:  # fmt: skip
        """Every input of a request checked, and their pixels counted together, before any is decoded."""
        groups = [prepare(fields, files, name, many=many, side=side) for name, many, side in wanted]
        pixels = sum(p.pixels for group in groups for p in group)
        if pixels > settings.max_request_pixels:
            raise ServiceError(413, "too_large", f"the request's images have {pixels} pixels in all, over the "
                                                 f"limit of {settings.max_request_pixels} per request")  # fmt: skip
        return groups

    async def decode(group: list[Prepared], side: Side) -> torch.Tensor | list[str]:
        values: list[torch.Tensor | str] = []
        for p in group:  # one at a time: a request holds at most one decode worker (see DecodePool)
            if p.data is not None:
                values.append(await decoder.run(decoder_for(specs[side]), p.data, p.name, specs[side]))
                decoder.decoded += 1
            else:
                assert p.value is not None
                values.append(p.value)
        if isinstance(values[0], str):
            return [v for v in values if isinstance(v, str)]
        return _concat([v[None] for v in values if isinstance(v, torch.Tensor)])

    async def read_body(request: Request) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
        """(fields, files) from a JSON or multipart body; 415 for anything else."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            raw = await request.body()
            if not raw:
                raise ServiceError(400, "empty_body", "empty request body")
            data = await run_in_threadpool(parse_json, raw, "the body")  # up to 10 MB: not on the event loop
            if not isinstance(data, dict):
                raise ServiceError(400, "bad_json", "the JSON body must be an object")
            return data, {}
        if content_type == "multipart/form-data":
            try:
                # room for every named input (a and b of /verify) and a few fields; inputs per
                # name are counted against max_inputs afterwards, by prepare()
                form = await request.form(max_files=settings.max_inputs + 2, max_fields=32)
            except (MultiPartException, HTTPException) as err:
                # Starlette raises its parser's error as an HTTPException(400) inside an app; its
                # limits on parts say "Too many ..." / "... exceeded maximum size": sizes, so 413
                message = str(err.detail if isinstance(err, HTTPException) else err)
                if message.startswith("Too many"):
                    raise ServiceError(413, "too_many_inputs", f"multipart body: {message}") from None
                status, code = (413, "too_large") if "exceeded maximum size" in message else (400, "bad_multipart")
                raise ServiceError(status, code, f"multipart body: {message}") from None
            except ServiceError:
                raise
            except Exception as err:
                raise ServiceError(400, "bad_multipart", f"unreadable multipart body ({err})") from None
            fields: dict[str, Any] = {}
            files: dict[str, list[bytes]] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files.setdefault(key, []).append(await value.read())
                else:
                    fields[key] = value
            await form.close()
            return fields, files
        if not content_type:
            raise ServiceError(400, "empty_body", "no body (send multipart/form-data or application/json)")
        raise ServiceError(
            415, "unsupported_media_type", f"{content_type}: send multipart/form-data or application/json"
        )

    Groups = list[list[Prepared]]

    def prepare_small(fields: dict[str, Any], files: dict[str, list[bytes]],
                      wanted: tuple[tuple[str, bool, Side], ...]) -> tuple[Groups, list[Any] | None]:  # fmt: skip
        """:func:`prepare_all`, and for a small request (images of at most ``small_request_pixels``
        in all) the decoded inputs too, all on one decode worker: one thread hop, not one per image."""
        groups = prepare_all(fields, files, wanted)
        if sum(p.pixels for group in groups for p in group) > settings.small_request_pixels:
            return groups, None
        return groups, [decoded_now(group, side) for group, (_, _, side) in zip(groups, wanted)]

    def decoded_now(group: list[Prepared], side: Side) -> torch.Tensor | list[str]:
        decode_bytes = decoder_for(specs[side])
        values = [decode_bytes(p.data, p.name, specs[side]) if p.data is not None else p.value for p in group]
        if isinstance(values[0], str):
            return [v for v in values if isinstance(v, str)]
        return _concat([v[None] for v in values if isinstance(v, torch.Tensor)])

    async def read_inputs(request: Request, *wanted: tuple[str, bool, Side]) -> tuple[dict[str, Any], list[Any]]:
        """The body's fields, and each wanted input (name, many, side) decoded for its side."""
        fields, files = await read_body(request)
        groups, decoded = await decoder.run(prepare_small, fields, files, wanted)
        if decoded is not None:
            decoder.decoded += sum(p.data is not None for group in groups for p in group)
            return fields, decoded
        return fields, [await decode(group, side) for group, (_, _, side) in zip(groups, wanted)]

    def need_gallery() -> Any:
        if gallery is None:
            raise ServiceError(409, "no_gallery", "this service was started without a gallery (--gallery)")
        return gallery

    def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ServiceError(422, "invalid_request", f"{name}: not an integer") from None
        if not low <= value <= high:
            raise ServiceError(422, "invalid_request", f"{name}: must be between {low} and {high}")
        return value

    def threshold_param(request: Request) -> float | None:
        raw = request.query_params.get("threshold")
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ServiceError(422, "invalid_request", "threshold: not a number") from None
        if not math.isfinite(value):  # inf would call everything "same", nan nothing
            raise ServiceError(422, "invalid_request", "threshold: must be a finite number")
        return value

    def operating_point_param(request: Request, threshold: float | None) -> str | None:
        """The operating point a request decides at (checked before any input is embedded: an
        unknown name is a ConfigError, a 400 naming the known ones)."""
        raw = request.query_params.get("operating_point")
        if raw is not None:
            check_utf8(raw, "operating_point")
        name = raw if raw is not None else settings.operating_point
        if threshold is None and name is not None:
            check_operating_point(model, name)
        return name

    # -- endpoints ----------------------------------------------------------------------------------

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        """The distribution of the scores answered, per window (:class:`ScoreLog`)."""
        return await run_in_threadpool(score_log.snapshot)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        counts = await run_in_threadpool(gallery.count) if gallery is not None else None
        return {"status": "ok", "model": (model.fingerprint or "")[:16], "gallery": counts,
                "batches": batcher.batches, "embedded": batcher.items, "decoded": decoder.decoded}  # fmt: skip

    @app.post("/embed")
    async def embed(request: Request) -> dict[str, Any]:
        _, (x,) = await read_inputs(request, ("inputs", True, QUERY_SIDE))
        vectors = await batcher.embed(x, QUERY_SIDE)
        return {"embeddings": vectors.tolist(), "dim": int(vectors.shape[1])}

    @app.post("/verify")
    async def verify(request: Request) -> dict[str, Any]:
        threshold = threshold_param(request)
        point = operating_point_param(request, threshold)
        _, (a, b) = await read_inputs(request, ("a", False, "a"), ("b", False, "b"))
        ea, eb = await asyncio.gather(batcher.embed(a, "a"), batcher.embed(b, "b"))

        def decided() -> dict[str, Any]:  # the comparator runs off the event loop, as the encoders do
            scores = score(model, ea, eb)
            result = decide(model, scores, threshold, point)
            score_log.record("verify", scores)
            # texts: say which were truncated, as twinnet.verify does
            named: tuple[tuple[str, Side, Any], ...] = (("A", "a", a), ("B", "b", b))
            for name, side, x in named:
                if isinstance(x, list):
                    result.notes += truncation_notes(model, {name: x[0]}, side)
            return result.to_dict()

        return await run_in_threadpool(decided)

    @app.post("/identify")
    async def identify(request: Request) -> dict[str, Any]:
        g = need_gallery()
        k = int_param(request, "top_k", 5, 1, settings.max_top_k)
        threshold = threshold_param(request)
        point = operating_point_param(request, threshold)
        _, (x,) = await read_inputs(request, ("inputs", True, QUERY_SIDE))
        vectors = await batcher.embed(x, QUERY_SIDE)

        def identified() -> list[Any]:
            found = g.identify_batch(vectors, k, threshold, precomputed=True, operating_point=point)
            best = [r.matches[0] for r in found if r.matches]
            if best:  # the normalised scores are there when the operating point decided on them
                normalizer, normalized = normalizer_of(model), [m.normalized for m in best]
                both = normalizer is not None and None not in normalized
                score_log.record("identify", Scores(np.array([m.value for m in best], np.float64),
                                                    np.array(normalized, np.float64) if both else None,
                                                    normalizer.scale if both else None))  # type: ignore[union-attr]  # fmt: skip
            return found

        results = await run_in_threadpool(identified)
        return {"results": [r.to_dict() for r in results]}

    @app.post("/enroll")
    async def enroll(request: Request) -> dict[str, Any]:
        g = need_gallery()
        fields, files = await read_body(request)
        identity = fields.get("identity")
        if not isinstance(identity, str) or not identity.strip() or len(identity) > 256:
            raise ServiceError(400, "bad_identity", "identity: a non-empty string of at most 256 characters")
        metadata = fields.get("metadata") or {}
        if isinstance(metadata, str):  # multipart: a JSON text, held to the same rules as a JSON body
            metadata = await run_in_threadpool(parse_json, metadata, "metadata")
        if not isinstance(metadata, dict):
            raise ServiceError(400, "bad_metadata", "metadata: must be a JSON object")
        replace = str(fields.get("replace", "false")).lower() in ("1", "true", "yes")
        template = fields.get("template", "all")
        if template not in ("all", "mean"):
            raise ServiceError(400, "bad_template", "template: 'all' (one template per input) or 'mean' (one for all)")
        (group,) = await run_in_threadpool(prepare_all, fields, files, (("inputs", True, TEMPLATE_SIDE),))
        x = await decode(group, TEMPLATE_SIDE)
        vectors = await batcher.embed(x, TEMPLATE_SIDE)
        added = await run_in_threadpool(
            lambda: g.enroll(identity, vectors, metadata, replace=replace, precomputed=True, template=template)
        )
        try:
            templates = (await run_in_threadpool(g.get, identity))["templates"]
        except NotFoundError:  # removed by another request since: the enrolment itself did happen
            templates = 0
        return {"identity": identity, "templates_added": added, "identity_templates": templates}

    # `:path`, so that an identity with a "/" in it (any non-blank string can be enrolled, from
    # the CLI as from here) can be removed too: DELETE /identities/a%2Fb removes "a/b"
    @app.delete("/identities/{identity:path}")
    async def remove(identity: str) -> dict[str, Any]:
        g = need_gallery()
        removed = await run_in_threadpool(g.remove, identity)
        return {"identity": identity, "templates_removed": removed}

    @app.get("/identities")
    async def identities(request: Request) -> StoredDataResponse:
        g = need_gallery()
        offset = int_param(request, "offset", 0, 0, 1 << 40)
        limit = int_param(request, "limit", 100, 1, 10_000)
        items = await run_in_threadpool(g.list, offset, limit)
        count = (await run_in_threadpool(g.count))["identities"]
        return StoredDataResponse({"identities": items, "count": count})

    return Gate(app, settings)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _version() -> str:
    from twinnet import __version__

    return __version__


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_options(host: str, port: int) -> dict[str, Any]:
    """How the service runs under uvicorn (bench/serve.py runs its bare ceiling app the same way)."""
    return {"host": host, "port": port, "log_level": "warning", "access_log": False}


def serve(model_path: str | Path, gallery_path: str | Path | None, host: str, port: int,
          settings: ServiceSettings, *, runtime: str = "torch") -> None:  # fmt: skip
    """Load the model (and gallery) and run the service with uvicorn until interrupted.

    Says "serving … on …" on stderr only once the settings are checked and the model and gallery
    are open, so the line never precedes a refusal to start."""
    import uvicorn

    from twinnet.data import images
    from twinnet.io import load

    check_auth_settings(settings, host)
    for warning in auth_warnings(settings):
        print(warning, file=sys.stderr, flush=True)
    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    images.MAX_PIXELS = settings.max_pixels  # the library's own check agrees with the service's
    model = load(model_path, runtime=runtime)
    if settings.operating_point is not None:  # an unknown name fails before the service starts
        check_operating_point(model, settings.operating_point)
    gallery = None
    if gallery_path is not None:
        path = Path(gallery_path)
        gallery = Gallery.open(path, model) if (path / "gallery.json").exists() else Gallery.create(path, model)
    app = create_app(model, gallery, settings)
    print(f"serving {model_path} on {_url(host, port)} (docs at /docs)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, **uvicorn_options(host, port))
    finally:
        if gallery is not None:
            gallery.close()
