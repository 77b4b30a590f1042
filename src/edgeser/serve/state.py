"""What ``edgeser serve`` shares between requests: its limits (:class:`ServeLimits`) and
its state (:class:`ServeState`: the model, metrics, keys, the worker pools and the open
sessions). Apart from :mod:`edgeser.serve.app` so that sessions and the app read it
without importing each other."""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from edgeser.core.errors import EdgeserError
from edgeser.serve.metrics import Metrics

__all__ = ["ServeLimits", "ServeState"]


@dataclass(frozen=True)
class ServeLimits:
    """Every limit of ``edgeser serve`` (the defaults admit 32 real-time streams)."""

    max_streams: int = 32
    """WebSocket sessions open at once; the next gets ``too_many_streams`` (close 1013)."""
    max_message_bytes: int = 1 << 20
    """Bytes in one WebSocket message."""
    max_rate: float = 4.0
    """A stream's audio may arrive at most this many times faster than real time..."""
    max_lead: float = 2.0
    """... plus this many seconds of audio ahead."""
    idle_timeout: float = 10.0
    """Seconds without a message from the client (or a send it does not read) that end a
    session."""
    max_session: float = 3600.0
    """Seconds a session may last (wall time); then it ends like a ``session.end``."""
    max_pending: int = 2
    """Closed segments of one stream waiting for the model before its audio waits."""
    max_upload_bytes: int = 64 << 20
    """Bytes of one ``POST /v1/predict`` body (413 beyond)."""
    max_upload_seconds: float = 600.0
    """Seconds of audio in one upload (413 beyond)."""
    max_uploads: int = 4
    """Uploads being analysed or waiting at once (503 beyond)."""

    def validate(self) -> ServeLimits:
        for name in (
            "max_streams",
            "max_message_bytes",
            "max_pending",
            "max_upload_bytes",
            "max_uploads",
        ):
            if int(getattr(self, name)) < 1:
                raise EdgeserError(f"--{name.replace('_', '-')} must be >= 1")
        for name in ("max_rate", "idle_timeout", "max_session", "max_upload_seconds"):
            v = float(getattr(self, name))
            if not 0.0 < v < float("inf"):
                raise EdgeserError(f"--{name.replace('_', '-')} must be > 0, got {v}")
        if not 0.0 <= self.max_lead < float("inf"):
            raise EdgeserError(f"--max-lead must be >= 0, got {self.max_lead}")
        return self


@dataclass
class ServeState:
    """What the application shares between requests."""

    model: Any
    limits: ServeLimits
    metrics: Metrics
    keys: tuple[bytes, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    vad_kind: str = "silero"
    workers: int = 2
    instance: str = ""
    """Names this server process in ``/readyz`` and ``session.ready`` (Ray Serve: the
    replica); random when not given."""
    sessions: set[Any] = field(default_factory=set)
    draining: bool = False
    uploads: int = 0

    def __post_init__(self) -> None:
        from edgeser.runtime.vad import SileroVAD, make_vad

        self.instance = self.instance or os.urandom(4).hex()
        self.vad_pool = ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="vad")
        self.infer_pool = ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="infer")
        self.predict_pool = ThreadPoolExecutor(1, thread_name_prefix="predict")
        proto = make_vad(self.vad_kind)
        self._silero = proto if isinstance(proto, SileroVAD) else None
        self._ids = itertools.count(1)

    def new_vad(self) -> Any:
        """A VAD with a state of its own (Silero: the shared ONNX session, fresh state)."""
        if self._silero is not None:
            vad = copy.copy(self._silero)
            vad.reset()
            return vad
        from edgeser.runtime.vad import make_vad

        return make_vad(self.vad_kind)

    def next_id(self) -> str:
        return f"s{next(self._ids)}-{os.urandom(4).hex()}"

    async def drain(self) -> None:
        """Stop taking streams; end the open ones (their open utterances get results)."""
        self.draining = True
        for session in list(self.sessions):
            session.end("shutdown")
        while self.sessions:
            await asyncio.sleep(0.02)

    def close(self) -> None:
        for pool in (self.vad_pool, self.infer_pool, self.predict_pool):
            pool.shutdown(wait=False, cancel_futures=True)
