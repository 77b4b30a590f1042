"""``edgeser web MODEL_DIR``: the browser page and an exported model, served from this machine.

The page (``static/``: HTML, ES modules, CSS; no bundler) runs the 8-bit model with
onnxruntime-web's WASM backend on the visitor's device. The server only hands out files:
the page, onnxruntime-web's WASM build (from the npm registry through ``web/package.json``
and its lock file: ``npm ci --prefix web`` in the checkout, or ``EDGESER_WEB_VENDOR``
naming its ``dist`` folder), the bundled Silero VAD and the model folder's ``model.json``
and the ONNX files it lists. Every response carries the cross-origin isolation headers WASM
threads need (``Cross-Origin-Opener-Policy: same-origin``, ``Cross-Origin-Embedder-Policy:
require-corp``). The same files on any static host (HTTPS, same headers) make the page work
on a phone.

A model folder is something people download from others, and whatever listens on a socket
meets hostile input, so:

- **An installable app that works offline.** ``manifest.webmanifest`` and icons make the
  page installable; its service worker (``static/sw.js``) keeps the page, onnxruntime-web,
  Silero and the model in a cache named by ``/version.json``, a digest of all of them.
- **Only the page's files.** The URL map is fixed when the server starts (:func:`site_files`):
  a URL is served only if it is in the map, and a file only if it is a regular file that
  resolves, symlinks followed, inside its root (the page's folder, onnxruntime-web's folder,
  the bundled VAD's folder, the model folder); ``model.json``'s ``files`` entries must be
  plain file names. The check is repeated at every request (a file swapped for a symlink
  after the start is not followed out of its root).
- **Bounded resources.** Starlette's ``FileResponse`` sends a file in 64 KiB chunks under
  uvicorn's flow control, so a client that does not read holds one chunk, not the file; a
  connection must deliver a request's headers within ``header_timeout`` seconds (uvicorn
  has no such timeout, so :class:`_GuardedH11Protocol` adds one), idle keep-alive
  connections close after ``keep_alive`` seconds, at most ``max_connections`` connections
  are served at once (more get 503) and the listen backlog is ``backlog``.
- **Loopback by default, and no DNS rebinding.** ``--host`` defaults to 127.0.0.1; any
  other address prints a warning. A request whose ``Host`` header names neither an IP
  address nor ``localhost`` nor an ``--allow-host`` name gets 400 (a rebinding attack
  needs a host name that resolves to this machine).

Needs Starlette and uvicorn: ``pip install 'edgeser[serve]'`` (numpy and torch are not
imported).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeser.core.errors import EdgeserError
from edgeser.runtime.card import read_model_card
from edgeser.runtime.vad import BUNDLED_SILERO

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
#: The onnxruntime-web files the page loads (WASM backend, SIMD + threads build).
VENDOR_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".ort": "application/octet-stream",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
}
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
SERVE_EXTRA = "pip install 'edgeser[serve]'"
#: Host names accepted in the Host header besides IP literals (see the module docstring).
LOCAL_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the server."""

    max_connections: int = 64
    """Connections (and requests in progress) served at once; a request beyond gets 503."""
    header_timeout: float = 10.0
    """Seconds a connection has to deliver a request's headers."""
    keep_alive: float = 5.0
    """Seconds an idle keep-alive connection stays open."""
    backlog: int = 128
    """Connections the kernel queues before the server accepts them."""


# --------------------------------------------------------------------------- files
def vendor_dir() -> Path:
    """onnxruntime-web's ``dist`` folder: ``EDGESER_WEB_VENDOR``, else the checkout's
    ``web/node_modules/onnxruntime-web/dist``."""
    env = os.environ.get("EDGESER_WEB_VENDOR")
    root = Path(__file__).resolve().parents[3]
    path = Path(env) if env else root / "web" / "node_modules" / "onnxruntime-web" / "dist"
    missing = [f for f in VENDOR_FILES if not (path / f).is_file()]
    if missing:
        raise EdgeserError(
            f"onnxruntime-web not found in {path} (missing {', '.join(missing)}): run "
            "`npm ci --prefix web` in the edgeser checkout, or set EDGESER_WEB_VENDOR to "
            "onnxruntime-web's dist folder"
        )
    return path


@dataclass(frozen=True)
class SiteFile:
    """A file the page may load: its path and the folder it must resolve inside."""

    path: Path
    root: Path

    def resolve(self) -> Path | None:
        """The real path, if it is a regular file inside ``root`` (symlinks followed)."""
        try:
            real = self.path.resolve(strict=True)
            mode = real.stat().st_mode
        except (OSError, RuntimeError):  # missing, a symlink loop, unreadable
            return None
        if not stat.S_ISREG(mode) or not real.is_relative_to(self.root.resolve()):
            return None
        return real


