"""The real-time stream protocol ``edgeser.stream.v1`` (``WS /v1/stream``): message names,
fields, audio frame decoding, error codes and close codes, shared by the server and the
clients. ``docs/stream-protocol.md`` is the specification; this module is its code.

Imports numpy only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeser.core.errors import EdgeserError
from edgeser.runtime.vad import SegmenterConfig

PROTOCOL = "edgeser.stream.v1"
#: Sample formats of binary frames: bytes per sample.
FORMATS = {"pcm_s16le": 2, "f32le": 4}
MIN_RATE, MAX_RATE = 8_000, 192_000
#: Bounds of the segmenter options a client may set (seconds; ``max_segment``'s upper bound
#: is the model's window).
OPTION_BOUNDS = {"min_speech": (0.0, 5.0), "min_silence": (0.0, 5.0), "speech_pad": (0.0, 1.0)}

#: Error code -> WebSocket close code. Every error ends the session.
ERRORS = {
    "bad_session": 1008,  # first message is not a valid session.start
    "bad_message": 1003,  # text where audio is expected, unknown or malformed message
    "bad_audio": 1007,  # byte count not a whole number of samples, NaN/inf samples
    "message_too_large": 1009,  # a message over max_message_bytes
    "rate_exceeded": 1008,  # audio faster than max_rate x real time (+ max_lead)
    "idle_timeout": 1008,  # no message for idle_timeout seconds
    "too_many_streams": 1013,  # max_streams sessions already open: try again later
    "shutting_down": 1001,  # the server is draining: no new sessions
    "internal": 1011,  # a server fault (the message says what)
}
#: Close code after ``session.end``: 1000, or 1001 when the server is shutting down.
END_REASONS = ("client", "max_duration", "shutdown")


class ProtocolError(EdgeserError):
    """A client broke the protocol: ``code`` is one of :data:`ERRORS`."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def close_code(self) -> int:
        return ERRORS[self.code]

    def event(self) -> str:
        return error_event(self.code, self.message)


def error_event(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


#: The segmenter settings a stream may set in ``session.start``'s ``options``: those of
#: ``edgeser stream`` (:class:`~edgeser.runtime.vad.SegmenterConfig`, its defaults too).
OPTIONS = ("threshold", "min_speech", "min_silence", "speech_pad", "max_segment")


@dataclass(frozen=True)
class SessionStart:
    """A validated ``session.start``."""

    format: str
    sample_rate: int
    options: SegmenterConfig


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError("bad_session", f"{name} must be a finite number, got {value!r}")
    return float(value)


def parse_message(text: str) -> dict[str, Any]:
    """A text message as a JSON object with a string ``type`` (else ``bad_message``)."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("bad_message", "text messages must be JSON objects") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("bad_message", 'text messages must be JSON objects with a "type"')
    return obj


def parse_session_start(text: str, window: float) -> SessionStart:
    """Validate the first message (``window``: the model's longest segment, seconds)."""
    try:
        obj = parse_message(text)
    except ProtocolError as e:
        raise ProtocolError(
            "bad_session", f"the first message must be session.start: {e.message}"
        ) from None
    if obj["type"] != "session.start":
        raise ProtocolError(
            "bad_session", f"the first message must be session.start, got {obj['type'][:40]!r}"
        )
    unknown = sorted(set(obj) - {"type", "format", "sample_rate", "options"})
    if unknown:
        raise ProtocolError("bad_session", f"unknown session.start fields {unknown[:5]}")
    fmt = obj.get("format", "pcm_s16le")
    if fmt not in FORMATS:
        raise ProtocolError(
            "bad_session", f"format must be one of {sorted(FORMATS)}, got {str(fmt)[:40]!r}"
        )
    rate = obj.get("sample_rate", 16_000)
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError(
            "bad_session",
            f"sample_rate must be an integer in {MIN_RATE}-{MAX_RATE}, got {str(rate)[:40]}",
        )
    raw = obj.get("options", {})
    if not isinstance(raw, dict):
        raise ProtocolError("bad_session", "options must be an object")
    names = set(OPTIONS)
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ProtocolError(
            "bad_session", f"unknown options {unknown[:5]} (known: {', '.join(sorted(names))})"
        )
    values = {k: _number(v, k) for k, v in raw.items()}
    opts = SegmenterConfig(**values)
    if not 0.0 < opts.threshold < 1.0:
        raise ProtocolError("bad_session", f"threshold must be in (0, 1), got {opts.threshold}")
    for name, (lo, hi) in OPTION_BOUNDS.items():
        v = getattr(opts, name)
        if not lo <= v <= hi:
            raise ProtocolError("bad_session", f"{name} must be in [{lo:g}, {hi:g}], got {v:g}")
    if not opts.min_speech < opts.max_segment <= window:
        raise ProtocolError(
            "bad_session",
            f"max_segment must be in ({opts.min_speech:g}, "
            f"{window:g}] (the model's window), got {opts.max_segment:g}",
        )
    return SessionStart(format=fmt, sample_rate=rate, options=opts)


def decode_frame(data: bytes, fmt: str) -> np.ndarray:
    """A binary frame's samples as float32 in [-1, 1] (``pcm_s16le``: ``x / 32768``, as
    ``edgeser stream -`` reads stdin); ``bad_audio`` for a partial sample or NaN/inf."""
    width = FORMATS[fmt]
    if not data:
        raise ProtocolError("bad_audio", "empty audio frame")
    if len(data) % width:
        raise ProtocolError(
            "bad_audio", f"{fmt} frames hold whole {width}-byte samples; got {len(data)} bytes"
        )
    if fmt == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    x = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(x).all():
        raise ProtocolError("bad_audio", "f32le frame holds NaN or infinite samples")
    return x


def encode_frame(samples: np.ndarray, fmt: str) -> bytes:
    """float32 samples as a binary frame (the inverse of :func:`decode_frame`)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if fmt == "pcm_s16le":
        return (np.clip(np.round(x * 32768.0), -32768, 32767)).astype("<i2").tobytes()
    if fmt == "f32le":
        return x.astype("<f4").tobytes()
    raise EdgeserError(f"unknown sample format {fmt!r} (choose {', '.join(FORMATS)})")
