"""A small async client for ``edgeser serve``: :func:`stream_file` and :func:`stream_blocks`
(``WS /v1/stream``, protocol ``edgeser.stream.v1``), :func:`predict_file`
(``POST /v1/predict``), and ``edgeser stream --server URL`` (:func:`run_remote_stream`),
whose output equals a local ``edgeser stream``'s.

    async for event in stream_file("ws://127.0.0.1:8000", "talk.wav"):
        if event["type"] == "utterance.result":
            print(event["start"], event["end"], event["label"])

A file is read in blocks and resampled to 16 kHz on the client exactly as ``edgeser
stream`` reads it, and sent as ``f32le``: the server sees the samples the local command
sees. Frames are paced to stay within the server's rate limit (``session.ready``'s
``limits``), or to real time with ``realtime=True``. Needs ``websockets``
(``edgeser[serve]``); uploads use the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from edgeser.core.errors import EdgeserError
from edgeser.serve.protocol import FORMATS, PROTOCOL, encode_frame

#: Seconds of audio per binary frame.
FRAME_SECONDS = 0.1
API_KEY_ENV = "EDGESER_API_KEY"


class ServerError(EdgeserError):
    """The server answered with an error: ``code`` (``docs/stream-protocol.md``)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"server: {code}: {message}")
        self.code, self.message, self.status = code, message, status