def _plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def site_files(model_dir: str | os.PathLike[str]) -> dict[str, SiteFile]:
    """URL path -> file for everything the page may load (nothing else is served).

    ``model.json``'s ``files`` entries that are not plain names of regular files inside
    the model folder are left out with a warning.
    """
    onnx_path, card = read_model_card(model_dir)
    folder = onnx_path.parent
    files = {
        f"/{p.relative_to(STATIC).as_posix()}": SiteFile(p, STATIC)
        for p in sorted(STATIC.rglob("*"))
        if p.is_file()
    }
    files["/"] = SiteFile(STATIC / "index.html", STATIC)
    vendor = vendor_dir()
    files.update({f"/vendor/ort/{name}": SiteFile(vendor / name, vendor) for name in VENDOR_FILES})
    files["/vad/silero_vad.onnx"] = SiteFile(BUNDLED_SILERO, BUNDLED_SILERO.parent)
    files["/model/model.json"] = SiteFile(folder / "model.json", folder)
    listed = card.get("files") or {}
    for key, name in listed.items() if isinstance(listed, dict) else []:
        entry = SiteFile(folder / name, folder) if _plain_name(name) else None
        if entry is None or entry.resolve() is None:
            log.warning(
                "%s: not serving files[%r] = %r (only regular files inside the model "
                "folder, named without a path)",
                folder / "model.json",
                key,
                name,
            )
            continue
        files[f"/model/{name}"] = entry
    return files


