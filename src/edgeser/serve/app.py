"""``edgeser serve``: one ASGI application (Starlette on uvicorn) for the page, a file
endpoint, the real-time stream protocol, health and metrics.

Routes: ``POST /v1/predict`` (an audio file in the body or one multipart file part ->
``edgeser predict --json``'s object), ``WS /v1/stream`` (``docs/stream-protocol.md``),
``GET /healthz`` (the process answers), ``GET /readyz`` (the model is loaded and the server
is not draining), ``GET /metrics`` (Prometheus text) and, unless ``page=False``, the
browser page and the model's files exactly as ``edgeser web`` serves them
(:func:`edgeser.web.server.page_route`).

Whatever reaches it may be hostile, so every limit is in :class:`ServeLimits` and the
checks come before any work: the ``Host`` header (:func:`~edgeser.web.server.host_allowed`:
no DNS rebinding), then the ``Origin`` header a browser sends (its own origin, or one of
``allowed_origins``, which also get CORS headers and preflight answers; any other page is
refused, so no web site can use a server on this machine behind its user's back), then the
API key (``Authorization: Bearer KEY``; for the WebSocket also
``?token=KEY``; compared in constant time against every key) for everything but
``/healthz`` and ``/readyz``, then the route's own limits. Model inference runs on worker
threads, never on the event loop; uploads are analysed one at a time on one thread (the
model's VAD keeps state), at most ``max_uploads`` wait, more get 503.

Imports no torch: Starlette, uvicorn, websockets, prometheus-client, python-multipart and
the runtime (numpy, soundfile, soxr, onnxruntime).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeser.core.errors import AudioError, EdgeserError
from edgeser.serve.metrics import CONTENT_TYPE, make_metrics
from edgeser.serve.state import ServeLimits, ServeState
from edgeser.web.server import ISOLATION_HEADERS, SERVE_EXTRA, host_allowed

log = logging.getLogger(__name__)

#: Paths that answer without an API key (probes).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: Media types ``POST /v1/predict`` takes in the body, and the file suffix each is read as.
AUDIO_TYPES = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/ogg": ".ogg",
    "application/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "application/octet-stream": "",
}
MULTIPART = "multipart/form-data"
SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"})


def read_api_keys(path: str | os.PathLike[str]) -> tuple[bytes, ...]:
    """The keys of an ``--api-key-file``: one a line; blank lines and ``#`` comments are
    skipped. A key shorter than 16 characters, or none at all, is an error."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeserError(f"{p}: cannot read the API key file ({e})") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise EdgeserError(f"{p}: no API key in it (one key a line)")
    for n, key in enumerate(keys, 1):
        if len(key) < 16 or any(c.isspace() for c in key):
            raise EdgeserError(
                f"{p}: key {n} is shorter than 16 characters or holds a space "
                "(make one with `python -c 'import secrets; "
                "print(secrets.token_urlsafe())'`)"
            )
    return tuple(k.encode() for k in keys)


def key_matches(supplied: str | None, keys: tuple[bytes, ...]) -> bool:
    """Whether ``supplied`` is one of ``keys``, compared in constant time with every key."""
    if supplied is None:
        return False
    given = supplied.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


def _json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={**ISOLATION_HEADERS, **(headers or {})},
    )


