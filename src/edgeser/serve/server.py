"""The ``edgeser serve`` server: :func:`make_serve_server` (the bound server for an
exported model) and :func:`exposure_warning`; the command is :mod:`edgeser.cli.serving`.

``edgeser web`` is this server without the API: the same page route, the same socket,
Host check and connection limits (:mod:`edgeser.web.server`), no model loaded and no
numpy or onnxruntime imported.
"""

from __future__ import annotations

import os

from edgeser.serve.app import ServeLimits
from edgeser.web.server import AppServer, Limits, is_loopback


def make_serve_server(
    model: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    limits: ServeLimits | None = None,
    connections: Limits | None = None,
    api_keys: tuple[bytes, ...] = (),
    allowed_hosts: tuple[str, ...] = (),
    allowed_origins: tuple[str, ...] = (),
    page: bool = True,
    workers: int = 2,
    threads: int = 1,
) -> AppServer:
    """A bound ``edgeser serve`` server for an exported model (folder or ONNX file); not yet
    serving (:meth:`AppServer.start` or :meth:`AppServer.serve`). SIGTERM, Ctrl-C and
    :meth:`AppServer.stop` drain it: no new streams, the open ones get their results and a
    ``session.end``, then it stops."""
    from edgeser.serve.app import create_serve_app, load_serving_model

    lim = (limits or ServeLimits()).validate()
    conn = connections or Limits()
    app = create_serve_app(
        load_serving_model(model, threads=threads),
        limits=lim,
        api_keys=api_keys,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
        page=page,
        workers=workers,
    )
    state = app.state.serve
    # uvicorn counts the WebSocket streams among its connections: HTTP keeps its own share.
    conn = Limits(
        max_connections=conn.max_connections + lim.max_streams,
        header_timeout=conn.header_timeout,
        keep_alive=conn.keep_alive,
        backlog=conn.backlog,
    )
    server = AppServer(
        app,
        host,
        port,
        conn,
        websockets=True,
        ws_max_size=2 * lim.max_message_bytes + 64,
        drain=state.drain,
        drain_timeout=max(10.0, 2 * lim.idle_timeout),
    )
    server.app_state = state  # type: ignore[attr-defined]
    return server


def exposure_warning(host: str, keys: tuple[bytes, ...]) -> str | None:
    """The warning for an address other machines reach without API keys (else None)."""
    if keys or is_loopback(host):
        return None
    return (
        f"edgeser: warning: listening on {host} without --api-key-file: anyone who "
        "reaches this address can use the API"
    )
