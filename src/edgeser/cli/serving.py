"""The server commands: ``edgeser web MODEL_DIR`` (the browser page,
:mod:`edgeser.web.server`) and ``edgeser serve MODEL`` (the real-time API,
:mod:`edgeser.serve.server`); both listen on 127.0.0.1 unless ``--host`` says otherwise.

``web`` imports neither numpy nor onnxruntime; ``serve`` loads its model when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeser.cli.options import add_api_key_file, add_server_arguments, positive
from edgeser.core.errors import EdgeserError

#: ``edgeser serve``'s limit options: (:class:`~edgeser.serve.app.ServeLimits` field, type,
#: metavar, help with the default); ``--max-streams`` is ``max_streams`` and so on.
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


def _positive_option(
    group: argparse._ActionsContainer,
    flag: str,
    default: float,
    help: str,
    metavar: str = "N",
) -> None:
    """A number > 0 (an int unless ``default`` is a float)."""
    group.add_argument(
        flag, type=positive(type(default)), default=default, metavar=metavar, help=help
    )


def _check_connections(args: argparse.Namespace) -> None:
    if args.max_connections < 1:
        raise EdgeserError(f"--max-connections must be >= 1, got {args.max_connections}")


# --------------------------------------------------------------------------- web
def add_web(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``edgeser web MODEL_DIR [--port P] [--host H] [--allow-host NAME]``."""
    from edgeser.web.server import SERVE_EXTRA

    p: argparse.ArgumentParser = sub.add_parser(
        "web",
        help="serve the on-device browser page for an exported model (nothing leaves the device)",
        description="Serve the browser page and MODEL_DIR's exported model (model.json, "
        "model.int8.onnx) from this machine. The page classifies audio files on the visitor's "
        "device with onnxruntime-web. Needs " + SERVE_EXTRA + ".",
    )
    p.add_argument("model_dir", type=Path, help="exported model folder (model.json inside)")
    add_server_arguments(p)
    p.set_defaults(func=run_web)
    return p


def run_web(args: argparse.Namespace) -> int:
    from edgeser.web.server import Limits, make_server, warn_if_exposed

    _check_connections(args)
    server = make_server(
        args.model_dir,
        args.host,
        args.port,
        limits=Limits(max_connections=args.max_connections),
        allowed_hosts=args.allow_host,
    )
    warn_if_exposed(args.host, "the page and the model")
    print(f"serving {args.model_dir} at {server.url} (Ctrl-C stops)", flush=True)
    server.serve()
    print("stopped", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- serve
def add_serve(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``edgeser serve MODEL [--host H] [--port P] [--api-key-file F] ...``."""
    from edgeser.serve.app import ServeLimits
    from edgeser.web.server import SERVE_EXTRA

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
    add_api_key_file(
        p,
        "API keys, one a line: every request but /healthz and /readyz needs "
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
            type=float if field == "max_lead" else positive(kind),
            default=default,
            metavar=metavar,
            help=text.format(default=f"{default:g}" if kind is float else default),
        )
    run = p.add_argument_group("compute")
    _positive_option(run, "--workers", 2, "threads for VAD and for the model (default 2)")
    _positive_option(run, "--threads", 1, "onnxruntime threads per model run (default 1)")
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
    _positive_option(scale, "--replicas", 1, "replicas of the model with --ray (default 1)")
    _positive_option(
        scale, "--replica-cpus", 1.0, "CPUs Ray reserves for each replica (default 1)", "X"
    )
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    from edgeser.serve.app import ServeLimits, normal_origin, read_api_keys
    from edgeser.serve.server import exposure_warning, make_serve_server
    from edgeser.web.server import Limits, warn_if_exposed

    limits = ServeLimits(**{field: getattr(args, field) for field, *_ in LIMIT_OPTIONS}).validate()
    _check_connections(args)
    keys = read_api_keys(args.api_key_file) if args.api_key_file is not None else ()
    settings: dict[str, Any] = {  # what one server (or each Ray Serve replica) runs with
        "limits": limits,
        "api_keys": keys,
        "allowed_hosts": tuple(args.allow_host),
        "allowed_origins": tuple(normal_origin(o) for o in args.allow_origin),
        "page": args.page,
        "workers": args.workers,
        "threads": args.threads,
    }
    if args.ray is not None:
        from edgeser.serve.rayserve import RayServeOptions, run_ray_serve

        return run_ray_serve(
            args.model,
            RayServeOptions(**settings),
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
        connections=Limits(max_connections=args.max_connections),
        **settings,
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


#: In the order ``edgeser --help`` lists them.
COMMANDS = (add_web, add_serve)
