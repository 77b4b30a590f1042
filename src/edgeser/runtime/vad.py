"""Voice activity detection for streaming: frame classifiers and a streaming segmenter.

* :class:`SileroVAD` runs Silero VAD's ONNX file with onnxruntime directly (512-sample
  windows at 16 kHz, a 64-sample context carried from the previous window and the
  recurrent state ``[2, 1, 128]``, as the ``silero-vad`` package's ``OnnxWrapper`` does).
  edgeser ships that file (``runtime/assets/silero_vad.onnx``, MIT licence, kept with its
  notice in ``LICENSE.silero-vad``): the ``silero-vad`` package depends on torch, and the
  torch-free runtime install, the CLI and the browser page use this one file.
* :class:`WebRtcVAD` wraps ``webrtcvad`` (30 ms frames, aggressiveness 2), the fallback.
* :class:`SpeechSegmenter` turns per-frame speech probabilities into speech segments with
  the hysteresis of silero's ``get_speech_timestamps`` (threshold, ``neg_threshold =
  threshold - 0.15``, minimum speech, minimum silence, speech padding), but online: a
  segment is returned as soon as it closes, and one longer than ``max_segment`` is cut.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeser.core.errors import EdgeserError

log = logging.getLogger(__name__)

VAD_RATE = 16_000
SILERO_FILE = "silero_vad.onnx"
#: Silero VAD's ONNX file as edgeser ships it (silero-vad 6.2.3's ``data/silero_vad.onnx``).
BUNDLED_SILERO = Path(__file__).with_name("assets") / SILERO_FILE


class FrameVAD(Protocol):
    """A frame classifier: ``frame_size`` samples at 16 kHz in, speech probability out."""

    name: str
    frame_size: int

    def __call__(self, frame: np.ndarray) -> float: ...

    def reset(self) -> None: ...


def find_silero_onnx() -> Path | None:
    """Silero VAD's ONNX file: the one edgeser ships (:data:`BUNDLED_SILERO`), else the one
    in an installed ``silero-vad`` package, else None."""
    if BUNDLED_SILERO.is_file():
        return BUNDLED_SILERO
    return package_silero_onnx()


def package_silero_onnx() -> Path | None:
    """The ``silero_vad.onnx`` of the installed ``silero-vad`` package, or None.

    Uses the import machinery's spec only, so neither ``silero_vad`` nor torch is imported.
    """
    try:
        spec = importlib.util.find_spec("silero_vad")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / SILERO_FILE
        if path.is_file():
            return path
    return None


class SileroVAD:
    """Silero VAD v5/v6 (ONNX) run with onnxruntime; one 512-sample window per call."""

    name = "silero"
    frame_size = 512
    context_size = 64

    def __init__(self, path: str | Path | None = None) -> None:
        import onnxruntime as ort

        p = Path(path) if path is not None else find_silero_onnx()
        if p is None or not p.is_file():
            raise EdgeserError(
                f"Silero VAD model not found ({BUNDLED_SILERO} is missing from "
                "this installation; reinstall edgeser, or use --vad webrtc)"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(p), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's own exception types
            raise EdgeserError(f"{p}: cannot load the Silero VAD model ({e})") from None
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise EdgeserError(f"{p}: unexpected Silero VAD inputs {sorted(names)}")
        self.path = p
        self._sr = np.array(VAD_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget the recurrent state and the context (start of a new stream)."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, self.context_size), dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        x = np.asarray(frame, dtype=np.float32).reshape(1, -1)
        if x.shape[1] != self.frame_size:
            raise ValueError(f"Silero VAD takes {self.frame_size} samples, got {x.shape[1]}")
        x = np.concatenate([self._context, x], axis=1)
        out, state = self.session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._state = state
        self._context = x[:, -self.context_size :]
        return float(out.reshape(-1)[0])


class WebRtcVAD:
    """WebRTC VAD on 30 ms (480-sample) frames; returns 1.0 for speech, 0.0 otherwise."""

    name = "webrtc"
    frame_size = 480

    def __init__(self, aggressiveness: int = 2) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise EdgeserError(f"WebRTC VAD aggressiveness must be 0-3, got {aggressiveness}")
        self._ext = _load_webrtcvad()
        self._vad = self._ext.create()
        self._ext.init(self._vad)
        self._ext.set_mode(self._vad, int(aggressiveness))

    def reset(self) -> None:
        """WebRTC VAD keeps no state the stream needs to forget."""

    def __call__(self, frame: np.ndarray) -> float:
        x = np.asarray(frame, dtype=np.float32)
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return 1.0 if self._ext.process(self._vad, VAD_RATE, pcm, len(pcm) // 2) else 0.0


def _load_webrtcvad() -> Any:
    """The ``_webrtcvad`` C extension behind the ``webrtcvad`` package.

    It is used directly because ``webrtcvad`` 2.0.10's Python wrapper imports
    ``pkg_resources``, which recent setuptools no longer ship (the extension is the same
    in ``webrtcvad-wheels``).
    """
    try:
        import _webrtcvad
    except ImportError:
        raise EdgeserError(
            "WebRTC VAD needs the webrtcvad package (pip install edgeser[runtime])"
        ) from None
    return _webrtcvad


def make_vad(kind: str = "silero", *, aggressiveness: int = 2) -> FrameVAD:
    """``"silero"`` (falls back to WebRTC with a warning when the ONNX file is missing) or
    ``"webrtc"``."""
    if kind == "silero":
        path = find_silero_onnx()
        if path is not None:
            return SileroVAD(path)
        log.warning(
            "Silero VAD model not found (%s is missing from this installation): using WebRTC VAD",
            BUNDLED_SILERO,
        )
        return WebRtcVAD(aggressiveness)
    if kind == "webrtc":
        return WebRtcVAD(aggressiveness)
    raise EdgeserError(f"unknown VAD {kind!r} (choose silero or webrtc)")


@dataclass(frozen=True)
class SegmenterConfig:
    """Hysteresis settings, in seconds (silero's ``get_speech_timestamps`` defaults)."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # default: max(threshold - 0.15, 0.01)
    min_speech: float = 0.25
    min_silence: float = 0.1
    speech_pad: float = 0.03
    max_segment: float = 10.0

    def validate(self) -> SegmenterConfig:
        """Raise :class:`EdgeserError` for settings that make no sense."""
        if not 0.0 < self.threshold < 1.0:
            raise EdgeserError(f"--threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None and not 0.0 < self.neg_threshold <= self.threshold:
            raise EdgeserError(
                f"negative threshold must be in (0, threshold], got {self.neg_threshold}"
            )
        for name in ("min_speech", "min_silence", "speech_pad"):
            v = getattr(self, name)
            if not (v >= 0.0 and np.isfinite(v)):
                raise EdgeserError(f"--{name.replace('_', '-')} must be >= 0, got {v}")
        if not (self.max_segment > 0.0 and np.isfinite(self.max_segment)):
            raise EdgeserError(f"--max-segment must be > 0, got {self.max_segment}")
        if self.max_segment <= self.min_speech:
            raise EdgeserError(
                f"--max-segment ({self.max_segment}) must exceed --min-speech ({self.min_speech})"
            )
        return self


class SpeechSegmenter:
    """Online speech segmentation from per-frame probabilities (sample units at 16 kHz).

    Feed one probability per ``frame_size`` frame with :meth:`push`; it returns the
    ``(start, end)`` sample bounds of a segment when one closes (after ``min_silence`` of
    frames below the negative threshold, or when it reaches ``max_segment``). Call
    :meth:`finish` with the stream's length at the end. Bounds include ``speech_pad`` on
    each side, never reaching back before the previous segment's end; a segment cut at
    ``max_segment`` has no end padding and the next one starts where it stopped.
    """

    def __init__(
        self, frame_size: int, config: SegmenterConfig | None = None, sample_rate: int = VAD_RATE
    ) -> None:
        cfg = (config or SegmenterConfig()).validate()
        self.config = cfg
        self.frame_size = int(frame_size)
        self.threshold = cfg.threshold
        self.neg_threshold = (
            cfg.neg_threshold if cfg.neg_threshold is not None else max(cfg.threshold - 0.15, 0.01)
        )
        self.min_speech = round(cfg.min_speech * sample_rate)
        self.min_silence = round(cfg.min_silence * sample_rate)
        self.pad = round(cfg.speech_pad * sample_rate)
        self.max_segment = max(round(cfg.max_segment * sample_rate), self.frame_size)
        self.reset()

    def reset(self) -> None:
        self.frames = 0  # frames pushed so far
        self.triggered = False
        self.start = 0  # raw (unpadded) start of the open segment
        self.temp_end = 0  # start of the current run of silent frames, 0 if none
        self.prev_end = 0  # padded end of the last emitted segment
        self.forced = False  # the open segment continues a segment cut at max_segment

    @property
    def position(self) -> int:
        """Samples consumed so far (``frames * frame_size``)."""
        return self.frames * self.frame_size

    def keep_from(self) -> int:
        """The earliest sample a future segment can still include (older audio can go)."""
        if self.triggered:
            return self._padded_start()
        return max(self.prev_end, self.position - self.pad)

    def _padded_start(self) -> int:
        if self.forced:
            return self.start
        return max(self.prev_end, self.start - self.pad, 0)

    def _emit(self, end: int, *, pad_end: bool, limit: int) -> tuple[int, int] | None:
        start = self._padded_start()
        raw = end - self.start
        self.triggered = False
        self.temp_end = 0
        forced_before = self.forced
        self.forced = False
        if raw <= self.min_speech and not forced_before:
            return None
        stop = min(end + self.pad, limit) if pad_end else end
        self.prev_end = stop
        return start, stop

    def push(self, prob: float) -> tuple[int, int] | None:
        """Consume one frame's speech probability; return a closed segment or None."""
        cur = self.position
        self.frames += 1
        end_of_frame = self.position
        if prob >= self.threshold and self.temp_end:
            self.temp_end = 0
        if prob >= self.threshold and not self.triggered:
            self.triggered = True
            self.start = cur
            self.forced = False
            return None
        if not self.triggered:
            return None
        if end_of_frame + self.frame_size - self._padded_start() > self.max_segment:
            # Cut here; if speech goes on, the next segment starts at this very sample.
            seg = self._emit(end_of_frame, pad_end=False, limit=end_of_frame)
            if prob >= self.neg_threshold:
                self.triggered = True
                self.start = end_of_frame
                self.forced = True
            return seg
        if prob < self.neg_threshold:
            if not self.temp_end:
                self.temp_end = cur
            if cur - self.temp_end >= self.min_silence:
                return self._emit(self.temp_end, pad_end=True, limit=end_of_frame)
        return None

    def finish(self, total_samples: int) -> tuple[int, int] | None:
        """End of stream at ``total_samples``: close the open segment, if any."""
        if not self.triggered:
            return None
        end = min(total_samples, self.position)
        if end <= self.start:  # a continuation that starts at the very end
            self.triggered = False
            self.forced = False
            return None
        if self.temp_end:
            return self._emit(self.temp_end, pad_end=True, limit=end)
        return self._emit(end, pad_end=False, limit=end)