# --------------------------------------------------------------------------- access
class AccessGuard:
    """ASGI middleware: the Host allow-list, then the API key, before any route runs."""

    def __init__(self, app: Any, state: ServeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        st = self.state
        host = headers.get("host", "")
        if not host_allowed(host, st.allowed_hosts):
            st.metrics.rejected.labels("host").inc()
            return await self._deny(scope, receive, send, 400, "bad_host", "unknown Host header")
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, host):
            if not origin_allowed(origin, st.allowed_origins):
                st.metrics.rejected.labels("origin").inc()
                return await self._deny(
                    scope,
                    receive,
                    send,
                    403,
                    "bad_origin",
                    "requests from this page's origin "
                    "are not allowed (edgeser serve --allow-origin)",
                )
            if scope["type"] == "http":
                send = _with_cors(send, origin)
                if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                    return await _preflight(send)
        if st.keys and scope["path"] not in OPEN_PATHS:
            supplied = None
            auth = headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                supplied = auth[7:].strip()
            elif scope["type"] == "websocket":
                from urllib.parse import parse_qs

                qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                supplied = (qs.get("token") or [None])[0]
            if not key_matches(supplied, st.keys):
                st.metrics.rejected.labels("unauthorized").inc()
                return await self._deny(
                    scope,
                    receive,
                    send,
                    401,
                    "unauthorized",
                    "a valid API key is required (Authorization: Bearer KEY)",
                    {"WWW-Authenticate": "Bearer"},
                )
        return await self.app(scope, receive, send)

    @staticmethod
    async def _deny(
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        response = _json_error(status, code, message, headers)
        if scope["type"] == "http":
            return await response(scope, receive, send)
        # A WebSocket handshake is refused with the HTTP response, before the upgrade.
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": response.raw_headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await send({"type": "websocket.close", "code": 1008})


def normal_origin(text: str) -> str:
    """An ``--allow-origin`` value as browsers send it: ``scheme://host[:port]``
    lowercased, or ``*`` (any page); :class:`EdgeserError` for anything else."""
    from urllib.parse import urlsplit

    value = text.strip().rstrip("/").lower()
    if value == "*":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise EdgeserError(
            f"--allow-origin takes an origin such as https://example.org or "
            f"http://127.0.0.1:8080 (scheme, host, port; no path), or '*'; got {text!r}"
        )
    return value


def same_origin(origin: str, host_header: str) -> bool:
    """Whether an ``Origin`` header names the host and port the request was sent to (the
    page was served by this server)."""
    from urllib.parse import urlsplit

    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == host_header.strip().lower()


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or origin.strip().rstrip("/").lower() in allowed


def _with_cors(send: Any, origin: str) -> Any:
    """``send`` that adds ``Access-Control-Allow-Origin: ORIGIN`` to the response."""
    extra = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _preflight(send: Any) -> None:
    """The answer to a CORS preflight from an allowed origin (no API key needed: browsers
    send none with it)."""
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-methods", b"GET, POST"),
                (b"access-control-allow-headers", b"authorization, content-type"),
                (b"access-control-max-age", b"600"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


# --------------------------------------------------------------------------- routes
async def healthz(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"status": "ok"}, headers=ISOLATION_HEADERS)


def _routes(state: ServeState) -> list[Any]:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from edgeser.serve.session import StreamSession

    m = state.metrics

    async def readyz(request: Request) -> Response:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503, headers=ISOLATION_HEADERS)
        return JSONResponse(
            {
                "status": "ready",
                "labels": state.model.labels,
                "model": state.model.path.name,
                "instance": state.instance,
                "open_streams": len(state.sessions),
            },
            headers=ISOLATION_HEADERS,
        )

    async def metrics(request: Request) -> Response:
        return Response(m.text(), media_type=CONTENT_TYPE, headers=ISOLATION_HEADERS)

    async def predict(request: Request) -> Response:
        response = await _predict(request, state)
        m.predictions.labels(str(response.status_code)).inc()
        return response

    async def stream(websocket: WebSocket) -> None:
        refuse = None
        if state.draining:
            refuse = ("shutting_down", "the server is shutting down")
        elif len(state.sessions) >= state.limits.max_streams:
            refuse = (
                "too_many_streams",
                f"{state.limits.max_streams} streams are open; try again later",
            )
        if refuse is not None:
            from edgeser.serve.protocol import ERRORS, error_event

            m.rejected.labels(refuse[0]).inc()
            await websocket.accept()
            try:
                await websocket.send_text(error_event(*refuse))
                await websocket.close(ERRORS[refuse[0]], refuse[1][:120])
            except (RuntimeError, OSError, WebSocketDisconnect):
                pass
            return
        session = StreamSession(websocket, state, state.next_id())
        state.sessions.add(session)
        m.open_streams.inc()
        m.streams.inc()
        try:
            await websocket.accept()
            await session.run()
        finally:
            state.sessions.discard(session)
            m.open_streams.dec()

    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/predict", predict, methods=["POST"]),
        WebSocketRoute("/v1/stream", stream),
    ]


class _TooLarge(Exception):
    pass


def _capped(receive: Any, limit: int) -> Any:
    """``receive`` that raises :class:`_TooLarge` once the body passes ``limit`` bytes."""
    seen = 0

    async def wrapped() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
        return message

    return wrapped


def _upload_suffix(name: str | None, media: str) -> str:
    suffix = Path(name or "").suffix.lower()
    return suffix if suffix in SUFFIXES else AUDIO_TYPES.get(media, "")


async def _receive_upload(request: Any, folder: Path, media: str) -> tuple[Path, str]:
    """The upload written to a file in ``folder`` (never held whole in memory): its path
    and the name to report."""
    from starlette.requests import Request

    lim = request.app.state.serve.limits
    capped = Request(request.scope, _capped(request.receive, lim.max_upload_bytes))
    if media != MULTIPART:
        path = folder / f"upload{AUDIO_TYPES[media]}"
        with open(path, "wb") as fh:
            async for chunk in capped.stream():
                fh.write(chunk)
        return path, "-"
    from starlette.datastructures import UploadFile

    form = await capped.form(max_files=1, max_fields=8, max_part_size=64 << 10)
    try:
        parts = [v for v in form.values() if isinstance(v, UploadFile)]
        if len(parts) != 1:
            raise _BadUpload(400, "bad_request", "multipart body needs exactly one file part")
        part = parts[0]
        name = Path(part.filename or "upload").name[:200] or "upload"
        ptype = (part.content_type or "").split(";")[0].strip().lower()
        path = folder / f"upload{_upload_suffix(name, ptype)}"
        with open(path, "wb") as fh:
            while chunk := await part.read(1 << 16):
                fh.write(chunk)
        return path, name
    finally:
        await form.close()


