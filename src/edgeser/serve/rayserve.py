"""``edgeser serve MODEL --ray[=ADDRESS] --replicas N``: the same application as a Ray Serve
deployment.

Each replica is a Ray actor that loads the model and builds the very application
``edgeser serve`` runs on one machine (:func:`~edgeser.serve.app.create_serve_app`: the
page, ``POST /v1/predict``, ``WS /v1/stream``, health, metrics, keys and limits), handed to
Ray Serve as its ASGI ingress (``@serve.ingress`` with ``__serve_build_asgi_app__``). Ray
Serve's HTTP proxy listens on ``--host``/``--port`` and routes each request to a replica.

**A session stays on one replica.** Ray Serve's proxy turns each HTTP request and each
WebSocket connection into one call to one replica: the replica runs the application with
the connection's ASGI scope, pulls the client's messages from the proxy
(``receive_asgi_messages``) and streams its own back until the connection closes. Nothing
of a connection is routed again, so a stream's VAD state, open utterance and queue live in
the replica that accepted it, from ``session.start`` to ``session.end``. (A replica that
dies ends its sessions: their clients see the connection close.) Limits are per replica:
``--max-streams`` streams each, so ``N × max_streams`` in all; the proxy sends a new
connection to the replica with the fewest requests in progress.

**Stopping** (Ctrl-C, SIGTERM): every replica drains as one server does (no new streams,
open utterances get their results and ``session.end`` with reason ``shutdown``), then the
application is deleted (and a Ray started here is shut down). ``--ray`` alone joins the
cluster ``RAY_ADDRESS`` names when it is set, else starts Ray in this process. The
replicas wait for the signal on a small coordinator actor (:class:`_Drain`), so no replica
polls.

The model folder must be at the same path on every node (one machine, or a shared
filesystem). Needs ``pip install 'edgeser[distributed,runtime,serve]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeser.core.errors import EdgeserError
from edgeser.core.executor import import_ray
from edgeser.serve.app import ServeLimits

log = logging.getLogger(__name__)

APP_NAME = "edgeser"
RAY_SERVE_EXTRA = "pip install 'edgeser[distributed,runtime,serve]'"


@dataclass(frozen=True)
class RayServeOptions:
    """What every replica's application is built with (``edgeser serve``'s options)."""

    limits: ServeLimits = field(default_factory=ServeLimits)
    api_keys: tuple[bytes, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    page: bool = True
    workers: int = 2
    threads: int = 1

    @property
    def max_ongoing(self) -> int:
        """Requests one replica takes at once: its streams, its uploads and room for
        probes, metrics and the page's files (the application refuses the rest itself)."""
        return self.limits.max_streams + self.limits.max_uploads + 16


def _serve() -> Any:
    import_ray()
    try:
        from ray import serve
    except ImportError:
        raise EdgeserError(f"--ray needs Ray Serve: {RAY_SERVE_EXTRA}") from None
    return serve


class EdgeserReplica:
    """One replica: the model and the application (wrapped by :func:`_deployment`)."""

    async def __init__(self, model: str, options: RayServeOptions, drain: Any = None) -> None:
        from ray import serve

        from edgeser.serve.app import create_serve_app, load_serving_model

        self.instance = serve.get_replica_context().replica_tag
        self.asgi = create_serve_app(
            load_serving_model(model, threads=options.threads),
            limits=options.limits,
            api_keys=options.api_keys,
            allowed_hosts=options.allowed_hosts,
            allowed_origins=options.allowed_origins,
            page=options.page,
            workers=options.workers,
            instance=self.instance,
        )
        self._watch = asyncio.create_task(self._drain_when_told(drain)) if drain else None

    def __serve_build_asgi_app__(self) -> Any:
        return self.asgi

    async def _drain_when_told(self, drain: Any) -> None:
        try:
            await drain.wait.remote(self.instance)
            await self.asgi.state.serve.drain()
            await drain.drained.remote(self.instance)
        except Exception as e:  # the coordinator is gone (its driver ended): keep serving
            log.info("replica %s: no drain coordinator (%s)", self.instance, type(e).__name__)

    async def __del__(self) -> None:
        if getattr(self, "_watch", None) is not None:
            self._watch.cancel()
        if hasattr(self, "asgi"):
            await self.asgi.state.serve.drain()
            self.asgi.state.serve.close()


