"""The REST service: a thin FastAPI layer over a model and (optionally) a gallery.

- Inputs: images as multipart uploads or base64 in JSON, vectors as JSON lists, texts (text
  models) as JSON strings or UTF-8 uploads; texts over the encoder's ``max_length`` tokens are
  truncated, and texts over ``max_text_chars`` characters are refused with 413.
- Auth: an ``X-API-Key`` header (or ``Authorization: Bearer KEY``), compared in constant time
  with every configured key; without keys the service refuses to start unless told ``no_auth``
  on a loopback address. ``/health`` and the OpenAPI pages need no key.
- Limits: request bodies (default 10 MB) and decoded image size (default 40 megapixels).
- Bad input is a 4xx with ``{"error": {"code", "message"}}``, never a 500.
- Embedding requests that arrive together are run through the model as one batch, on a worker
  thread, so the event loop never blocks on the model.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twinnet.data.images import decode_image, to_float
from twinnet.embedding import embed_batches
from twinnet.errors import ConfigError, NotFoundError, TwinnetError
from twinnet.gallery.gallery import QUERY_SIDE, TEMPLATE_SIDE, Gallery
from twinnet.inference import compare_embeddings, decide, truncation_notes
from twinnet.model import SIDES, AnyTwin, Side

API_KEY_ENV = "TWINNET_API_KEYS"


@dataclass
class ServiceSettings:
    api_keys: list[str] = field(default_factory=list)
    no_auth: bool = False
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    batch_window_ms: float = 2.0
    max_batch: int = 64
    max_top_k: int = 100
    max_inputs: int = 64
    max_text_chars: int = 100_000


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


#: What each kind of user error becomes, most specific first: decided by the exception's type,
#: so rewording a message never changes a status.
ERROR_STATUS: tuple[tuple[type[TwinnetError], int, str], ...] = (
    (NotFoundError, 404, "unknown_identity"),
    (TwinnetError, 400, "bad_input"),
)


def error_status(err: TwinnetError) -> tuple[int, str]:
    """The HTTP status and error code for a user error."""
    for kind, status, code in ERROR_STATUS:
        if isinstance(err, kind):
            return status, code
    return 400, "bad_input"


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, by header or as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(413, "too_large", f"request body over {self.max_bytes} bytes")(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ServiceError(413, "too_large", f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


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

    async def start(self) -> None:
        self.queue = asyncio.Queue()
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
            for side in SIDES:
                group = [p for p in pending if p[1] == side]
                if not group:
                    continue
                try:
                    # one side's inputs are all of one kind: texts, or tensors
                    texts = [t for p in group if isinstance(p[0], list) for t in p[0]]
                    batch = texts if texts else torch.cat([p[0] for p in group if isinstance(p[0], torch.Tensor)])
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


def create_app(model: AnyTwin, gallery: Gallery | None = None, settings: ServiceSettings | None = None) -> Any:
    """The FastAPI application for ``model`` (and ``gallery``, for identify/enroll).

    Inputs ``a`` (queries) and ``b`` (templates, documents) are decoded and embedded by the model's
    own side for each; a half-twin's second encoder embeds what a gallery holds."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.concurrency import run_in_threadpool

    settings = settings or ServiceSettings()
    batcher = MicroBatcher(model, settings.batch_window_ms / 1000.0, settings.max_batch)
    specs = {side: model.input_spec(side) for side in SIDES}  # how each side's inputs are decoded
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_: Any):
        await batcher.start()
        yield
        await batcher.stop()
        if gallery is not None:
            await run_in_threadpool(gallery.flush)

    app = FastAPI(title="twinnet", version=_version(), lifespan=lifespan)
    app.state.batcher = batcher

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

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if settings.no_auth or path in ("/health", "/docs", "/openapi.json", "/redoc"):
            return await call_next(request)
        given = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization", "")
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        ok = False
        for key in settings.api_keys:  # compare with every key, in constant time each
            ok |= secrets.compare_digest(given.encode(), key.encode())
        if not ok:
            return error_response(401, "unauthorized", "missing or wrong API key (X-API-Key header)")
        try:
            return await call_next(request)
        except ServiceError as err:  # raised while streaming the body (size limit)
            return error_response(err.status, err.code, err.message)

    # -- input parsing ------------------------------------------------------------------------------

    def decode_text(value: str, name: str) -> str:
        if len(value) > settings.max_text_chars:
            raise ServiceError(413, "too_large", f"{name}: {len(value)} characters, over the limit of "
                                                 f"{settings.max_text_chars}")  # fmt: skip
        return value

    def decode_bytes(data: bytes, name: str, side: Side) -> torch.Tensor | str:
        s = specs[side]
        if s.kind == "text":  # an uploaded text file
            try:
                return decode_text(data.decode("utf-8"), name)
            except UnicodeDecodeError:
                raise ServiceError(400, "bad_text", f"{name}: not UTF-8 text") from None
        if not data:
            raise ServiceError(400, "empty_input", f"{name}: empty")
        if s.kind == "vector":
            raise ServiceError(400, "bad_input", f"{name}: this model takes vectors (JSON lists), not files")
        try:
            with Image.open(io.BytesIO(data)) as image:
                w, h = image.size
                if w * h > settings.max_pixels:
                    raise ServiceError(
                        413, "too_large", f"{name}: {w}×{h} pixels, over the limit of {settings.max_pixels}"
                    )
                image.load()
                return to_float(decode_image(image, s))
        except ServiceError:
            raise
        except UnidentifiedImageError:
            raise ServiceError(400, "not_an_image", f"{name}: not an image") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise ServiceError(400, "bad_image", f"{name}: unreadable or truncated image ({err})") from None

    def decode_json_value(value: Any, name: str, side: Side) -> torch.Tensor | str:
        s = specs[side]
        if s.kind == "text":
            if not isinstance(value, str):
                raise ServiceError(400, "bad_input", f"{name}: expected a text (a JSON string)")
            return decode_text(value, name)
        if isinstance(value, str):
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ServiceError(400, "bad_base64", f"{name}: not valid base64") from None
            return decode_bytes(raw, name, side)
        if isinstance(value, list) and s.kind == "vector":
            try:
                tensor = torch.tensor(value, dtype=torch.float32)
            except (TypeError, ValueError):
                raise ServiceError(400, "bad_vector", f"{name}: not a list of numbers") from None
            if tuple(tensor.shape) != s.example_shape() or not torch.isfinite(tensor).all():
                raise ServiceError(400, "bad_vector", f"{name}: expected {s.example_shape()[0]} finite numbers")
            return tensor
        raise ServiceError(400, "bad_input", f"{name}: expected a base64 image string" + (
            " or a list of numbers" if s.kind == "vector" else ""))  # fmt: skip

    async def read_body(request: Request) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
        """(fields, files) from a JSON or multipart body; 415 for anything else."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            raw = await request.body()
            if not raw:
                raise ServiceError(400, "empty_body", "empty request body")
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ServiceError(400, "bad_json", "the body is not valid JSON") from None
            if not isinstance(data, dict):
                raise ServiceError(400, "bad_json", "the JSON body must be an object")
            return data, {}
        if content_type == "multipart/form-data":
            try:
                form = await request.form(max_files=settings.max_inputs, max_fields=32)
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
            return fields, files
        if not content_type:
            raise ServiceError(400, "empty_body", "no body (send multipart/form-data or application/json)")
        raise ServiceError(
            415, "unsupported_media_type", f"{content_type}: send multipart/form-data or application/json"
        )

    async def inputs_named(request: Request, name: str, *, many: bool, side: Side) -> torch.Tensor | list[str]:
        fields, files = await read_body(request)
        return inputs_from(fields, files, name, many=many, side=side)

    def inputs_from(fields: dict[str, Any], files: dict[str, list[bytes]], name: str, *, many: bool,
                    side: Side) -> torch.Tensor | list[str]:  # fmt: skip
        if name in files:
            tensors = [decode_bytes(b, f"{name}[{i}]", side) for i, b in enumerate(files[name])]
        elif name in fields:
            value = fields[name]
            values = value if many and isinstance(value, list) and (not value or not _is_number(value[0])) else [value]
            tensors = [decode_json_value(v, f"{name}[{i}]" if many else name, side) for i, v in enumerate(values)]
        else:
            raise ServiceError(400, "missing_input", f"missing input {name!r}")
        if not tensors:
            raise ServiceError(400, "missing_input", f"{name}: no inputs")
        if len(tensors) > settings.max_inputs:
            raise ServiceError(413, "too_many_inputs", f"{name}: at most {settings.max_inputs} inputs per request")
        if not many and len(tensors) > 1:
            raise ServiceError(400, "bad_input", f"{name}: one input expected")
        if isinstance(tensors[0], str):
            return list(tensors)  # type: ignore[arg-type]
        return torch.stack(tensors)  # type: ignore[arg-type]

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

    def float_param(request: Request, name: str) -> float | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            raise ServiceError(422, "invalid_request", f"{name}: not a number") from None

    # -- endpoints ----------------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, Any]:
        counts = await run_in_threadpool(gallery.count) if gallery is not None else None
        return {"status": "ok", "model": (model.fingerprint or "")[:16], "gallery": counts,
                "batches": batcher.batches, "embedded": batcher.items}  # fmt: skip

    @app.post("/embed")
    async def embed(request: Request) -> dict[str, Any]:
        x = await inputs_named(request, "inputs", many=True, side=QUERY_SIDE)
        vectors = await batcher.embed(x, QUERY_SIDE)
        return {"embeddings": vectors.tolist(), "dim": int(vectors.shape[1])}

    @app.post("/verify")
    async def verify(request: Request) -> dict[str, Any]:
        threshold = float_param(request, "threshold")
        fields, files = await read_body(request)
        a = inputs_from(fields, files, "a", many=False, side="a")
        b = inputs_from(fields, files, "b", many=False, side="b")
        ea, eb = await asyncio.gather(batcher.embed(a, "a"), batcher.embed(b, "b"))

        def decided() -> dict[str, Any]:  # the comparator runs off the event loop, as the encoders do
            value = float(compare_embeddings(model, torch.from_numpy(ea), torch.from_numpy(eb))[0])
            result = decide(model, value, threshold)
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
        threshold = float_param(request, "threshold")
        x = await inputs_named(request, "inputs", many=True, side=QUERY_SIDE)
        vectors = await batcher.embed(x, QUERY_SIDE)
        results = await run_in_threadpool(lambda: g.identify_batch(vectors, k, threshold, precomputed=True))
        return {"results": [r.to_dict() for r in results]}

    @app.post("/enroll")
    async def enroll(request: Request) -> dict[str, Any]:
        g = need_gallery()
        fields, files = await read_body(request)
        identity = fields.get("identity")
        if not isinstance(identity, str) or not identity.strip() or len(identity) > 256:
            raise ServiceError(400, "bad_identity", "identity: a non-empty string of at most 256 characters")
        metadata = fields.get("metadata") or {}
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except json.JSONDecodeError:
                raise ServiceError(400, "bad_metadata", "metadata: not valid JSON") from None
        if not isinstance(metadata, dict):
            raise ServiceError(400, "bad_metadata", "metadata: must be a JSON object")
        replace = str(fields.get("replace", "false")).lower() in ("1", "true", "yes")
        x = inputs_from(fields, files, "inputs", many=True, side=TEMPLATE_SIDE)
        vectors = await batcher.embed(x, TEMPLATE_SIDE)
        added = await run_in_threadpool(
            lambda: g.enroll(identity, vectors, metadata, replace=replace, precomputed=True)
        )
        return {"identity": identity, "templates_added": added, "identity_templates": g.get(identity)["templates"]}

    @app.delete("/identities/{identity}")
    async def remove(identity: str) -> dict[str, Any]:
        g = need_gallery()
        removed = await run_in_threadpool(g.remove, identity)
        return {"identity": identity, "templates_removed": removed}

    @app.get("/identities")
    async def identities(request: Request) -> dict[str, Any]:
        g = need_gallery()
        offset = int_param(request, "offset", 0, 0, 1 << 40)
        limit = int_param(request, "limit", 100, 1, 10_000)
        items = await run_in_threadpool(g.list, offset, limit)
        return {"identities": items, "count": (await run_in_threadpool(g.count))["identities"]}

    return BodyLimit(app, settings.max_body_bytes)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _version() -> str:
    from twinnet import __version__

    return __version__


def serve(model_path: str | Path, gallery_path: str | Path | None, host: str, port: int,
          settings: ServiceSettings) -> None:  # fmt: skip
    """Load the model (and gallery) and run the service with uvicorn until interrupted."""
    import uvicorn

    from twinnet.io import load

    check_auth_settings(settings, host)
    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    model = load(model_path)
    gallery = None
    if gallery_path is not None:
        path = Path(gallery_path)
        gallery = Gallery.open(path, model) if (path / "gallery.json").exists() else Gallery.create(path, model)
    app = create_app(model, gallery, settings)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        if gallery is not None:
            gallery.close()