def site_version(files: dict[str, SiteFile]) -> str:
    """A digest of every file the page may load (contents): the offline cache's version,
    so a new page, onnxruntime-web or model replaces the cached one."""
    digest = hashlib.sha256()
    for url in sorted(files):
        real = files[url].resolve()
        if real is None:
            continue
        digest.update(url.encode())
        with open(real, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- the app
def host_allowed(host_header: str, allowed: Iterable[str]) -> bool:
    """Whether a ``Host`` header names this server: an IP literal, ``localhost`` or one of
    ``allowed`` (``"*"`` allows any), with or without a port."""
    names = {a.lower() for a in allowed}
    if "*" in names:
        return True
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host in LOCAL_NAMES or host in names


def _starlette() -> Any:
    try:
        import starlette.applications
        import starlette.responses
        import starlette.routing
    except ImportError:
        raise EdgeserError(f"edgeser web needs Starlette and uvicorn: {SERVE_EXTRA}") from None
    return starlette


def page_route(model_dir: str | os.PathLike[str], *, allowed_hosts: Iterable[str] = ()) -> Any:
    """The Starlette route (``GET``/``HEAD`` of any path) serving the page and
    ``model_dir``'s exported model (:func:`site_files`); ``edgeser serve`` puts its API
    routes before it."""
    starlette = _starlette()
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

    files = site_files(model_dir)
    allowed = tuple(allowed_hosts)
    version = site_version(files)

    def refused(status: int, text: str) -> Response:
        return PlainTextResponse(text, status_code=status, headers=ISOLATION_HEADERS)

    async def page_file(request: Request) -> Response:
        if not host_allowed(request.headers.get("host", ""), allowed):
            return refused(400, "unknown Host header")
        if request.url.path == "/version.json":  # what the service worker's cache is named by
            return JSONResponse(
                {"version": version}, headers={**ISOLATION_HEADERS, "Cache-Control": "no-cache"}
            )
        entry = files.get(request.url.path)
        real = entry.resolve() if entry is not None else None
        if real is None:
            return refused(404, "not part of this page")
        kind = CONTENT_TYPES.get(real.suffix, "application/octet-stream")
        return FileResponse(
            real, media_type=kind, headers={**ISOLATION_HEADERS, "Cache-Control": "no-cache"}
        )

    return starlette.routing.Route("/{path:path}", page_file, methods=["GET", "HEAD"])


def create_app(model_dir: str | os.PathLike[str], *, allowed_hosts: Iterable[str] = ()) -> Any:
    """The Starlette application serving the page and ``model_dir``'s exported model
    (``edgeser serve``'s application without the API)."""
    starlette = _starlette()
    route = page_route(model_dir, allowed_hosts=allowed_hosts)
    return starlette.applications.Starlette(routes=[route])


# --------------------------------------------------------------------------- the server
def _guarded_protocol(header_timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline for each request's headers (uvicorn closes
    idle keep-alive connections but waits forever for a first request or slow headers)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _GuardedH11Protocol(H11Protocol):
        _deadline: Any = None
        _waiting_cycle: Any = None

        def _arm(self) -> None:
            self._waiting_cycle = self.cycle
            self._deadline = self.loop.call_later(header_timeout, self._expire)

        def _expire(self) -> None:
            if self.cycle is self._waiting_cycle and not self.transport.is_closing():
                log.debug("closing a connection that sent no request in %.0f s", header_timeout)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_websocket_upgrade(self, event: Any) -> None:
            # The headers are in: the WebSocket protocol takes the connection over (its
            # idle limits are the application's).
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().handle_websocket_upgrade(event)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._deadline is not None and self.cycle is not self._waiting_cycle:
                self._deadline.cancel()
                self._deadline = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._deadline is None:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

    return _GuardedH11Protocol


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_socket(host: str, port: int, backlog: int = Limits.backlog) -> socket.socket:
    """A bound, listening TCP socket for ``host:port`` (clients that connect before the
    server loop starts wait in the kernel's queue); :class:`EdgeserError` when the address
    cannot be used."""
    if not 0 <= int(port) <= 65535:
        raise EdgeserError(f"port must be in 0-65535, got {port}")
    try:
        infos = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise EdgeserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise EdgeserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _draining_server(
    base: type, drain: Callable[[], Awaitable[None]] | None, timeout: float
) -> type:
    """``base`` (uvicorn's Server) that, on shutdown (SIGTERM, Ctrl-C, :meth:`AppServer.stop`),
    stops accepting connections and awaits ``drain()`` (at most ``timeout`` seconds)
    before uvicorn closes the connections still open."""
    if drain is None:
        return base

    class _DrainingServer(base):  # type: ignore[misc, valid-type]
        async def shutdown(self, sockets: Any = None) -> None:
            import asyncio

            for server in self.servers:
                server.close()
            try:
                await asyncio.wait_for(drain(), timeout)
            except TimeoutError:
                log.warning("draining took more than %.0f s: closing the open streams", timeout)
            await super().shutdown(sockets)

    return _DrainingServer


class AppServer:
    """An ASGI app on uvicorn, on a socket bound at construction (so ``port=0`` has its
    port, and a busy port is an :class:`EdgeserError` before anything starts).

    :meth:`serve` runs in the foreground (Ctrl-C and SIGTERM stop it); :meth:`start` and
    :meth:`stop` run it on a background thread (tests, benchmarks).
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8000,
        limits: Limits | None = None,
        *,
        websockets: bool = False,
        ws_max_size: int = 1 << 20,
        drain: Callable[[], Awaitable[None]] | None = None,
        drain_timeout: float = 10.0,
    ) -> None:
        try:
            import uvicorn
        except ImportError:
            raise EdgeserError(f"edgeser web needs Starlette and uvicorn: {SERVE_EXTRA}") from None
        self.limits = limits or Limits()
        self.socket = listen_socket(host, port, self.limits.backlog)
        config = uvicorn.Config(
            app,
            http=_guarded_protocol(self.limits.header_timeout),
            ws="websockets-sansio" if websockets else "none",
            lifespan="off",
            limit_concurrency=self.limits.max_connections,
            timeout_keep_alive=int(max(1, self.limits.keep_alive)),
            backlog=self.limits.backlog,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
            ws_max_size=int(ws_max_size),
            ws_per_message_deflate=False,
        )
        self._server = _draining_server(uvicorn.Server, drain, drain_timeout)(config)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve(self) -> None:
        """Serve until interrupted (uvicorn handles SIGINT and SIGTERM: graceful exit)."""
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self) -> AppServer:
        """Serve on a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.serve, name="edgeser-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EdgeserError("the web server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


def make_server(
    model_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    limits: Limits | None = None,
    allowed_hosts: Iterable[str] = (),
) -> AppServer:
    """A server for the page and ``model_dir``'s exported model (bound, not yet serving)."""
    app = create_app(model_dir, allowed_hosts=allowed_hosts)
    return AppServer(app, host, port, limits)


def warn_if_exposed(host: str, what: str) -> None:
    """One warning line when ``host`` is not loopback."""
    if not is_loopback(host):
        print(
            f"edgeser: warning: listening on {host}: {what} can be reached from other "
            "machines (the default, 127.0.0.1, keeps it on this one)",
            file=sys.stderr,
            flush=True,
        )