def _deployment(options: RayServeOptions, replicas: int, replica_cpus: float) -> Any:
    serve = _serve()
    ingress = serve.ingress()(EdgeserReplica)
    return serve.deployment(
        ingress,
        name="EdgeserReplica",
        num_replicas=replicas,
        max_ongoing_requests=options.max_ongoing,
        max_queued_requests=options.max_ongoing * replicas,
        ray_actor_options={"num_cpus": replica_cpus},
        graceful_shutdown_timeout_s=max(10.0, 2 * options.limits.idle_timeout),
    )


class _Drain:
    """The replicas wait on :meth:`wait` (one long call each); :meth:`drain` releases them
    all and returns once each has drained, or after ``timeout`` seconds."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.waiting: set[str] = set()
        self.done: set[str] = set()

    async def wait(self, instance: str) -> None:
        self.waiting.add(instance)
        await self.go.wait()

    async def drained(self, instance: str) -> None:
        self.done.add(instance)

    async def drain(self, timeout: float) -> list[str]:
        self.go.set()
        deadline = time.monotonic() + timeout
        while not self.waiting <= self.done and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return sorted(self.done)


def start_ray_serve(
    model: str | os.PathLike[str],
    options: RayServeOptions,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    replica_cpus: float = 1.0,
) -> tuple[Any, Any]:
    """Deploy the application on the Ray this process is connected to (HTTP on
    ``host:port``); returns once every replica is up: the Serve handle and the drain
    coordinator."""
    ray, serve = import_ray(), _serve()
    path = Path(model).resolve()
    if not path.exists():
        raise EdgeserError(f"{model}: no such model folder or file")
    if port == 0:
        raise EdgeserError("--ray needs a fixed --port (Ray Serve's proxy listens on it)")
    serve.start(http_options={"host": host, "port": int(port)})
    drain = ray.remote(num_cpus=0)(_Drain).remote()
    app = _deployment(options, replicas, replica_cpus).bind(str(path), options, drain)
    handle = serve.run(app, name=APP_NAME, route_prefix="/")
    return handle, drain


def stop_ray_serve(drain: Any, timeout: float) -> list[str]:
    """Drain every replica (open utterances get their results), then delete the app;
    returns the replicas that drained."""
    ray, serve = import_ray(), _serve()
    done: list[str] = []
    with contextlib.suppress(Exception):
        done = ray.get(drain.drain.remote(timeout), timeout=timeout + 10)
    serve.delete(APP_NAME)
    return done


def run_ray_serve(
    model: str | os.PathLike[str],
    options: RayServeOptions,
    *,
    address: str | None,
    host: str,
    port: int,
    replicas: int,
    replica_cpus: float,
    warning: str | None = None,
) -> int:
    """``edgeser serve --ray``: deploy, print the URL, serve until Ctrl-C or SIGTERM, drain."""
    ray = import_ray()
    _serve()
    address = address or os.environ.get("RAY_ADDRESS") or None
    started_here = address is None
    init = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "configure_logging": False,
    }
    try:
        if started_here:
            ray.init(num_cpus=os.cpu_count() or 1, **init)
        else:
            ray.init(address=address, **init)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EdgeserError(
            f"--ray: cannot start or reach Ray at {address or 'a local instance'} ({first[:200]})"
        ) from None
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        _, drain = start_ray_serve(
            model, options, host=host, port=port, replicas=replicas, replica_cpus=replica_cpus
        )
        shown = f"[{host}]" if ":" in host else host
        print(
            f"serving {model} at http://{shown}:{port}/ (Ray Serve: {replicas} replicas; "
            f"API: http://{shown}:{port}/v1/; Ctrl-C stops)",
            flush=True,
        )
        stop.wait()
        timeout = max(10.0, 2 * options.limits.idle_timeout)
        done = stop_ray_serve(drain, timeout)
        print(f"stopped ({len(done)} of {replicas} replicas drained)", file=sys.stderr, flush=True)
    finally:
        if started_here:
            with contextlib.suppress(Exception):
                _serve().shutdown()
            ray.shutdown()
    return 0