class _BadUpload(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def _predict(request: Any, state: ServeState) -> Any:
    from starlette.exceptions import HTTPException
    from starlette.responses import Response

    from edgeser.runtime.output import format_prediction

    lim = state.limits
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in AUDIO_TYPES and media != MULTIPART:
        state.metrics.rejected.labels("unsupported_media").inc()
        return _json_error(
            415,
            "unsupported_media",
            f"send audio (WAV, FLAC, Ogg, MP3) as "
            f"the body or one multipart/form-data file part, not "
            f"{media[:60] or 'no Content-Type'!r}",
        )
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > lim.max_upload_bytes):
        state.metrics.rejected.labels("upload_too_large").inc()
        return _json_error(
            413, "upload_too_large", f"uploads are limited to {lim.max_upload_bytes} bytes"
        )
    if state.uploads >= lim.max_uploads or state.draining:
        state.metrics.rejected.labels("busy").inc()
        return _json_error(
            503, "busy", "too many uploads in progress; try again later", {"Retry-After": "1"}
        )
    state.uploads += 1
    try:
        with tempfile.TemporaryDirectory(prefix="edgeser-upload-") as tmp:
            try:
                path, name = await _receive_upload(request, Path(tmp), media)
            except _TooLarge:
                state.metrics.rejected.labels("upload_too_large").inc()
                return _json_error(
                    413, "upload_too_large", f"uploads are limited to {lim.max_upload_bytes} bytes"
                )
            except _BadUpload as e:
                return _json_error(e.status, e.code, e.message)
            except HTTPException as e:  # malformed multipart
                return _json_error(400, "bad_request", f"malformed multipart body ({e.detail})")
            if path.stat().st_size == 0:
                return _json_error(422, "bad_audio", "the upload is empty")
            t0 = time.monotonic()
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(
                    state.predict_pool, _analyse_upload, state.model, path, lim.max_upload_seconds
                )
            except _BadUpload as e:
                state.metrics.rejected.labels(e.code).inc()
                return _json_error(e.status, e.code, e.message)
            except AudioError as e:
                message = str(e).replace(str(path), name)
                return _json_error(422, "bad_audio", message)
            state.metrics.predict_latency.observe(time.monotonic() - t0)
            return Response(
                format_prediction(name, result, True),
                media_type="application/json",
                headers=ISOLATION_HEADERS,
            )
    finally:
        state.uploads -= 1


def _analyse_upload(model: Any, path: Path, max_seconds: float) -> Any:
    from edgeser.audio.io import audio_info

    info = audio_info(path)  # AudioError for what soundfile cannot read
    if info.duration > max_seconds:
        raise _BadUpload(
            413,
            "audio_too_long",
            f"{info.duration:.0f} s of audio; uploads are limited to {max_seconds:g} s",
        )
    return model.analyse_file(path)


# --------------------------------------------------------------------------- the app
def load_serving_model(model: str | os.PathLike[str], threads: int = 1) -> Any:
    """``OnnxEmotionModel`` for a model file, or for a folder its 8-bit file when the card
    lists one (else its float32 file)."""
    from edgeser.runtime.card import read_model_card
    from edgeser.runtime.model import OnnxEmotionModel

    p = Path(model)
    if p.is_dir():
        _, card = read_model_card(p)
        files = card.get("files") or {}
        int8 = files.get("int8") if isinstance(files, dict) else None
        if isinstance(int8, str) and "/" not in int8 and (p / int8).is_file():
            p = p / int8
    return OnnxEmotionModel(p, threads=threads)


def create_serve_app(
    model: Any,
    *,
    limits: ServeLimits | None = None,
    api_keys: tuple[bytes, ...] = (),
    allowed_hosts: tuple[str, ...] = (),
    allowed_origins: tuple[str, ...] = (),
    page: bool = True,
    workers: int = 2,
    instance: str = "",
) -> Any:
    """The ``edgeser serve`` application for a loaded ``OnnxEmotionModel``; its
    :class:`ServeState` is ``app.state.serve``. ``allowed_origins``: other pages' origins
    (``scheme://host:port``, or ``*``) that may call the API from a browser."""
    try:
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
    except ImportError:
        raise EdgeserError(f"edgeser serve needs Starlette and uvicorn: {SERVE_EXTRA}") from None
    state = ServeState(
        model=model,
        limits=(limits or ServeLimits()).validate(),
        metrics=make_metrics(),
        keys=tuple(api_keys),
        allowed_hosts=tuple(allowed_hosts),
        allowed_origins=tuple(normal_origin(o) for o in allowed_origins),
        workers=workers,
        instance=instance,
    )
    routes = _routes(state)
    if page:
        from edgeser.web.server import page_route

        try:
            routes.append(page_route(model.path.parent, allowed_hosts=allowed_hosts))
        except EdgeserError as e:
            log.warning("not serving the browser page: %s", e)
    app = Starlette(routes=routes, middleware=[Middleware(AccessGuard, state=state)])
    app.state.serve = state
    return app