def endpoint(url: str, path: str, *, websocket: bool) -> str:
    """``url`` with ``path`` when it names none (``ws://h:p`` -> ``ws://h:p/v1/stream``), and
    the scheme matching the protocol (``http`` <-> ``ws``, ``https`` <-> ``wss``)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise EdgeserError(f"not a server URL: {url!r} (e.g. ws://127.0.0.1:8000/v1/stream)")
    secure = scheme in ("https", "wss")
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    return urlunsplit(
        (scheme, parts.netloc, parts.path if parts.path.strip("/") else path, parts.query, "")
    )


def api_key_from(path: str | os.PathLike[str] | None = None) -> str | None:
    """The key in ``path`` (its first key line), else ``$EDGESER_API_KEY``, else None."""
    if path is not None:
        from edgeser.serve.app import read_api_keys

        return read_api_keys(path)[0].decode()
    return os.environ.get(API_KEY_ENV) or None


async def _blocks_in_thread(blocks: Iterable[np.ndarray]) -> AsyncIterator[np.ndarray]:
    """Iterate a (blocking) block reader on a worker thread."""
    it: Iterator[np.ndarray] = iter(blocks)
    done = object()
    while (block := await asyncio.to_thread(next, it, done)) is not done:
        yield block  # type: ignore[misc]


async def stream_blocks(
    url: str,
    blocks: Iterable[np.ndarray],
    *,
    sample_rate: int = 16_000,
    fmt: str = "f32le",
    options: dict[str, float] | None = None,
    api_key: str | None = None,
    realtime: bool = False,
    frame_seconds: float = FRAME_SECONDS,
) -> AsyncIterator[dict[str, Any]]:
    """Stream float32 mono ``blocks`` at ``sample_rate`` to ``url``; yields every server
    event (``session.ready``, ``utterance.start``, ``utterance.result``, last
    ``session.end``). An ``error`` event raises :class:`ServerError`."""
    try:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus
    except ImportError:
        raise EdgeserError(
            "the stream client needs websockets: pip install 'edgeser[serve]'"
        ) from None
    if fmt not in FORMATS:
        raise EdgeserError(f"unknown sample format {fmt!r} (choose {', '.join(FORMATS)})")
    target = endpoint(url, "/v1/stream", websocket=True)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        ws = await connect(
            target, additional_headers=headers, max_size=1 << 20, compression=None, open_timeout=30
        )
    except InvalidStatus as e:
        body = e.response.body or b""
        try:
            err = json.loads(body)["error"]
            raise ServerError(err["code"], err["message"], e.response.status_code) from None
        except (ValueError, KeyError, TypeError):
            raise EdgeserError(
                f"{target}: the server refused the stream (HTTP {e.response.status_code})"
            ) from None
    except (OSError, TimeoutError) as e:
        raise EdgeserError(f"cannot connect to {target} ({e})") from None
    sender: asyncio.Task[None] | None = None
    try:
        start = {
            "type": "session.start",
            "format": fmt,
            "sample_rate": int(sample_rate),
            "options": dict(options or {}),
        }
        await ws.send(json.dumps(start))
        ready = _event(await ws.recv())
        if ready.get("type") != "session.ready" or ready.get("protocol") != PROTOCOL:
            raise EdgeserError(f"{target}: not an {PROTOCOL} server (got {ready!r:.200})")
        yield ready
        sender = asyncio.create_task(
            _send_audio(ws, blocks, ready["limits"], sample_rate, fmt, realtime, frame_seconds)
        )
        async for message in ws:
            event = _event(message)
            if event["type"] == "session.end":
                # the server closes the connection after session.end: let it (closing from
                # here at the same time makes the two close frames cross)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.wait_closed(), 5.0)
                yield event
                break
            yield event
        else:
            if sender.done() and sender.exception() is not None:
                raise sender.exception()  # type: ignore[misc]
            raise EdgeserError(
                f"{target}: the server closed the stream without session.end "
                f"(close code {ws.close_code})"
            )
    except ConnectionClosed as e:
        if sender is not None and sender.done() and sender.exception() is not None:
            raise sender.exception() from None  # type: ignore[misc]
        raise EdgeserError(f"{target}: connection closed ({e})") from None
    finally:
        if sender is not None:
            sender.cancel()
        await ws.close()


def _event(message: str | bytes) -> dict[str, Any]:
    if isinstance(message, bytes):
        raise EdgeserError("the server sent a binary message (not edgeser.stream.v1)")
    event = json.loads(message)
    if event.get("type") == "error":
        raise ServerError(str(event.get("code")), str(event.get("message")))
    return event


async def _send_audio(
    ws: Any,
    blocks: Iterable[np.ndarray],
    limits: dict[str, Any],
    sample_rate: int,
    fmt: str,
    realtime: bool,
    frame_seconds: float,
) -> None:
    """Send ``blocks`` in frames of ``frame_seconds``, then ``session.end``; paced to real
    time, or to 90 % of the server's rate limit."""
    rate = 1.0 if realtime else 0.9 * float(limits["max_rate"])
    lead = 0.0 if realtime else 0.5 * float(limits["max_lead"])
    width = FORMATS[fmt]
    step = max(
        1, min(round(frame_seconds * sample_rate), int(limits["max_message_bytes"]) // width)
    )
    sent = 0.0
    t0 = time.monotonic()
    carry = np.zeros(0, dtype=np.float32)

    async def send(x: np.ndarray) -> None:
        nonlocal sent
        seconds = x.size / sample_rate
        wait = (sent + seconds - lead) / rate - (time.monotonic() - t0)
        if wait > 0:
            await asyncio.sleep(wait)
        await ws.send(encode_frame(x, fmt))
        sent += seconds

    async for block in _blocks_in_thread(blocks):
        carry = np.concatenate([carry, np.asarray(block, dtype=np.float32).reshape(-1)])
        while carry.size >= step:
            await send(carry[:step])
            carry = carry[step:]
    if carry.size:
        await send(carry)
    await ws.send(json.dumps({"type": "session.end"}))


async def stream_file(
    url: str, path: str | os.PathLike[str], **kwargs: Any
) -> AsyncIterator[dict[str, Any]]:
    """:func:`stream_blocks` of an audio file (any format and rate ``edgeser stream``
    reads), resampled to 16 kHz on the client and sent as ``f32le``."""
    from edgeser.runtime.segments import file_blocks

    async for event in stream_blocks(
        url, file_blocks(path, FRAME_SECONDS), sample_rate=16_000, fmt="f32le", **kwargs
    ):
        yield event


def _request(url: str, path: Path, api_key: str | None, timeout: float) -> dict[str, Any]:
    from edgeser.serve.app import AUDIO_TYPES

    kinds = {suffix: media for media, suffix in AUDIO_TYPES.items() if suffix}
    size = path.stat().st_size
    headers = {
        "Content-Type": kinds.get(path.suffix.lower(), "application/octet-stream"),
        "Content-Length": str(size),
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    with open(path, "rb") as body:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read())["error"]
            except (ValueError, KeyError, TypeError):
                raise ServerError("http", f"HTTP {e.code} {e.reason}", e.code) from None
            raise ServerError(err["code"], err["message"], e.code) from None
        except urllib.error.URLError as e:
            raise EdgeserError(f"cannot connect to {url} ({e.reason})") from None


async def predict_file(
    url: str, path: str | os.PathLike[str], *, api_key: str | None = None, timeout: float = 300.0
) -> dict[str, Any]:
    """``POST /v1/predict`` of an audio file: ``edgeser predict --json``'s object (its
    ``path`` is ``-``). Errors raise :class:`ServerError` (``code``, ``status``)."""
    p = Path(path)
    if not p.is_file():
        raise EdgeserError(f"{p}: no such audio file")
    target = endpoint(url, "/v1/predict", websocket=False)
    return await asyncio.to_thread(_request, target, p, api_key, timeout)


# --------------------------------------------------------------------------- CLI
def run_remote_stream(
    server: str,
    source: str,
    *,
    options: dict[str, Any],
    api_key_file: str | None = None,
    as_json: bool = False,
) -> int:
    """``edgeser stream --server URL INPUT``: the local command's output, from the server
    (``source``: an audio file, or ``-`` for 16-bit PCM on standard input; ``options``:
    the segmenter's settings sent with ``session.start``)."""
    from edgeser.runtime.segments import pcm_blocks
    from edgeser.runtime.stream import Segment

    key = api_key_from(api_key_file)
    if source == "-":
        if sys.stdin is None or getattr(sys.stdin, "closed", False):
            raise EdgeserError("stream -: standard input is closed")
        events = stream_blocks(
            server,
            pcm_blocks(sys.stdin.buffer, FRAME_SECONDS),
            fmt="pcm_s16le",
            options=options,
            api_key=key,
        )
    else:
        if not Path(source).is_file():
            raise EdgeserError(f"{source}: no such audio file")
        events = stream_file(server, source, options=options, api_key=key)
    fields = set(Segment.__dataclass_fields__)

    async def run() -> None:
        async for event in events:
            if event["type"] == "utterance.result":
                seg = Segment(**{k: v for k, v in event.items() if k in fields})
                print(seg.to_json() if as_json else seg.to_line(), flush=True)

    try:
        asyncio.run(run())
    except BrokenPipeError:
        from edgeser.runtime.output import stdout_closed

        return stdout_closed()
    return 0
