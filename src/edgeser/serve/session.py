"""One ``WS /v1/stream`` session on the server: protocol ``edgeser.stream.v1``
(``docs/stream-protocol.md``).

Audio frames are decoded, resampled to 16 kHz (``soxr.ResampleStream``, as ``edgeser
stream`` reads files), split by Silero VAD with ``edgeser stream``'s segmenter
(:class:`~edgeser.runtime.segments.SpeechSplitter`) and each closed segment is classified
like ``edgeser stream`` does (``OnnxEmotionModel.analyse_speech``), so the results equal
``edgeser stream``'s on the same 16 kHz audio.

Nothing grows without bound: the receive loop reads one message at a time (uvicorn stops
reading the socket until the application takes the message), holds at most the open
segment, and waits when ``max_pending`` segments wait for the model; a send that cannot
complete within ``idle_timeout`` seconds (a client that does not read) ends the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeser.audio.io import SAMPLE_RATE
from edgeser.runtime.stream import classify_segment
from edgeser.serve.metrics import STAGES
from edgeser.serve.protocol import (
    PROTOCOL,
    ProtocolError,
    SessionStart,
    decode_frame,
    parse_message,
    parse_session_start,
)

if TYPE_CHECKING:
    from edgeser.serve.state import ServeState

log = logging.getLogger(__name__)

Closed = list[tuple[int, int, np.ndarray]]
#: A closed segment for the model: start, end, audio, when the frame that closed it arrived
#: and when the VAD closed it (time.monotonic()).
Queued = tuple[int, int, np.ndarray, float, float]


def _disconnect() -> type[Exception]:
    from starlette.websockets import WebSocketDisconnect

    return WebSocketDisconnect


class _Stalled(Exception):
    """The client has not read what the server sent for ``idle_timeout`` seconds."""


class _Gone(Exception):
    """The client disconnected."""


class StreamSession:
    """The server side of one stream; :meth:`run` returns when the session is over."""

    def __init__(self, websocket: Any, state: ServeState, session_id: str) -> None:
        self.ws = websocket
        self.state = state
        self.limits = state.limits
        self.id = session_id
        self.ended: str | None = None  # why the server ends it: max_duration, shutdown
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._queue: asyncio.Queue[Queued | None] = asyncio.Queue(maxsize=self.limits.max_pending)
        self._classifier: asyncio.Task[None] | None = None
        self._recv: asyncio.Future[Any] | None = None
        self.audio_in = 0.0  # seconds of input audio received
        self.utterances = 0
        self._announced: int | None = None

    # ------------------------------------------------------------------ control
    def end(self, reason: str) -> None:
        """Ask the session to end (server shutdown): open utterances still get results."""
        if self.ended is None:
            self.ended = reason
        self._wake.set()

    async def _send(self, obj: dict[str, Any] | str) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        async with self._send_lock:
            try:
                await asyncio.wait_for(self.ws.send_text(text), self.limits.idle_timeout)
            except TimeoutError:
                raise _Stalled() from None
            except (RuntimeError, OSError, _disconnect()) as e:  # the connection is closed
                raise _Gone() from e

    async def _close(self, code: int, reason: str = "") -> None:
        try:
            await asyncio.wait_for(self.ws.close(code, reason[:120]), self.limits.idle_timeout)
        except (TimeoutError, RuntimeError, OSError, _disconnect()):
            pass

    async def _receive(self, timeout: float) -> dict[str, Any] | None:
        """The next ASGI message, or None when :meth:`end` was called or ``timeout``
        passed (``self.ended`` tells which)."""
        if self._recv is None:
            self._recv = asyncio.ensure_future(self.ws.receive())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {self._recv, wake}, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            wake.cancel()
        if not self._recv.done():
            return None
        message, self._recv = self._recv.result(), None
        if message["type"] == "websocket.disconnect":
            raise _Gone()
        return message

    # ------------------------------------------------------------------ the session
    async def run(self) -> None:
        m = self.state.metrics
        try:
            try:
                await self._serve()
            except ProtocolError as e:
                m.rejected.labels(e.code).inc()
                await self._send(e.event())
                await self._close(e.close_code, e.message)
        except (_Gone, _Stalled) as e:
            if isinstance(e, _Stalled):
                m.rejected.labels("client_stalled").inc()
                log.info("stream %s: the client stopped reading; session closed", self.id)
        except Exception:
            log.exception("stream %s failed", self.id)
            m.rejected.labels("internal").inc()
            try:
                await self._send(
                    {"type": "error", "code": "internal", "message": "server fault (logged)"}
                )
                await self._close(1011, "server fault")
            except (_Gone, _Stalled):
                pass
        finally:
            if self._classifier is not None and not self._classifier.done():
                self._classifier.cancel()
            if self._recv is not None:
                self._recv.cancel()

    async def _serve(self) -> None:
        lim, loop = self.limits, asyncio.get_running_loop()
        t0 = time.monotonic()
        first = await self._receive(lim.idle_timeout)
        if first is None:
            if self.ended:
                return await self._bye(0.0)
            raise ProtocolError("idle_timeout", f"no session.start within {lim.idle_timeout:g} s")
        if first.get("text") is None:
            raise ProtocolError(
                "bad_session", "the first message must be session.start (text), not audio"
            )
        start = parse_session_start(first["text"], self.state.model.long.window)
        pipeline = Pipeline(start, self.state.new_vad)
        self._classifier = asyncio.create_task(self._classify())
        await self._send(self._ready(start))
        t0 = time.monotonic()
        while True:
            now = time.monotonic()
            left = lim.max_session - (now - t0)
            if left <= 0 and self.ended is None:
                self.ended = "max_duration"
            if self.ended is not None:
                break
            message = await self._receive(min(lim.idle_timeout, left))
            if message is None:
                # which deadline passed is decided by which was nearer, not by reading the
                # clock again (the event loop may wake a timeout a clock tick early)
                if self.ended is None and lim.idle_timeout <= left:
                    raise ProtocolError("idle_timeout", f"no message for {lim.idle_timeout:g} s")
                if self.ended is None:
                    self.ended = "max_duration"
                continue
            received = time.monotonic()
            data = message.get("bytes")
            if data is None:
                obj = parse_message(message.get("text") or "")
                if obj["type"] != "session.end":
                    raise ProtocolError(
                        "bad_message",
                        f"expected audio frames or session.end, got {obj['type'][:40]!r}",
                    )
                self.ended = "client"
                break
            if len(data) > lim.max_message_bytes:
                raise ProtocolError(
                    "message_too_large",
                    f"{len(data)} bytes in one message; the limit is {lim.max_message_bytes}",
                )
            x = decode_frame(data, start.format)
            seconds = x.size / start.sample_rate
            if self.audio_in + seconds > lim.max_rate * (received - t0) + lim.max_lead:
                raise ProtocolError(
                    "rate_exceeded",
                    f"audio faster than {lim.max_rate:g}x real time (+{lim.max_lead:g} s)",
                )
            self.audio_in += seconds
            self.state.metrics.frames.inc()
            self.state.metrics.audio_seconds.inc(seconds)
            closed, open_start = await loop.run_in_executor(self.state.vad_pool, pipeline.push, x)
            await self._emit(closed, open_start, received)
        closed = await loop.run_in_executor(self.state.vad_pool, pipeline.finish)
        await self._emit(closed, None, time.monotonic())
        await self._bye(pipeline.splitter.total / SAMPLE_RATE)

    async def _enqueue(self, item: Queued | None) -> None:
        """Queue a segment for the classifier (waits while ``max_pending`` wait); raises
        what ended the classifier if it stopped."""
        assert self._classifier is not None
        put = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({put, self._classifier}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            self._classifier.result()  # its exception
            raise RuntimeError("the classifier stopped")

    async def _bye(self, audio_seconds: float) -> None:
        if self._classifier is not None:
            await self._enqueue(None)
            await self._classifier
        reason = self.ended or "client"
        await self._send(
            {
                "type": "session.end",
                "reason": reason,
                "audio_seconds": audio_seconds,
                "utterances": self.utterances,
            }
        )
        await self._close(1001 if reason == "shutdown" else 1000, reason)

    def _ready(self, start: SessionStart) -> dict[str, Any]:
        lim, model = self.limits, self.state.model
        return {
            "type": "session.ready",
            "protocol": PROTOCOL,
            "session_id": self.id,
            "instance": self.state.instance,
            "format": start.format,
            "sample_rate": start.sample_rate,
            "options": asdict(start.options),
            "labels": model.labels,
            "dimensions": model.dimension_names or None,
            "limits": {
                "max_message_bytes": lim.max_message_bytes,
                "max_rate": lim.max_rate,
                "max_lead": lim.max_lead,
                "idle_timeout": lim.idle_timeout,
                "max_session": lim.max_session,
            },
        }

    async def _emit(self, closed: Closed, open_start: int | None, when: float) -> None:
        closed_at = time.monotonic()
        for a, b, audio in closed:
            if self._announced != a:
                await self._send({"type": "utterance.start", "start": a / SAMPLE_RATE})
            self._announced = None
            await self._enqueue((a, b, audio, when, closed_at))
        if open_start is not None and self._announced != open_start:
            self._announced = open_start
            await self._send({"type": "utterance.start", "start": open_start / SAMPLE_RATE})

    async def _classify(self) -> None:
        loop, m = asyncio.get_running_loop(), self.state.metrics
        model = self.state.model

        def run(a: int, b: int, audio: np.ndarray) -> tuple[Any, float, float]:
            started = time.monotonic()
            return classify_segment(model, a, b, audio), started, time.monotonic()

        while (item := await self._queue.get()) is not None:
            a, b, audio, when, closed_at = item
            dequeued = time.monotonic()
            seg, started, finished = await loop.run_in_executor(
                self.state.infer_pool, run, a, b, audio
            )
            result: dict[str, Any] = {"type": "utterance.result", **asdict(seg)}
            if seg.dimensions is None:
                del result["dimensions"]
            await self._send(result)
            sent = time.monotonic()
            self.utterances += 1
            m.utterances.inc()
            m.result_latency.observe(sent - when)
            marks = (when, closed_at, dequeued, started, finished, sent)
            for stage, t0, t1 in zip(STAGES, marks, marks[1:], strict=False):
                m.result_stages.labels(stage).observe(t1 - t0)


class Pipeline:
    """Decoded input audio -> 16 kHz -> speech segments (runs on a worker thread)."""

    def __init__(self, start: SessionStart, new_vad: Callable[[], Any]) -> None:
        from edgeser.runtime.segments import SpeechSplitter

        self.splitter = SpeechSplitter(new_vad(), start.options)
        self.resampler = None
        if start.sample_rate != SAMPLE_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(
                start.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )

    def push(self, x: np.ndarray) -> tuple[Closed, int | None]:
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x, last=False)
        closed = self.splitter.push(x) if x.size else []
        return closed, self.splitter.open_start()

    def finish(self) -> Closed:
        closed: Closed = []
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                closed += self.splitter.push(tail)
        return closed + self.splitter.finish()
