"""Audio as a stream of 16 kHz blocks, and the speech segments a VAD finds in it.

Memory stays bounded whatever the input length: a file is read in blocks
(:func:`file_blocks`, resampled chunk by chunk with a streaming ``soxr.ResampleStream``),
stdin as raw 16 kHz 16-bit little-endian mono PCM (:func:`pcm_blocks`), an array in memory
as slices (:func:`array_blocks`), and :func:`speech_segments` keeps only the audio of the
open speech segment (at most ``max_segment`` plus padding) and a short pre-roll. Used by
``edgeser stream`` and by the model for inputs longer than its window.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgeser.audio.io import SAMPLE_RATE, check_sample_rate, error_summary
from edgeser.core.errors import AudioError
from edgeser.runtime.vad import FrameVAD, SegmenterConfig, SpeechSegmenter

log = logging.getLogger(__name__)

#: Default block length read from the input, in seconds of input audio.
BLOCK_SECONDS = 0.5


def file_blocks(
    path: str | os.PathLike[str],
    block_seconds: float = BLOCK_SECONDS,
    target_rate: int = SAMPLE_RATE,
    reader: Callable[[object, int], np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``path`` as float32 mono blocks at ``target_rate``, never loading it whole.

    Each read asks for at most ``block_seconds`` of input frames; channels are averaged
    and a ``soxr.ResampleStream`` resamples across block boundaries. ``reader(sf_file,
    frames)`` replaces ``SoundFile.read`` (tests use it to watch the request sizes).
    Raises :class:`AudioError` for unreadable or empty files and unusable sample rates.
    """
    import soundfile as sf
    import soxr

    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file")
    try:
        f = sf.SoundFile(os.fspath(p))
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise AudioError(f"{p}: unreadable audio ({error_summary(e)})") from None
    with f:
        sr = check_sample_rate(f.samplerate, what=str(p))
        block = max(1, round(block_seconds * sr))
        rs = (
            soxr.ResampleStream(sr, target_rate, 1, dtype="float32", quality="HQ")
            if sr != target_rate
            else None
        )
        total = 0
        while True:
            try:
                data = (
                    reader(f, block)
                    if reader is not None
                    else f.read(block, dtype="float32", always_2d=True)
                )
            except (RuntimeError, sf.LibsndfileError, OSError) as e:
                raise AudioError(f"{p}: unreadable audio ({error_summary(e)})") from None
            n = len(data)
            total += n
            last = n < block
            x = np.asarray(data, dtype=np.float32)
            if not np.isfinite(x).all():  # a float WAV can hold NaN: no phantom segment
                at = (total - n + int(np.flatnonzero(~np.isfinite(x).all(axis=-1))[0])) / sr
                raise AudioError(f"{p}: audio contains NaN or infinite samples (at {at:.2f} s)")
            x = x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x
            if rs is not None:
                x = rs.resample_chunk(x, last=last)
            if x.size:
                yield np.ascontiguousarray(x, dtype=np.float32)
            if last:
                break
        if total == 0:
            raise AudioError(f"{p}: file holds no audio")


def pcm_blocks(
    stream: BinaryIO,
    block_seconds: float = BLOCK_SECONDS,
    name: str = "stdin",
) -> Iterator[np.ndarray]:
    """Yield raw 16 kHz 16-bit little-endian mono PCM from ``stream`` as float32 blocks.

    A trailing odd byte is dropped with a warning. Raises :class:`AudioError` when the
    stream holds no samples at all.
    """
    block_bytes = 2 * max(1, round(block_seconds * SAMPLE_RATE))
    carry = b""
    total = 0
    while True:
        chunk = stream.read(block_bytes - len(carry))
        if not chunk:
            break
        data = carry + chunk
        usable = len(data) - len(data) % 2
        carry = data[usable:]
        if usable:
            total += usable // 2
            yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
    if carry:
        log.warning("%s: dropped a trailing odd byte (input is not 16-bit PCM?)", name)
    if total == 0:
        raise AudioError(f"{name}: no audio (expected raw 16 kHz 16-bit little-endian mono PCM)")


