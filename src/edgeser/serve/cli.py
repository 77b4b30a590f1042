"""``edgeser serve MODEL`` (registered by :mod:`edgeser.cli`) and :func:`make_serve_server`.

``edgeser web`` is this server without the API: the same page route, the same socket,
Host check and connection limits (:mod:`edgeser.web.server`), no model loaded and no
numpy or onnxruntime imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from edgeser.core.errors import EdgeserError
from edgeser.serve.app import ServeLimits
from edgeser.web.server import (
    SERVE_EXTRA,
    AppServer,
    Limits,
    add_server_arguments,
    is_loopback,
    warn_if_exposed,
)

#: ``edgeser serve``'s limit options: (:class:`ServeLimits` field, type, metavar, help
#: with the default); ``--max-streams`` is ``max_streams`` and so on.
LIMIT_OPTIONS: tuple[tuple[str, type, str, str], ...] = (
    (
        "max_streams",
        int,
        "N",
        "streams open at once (default {default}; the next is refused with close code 1013)",
    ),
    ("max_message_bytes", int, "B", "bytes per WebSocket message (default {default})"),
    (
        "max_rate",
        float,
        "X",
        "a stream's audio no faster than X times real time (default {default}), ...",
    ),
    ("max_lead", float, "SECONDS", "... plus this much audio ahead (default {default})"),
    ("idle_timeout", float, "SECONDS", "end a stream silent this long (default {default})"),
    ("max_session", float, "SECONDS", "longest stream, wall time (default {default})"),
    ("max_upload_bytes", int, "B", "POST /v1/predict body (default {default}; 413 beyond)"),
    ("max_upload_seconds", float, "SECONDS", "audio in one upload (default {default}; 413 beyond)"),
    (
        "max_uploads",
        int,
        "N",
        "uploads analysed or waiting at once (default {default}; 503 beyond)",
    ),
)


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


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v

    return parse


def add_serve_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``edgeser serve MODEL [--host H] [--port P] [--api-key-file F] ...``."""
    d = ServeLimits()
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="a real-time emotion API: POST /v1/predict, WS /v1/stream, the page, metrics",
        description="Serve an exported model over HTTP and WebSocket: POST /v1/predict (an "
        "audio file -> predict --json's object), WS /v1/stream (real-time protocol, "
        "docs/stream-protocol.md), GET /healthz, /readyz, /metrics (Prometheus) and the "
        "browser page of `edgeser web`. Listens on 127.0.0.1 unless --host says otherwise. "
        "WebSocket streams are counted by --max-streams, besides --max-connections. Needs "
        + SERVE_EXTRA
        + ".",
    )
    p.add_argument(
        "model",
        type=Path,
        help="exported model folder (its 8-bit file) or an .onnx file with model.json beside it",
    )
    add_server_arguments(p)
    p.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="API keys, one a line: every request but /healthz and /readyz needs "
        "'Authorization: Bearer KEY' (WebSocket: or ?token=KEY)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web page's origin (e.g. https://example.org, http://127.0.0.1:8080) whose "
        "scripts may call the API from a browser: CORS (repeatable; '*': any page). Pages "
        "served by this server are always allowed; other pages are refused (403)",
    )
    p.add_argument(
        "--no-page",
        dest="page",
        action="store_false",
        help="serve the API only, not the browser page",
    )
    lim = p.add_argument_group("limits")
    for field, kind, metavar, text in LIMIT_OPTIONS:
        default = getattr(d, field)
        lim.add_argument(
            "--" + field.replace("_", "-"),
            type=float if field == "max_lead" else _positive(kind),
            default=default,
            metavar=metavar,
            help=text.format(default=f"{default:g}" if kind is float else default),
        )
    run = p.add_argument_group("compute")
    run.add_argument(
        "--workers",
        type=_positive(int),
        default=2,
        metavar="N",
        help="threads for VAD and for the model (default 2)",
    )
    run.add_argument(
        "--threads",
        type=_positive(int),
        default=1,
        metavar="N",
        help="onnxruntime threads per model run (default 1)",
    )
    scale = p.add_argument_group("scale-out on Ray Serve (pip install 'edgeser[distributed]')")
    scale.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the app as a Ray Serve deployment: --ray starts Ray here, --ray=auto joins "
        "this machine's cluster, --ray=HOST:PORT that one (--port is Ray Serve's HTTP port). "
        "Each WebSocket session stays on the replica that accepted it; limits are per replica",
    )
    scale.add_argument(
        "--replicas",
        type=_positive(int),
        default=1,
        metavar="N",
        help="replicas of the model with --ray (default 1)",
    )
    scale.add_argument(
        "--replica-cpus",
        type=_positive(float),
        default=1.0,
        metavar="X",
        help="CPUs Ray reserves for each replica (default 1)",
    )
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    from edgeser.serve.app import read_api_keys

    limits = ServeLimits(**{field: getattr(args, field) for field, *_ in LIMIT_OPTIONS}).validate()
    if args.max_connections < 1:
        raise EdgeserError(f"--max-connections must be >= 1, got {args.max_connections}")
    keys = read_api_keys(args.api_key_file) if args.api_key_file is not None else ()
    from edgeser.serve.app import normal_origin

    origins = tuple(normal_origin(o) for o in args.allow_origin)
    if args.ray is not None:
        from edgeser.serve.rayserve import RayServeOptions, run_ray_serve

        options = RayServeOptions(
            limits=limits,
            api_keys=keys,
            allowed_hosts=tuple(args.allow_host),
            allowed_origins=origins,
            page=args.page,
            workers=args.workers,
            threads=args.threads,
        )
        return run_ray_serve(
            args.model,
            options,
            address=args.ray or None,
            host=args.host,
            port=args.port,
            replicas=args.replicas,
            replica_cpus=args.replica_cpus,
            warning=exposure_warning(args.host, keys),
        )
    if args.replicas != 1:
        raise EdgeserError("--replicas needs --ray (one process serves without it)")
    server = make_serve_server(
        args.model,
        args.host,
        args.port,
        limits=limits,
        connections=Limits(max_connections=args.max_connections),
        api_keys=keys,
        allowed_hosts=tuple(args.allow_host),
        allowed_origins=origins,
        page=args.page,
        workers=args.workers,
        threads=args.threads,
    )
    warning = exposure_warning(args.host, keys)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    else:
        warn_if_exposed(args.host, "the API (API keys required)")
    print(f"serving {args.model} at {server.url} (API: {server.url}v1/; Ctrl-C stops)", flush=True)
    server.serve()
    print("stopped", file=sys.stderr)
    return 0


def run_stream_command(args: argparse.Namespace) -> int:
    """``edgeser stream``: through the server at ``--server`` (the same output as the local
    command), else on this machine (:func:`edgeser.runtime.cli.run_stream`)."""
    if args.server is None:
        from edgeser.runtime.cli import run_stream

        return run_stream(args)
    if args.input is not None:
        raise EdgeserError("stream --server URL INPUT takes no MODEL (the server has it)")
    if args.vad != "silero":
        raise EdgeserError("stream --server: the server's VAD is Silero (no --vad)")
    args.input = str(args.model)
    from edgeser.serve.client import run_remote_stream

    return run_remote_stream(args)