def array_blocks(wave: np.ndarray, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """A 16 kHz waveform already in memory as blocks (views, no copies)."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    step = max(1, round(block_seconds * SAMPLE_RATE))
    for i in range(0, x.size, step):
        yield x[i : i + step]


class SpeechSplitter:
    """:func:`speech_segments` driven by pushes: :meth:`push` a 16 kHz block, get the speech
    segments it closed; :meth:`finish` at the end of the stream closes the last one.

    Holds what :func:`speech_segments` holds: the open segment (at most ``max_segment``),
    a ``speech_pad`` pre-roll and less than one VAD frame. ``vad`` is reset here and must
    not be shared with another stream while this one is open.
    """

    def __init__(self, vad: FrameVAD, config: SegmenterConfig | None = None) -> None:
        self.vad = vad
        self.segmenter = SpeechSegmenter(vad.frame_size, config)
        vad.reset()
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute sample index of _buf[0]
        self.total = 0  # samples pushed so far
        self.finished = False

    def _cut(self, bounds: tuple[int, int]) -> tuple[int, int, np.ndarray]:
        a, b = bounds
        return a, b, self._buf[a - self._buf_start : b - self._buf_start].copy()

    def push(self, block: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Consume a block; the ``(start, end, audio)`` segments it closed, in order."""
        if self.finished:
            raise ValueError("push after finish")
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return []
        seg, fs, out = self.segmenter, self.vad.frame_size, []
        self._buf = np.concatenate([self._buf, x])
        self.total += x.size
        while self.total - seg.position >= fs:
            off = seg.position - self._buf_start
            bounds = seg.push(self.vad(self._buf[off : off + fs]))
            if bounds is not None:
                out.append(self._cut(bounds))
        keep = min(seg.keep_from(), seg.position)
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start :]
            self._buf_start = keep
        return out

    def finish(self) -> list[tuple[int, int, np.ndarray]]:
        """End of stream: the last partial frame (zero-padded, as silero does) and the
        segment still open, if any."""
        if self.finished:
            return []
        self.finished = True
        seg, fs, total, out = self.segmenter, self.vad.frame_size, self.total, []
        if total - seg.position > 0:
            off = seg.position - self._buf_start
            frame = np.zeros(fs, dtype=np.float32)
            frame[: total - seg.position] = self._buf[off:]
            bounds = seg.push(self.vad(frame))
            if bounds is not None and min(bounds[1], total) > bounds[0]:
                out.append(self._cut((bounds[0], min(bounds[1], total))))
        bounds = seg.finish(total)
        if bounds is not None:
            out.append(self._cut(bounds))
        self._buf = np.zeros(0, dtype=np.float32)
        return out

    def open_start(self) -> int | None:
        """The start sample of the open segment once it is sure to be returned (it has
        lasted more than ``min_speech`` and is not in a silence run; a continuation of a
        segment cut at ``max_segment`` after its first frame), else None."""
        seg = self.segmenter
        if not seg.triggered or self.finished:
            return None
        lasted = seg.position - seg.start
        if (lasted > 0 and seg.forced) or (not seg.temp_end and lasted > seg.min_speech):
            return seg._padded_start()
        return None


def speech_segments(
    blocks: Iterable[np.ndarray],
    vad: FrameVAD,
    config: SegmenterConfig | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Split a 16 kHz block stream into speech segments: ``(start, end, audio)`` in samples.

    Only the audio a future segment can still use is buffered: the open segment (at most
    ``max_segment``), a ``speech_pad`` pre-roll, and less than one VAD frame.
    """
    splitter = SpeechSplitter(vad, config)
    for block in blocks:
        yield from splitter.push(block)
    yield from splitter.finish()
