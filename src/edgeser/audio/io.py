"""Audio I/O: read any format soundfile reads, downmix to mono, resample with soxr.

Every processing step in edgeser follows one contract,
``f(signal: np.ndarray, sample_rate: int) -> np.ndarray``, on float32 mono
signals. This module only imports numpy, soundfile and soxr so that the light
runtime install (``pip install edgeser[runtime]``) can use it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edgeser.core.errors import AudioError

#: The sample rate every model in edgeser works at (its one definition: import it from here).
SAMPLE_RATE = 16_000
#: Sample rates an input may have; outside this range resampling is refused as absurd.
MIN_INPUT_RATE = 1_000
MAX_INPUT_RATE = 768_000


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding the audio."""

    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate > 0 else 0.0


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read frames, sample rate and channel count from the header of ``path``.

    Raises :class:`AudioError` when the file cannot be opened as audio.
    """
    try:
        info = sf.info(os.fspath(path))
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise AudioError(f"{path}: unreadable audio ({error_summary(e)})") from None
    return AudioInfo(
        frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels)
    )


def check_sample_rate(sample_rate: int, what: str = "input") -> int:
    """Return ``sample_rate`` as an int, or raise :class:`AudioError` if it cannot be resampled."""
    try:
        sr = int(sample_rate)
    except (TypeError, ValueError):
        raise AudioError(f"{what}: invalid sample rate {sample_rate!r}") from None
    if not MIN_INPUT_RATE <= sr <= MAX_INPUT_RATE:
        raise AudioError(
            f"{what}: cannot resample from {sample_rate} Hz (supported: "
            f"{MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz)"
        )
    return sr


def to_mono(signal: np.ndarray) -> np.ndarray:
    """Average the channels of a ``[frames, channels]`` array (no-op for 1-D input)."""
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    elif x.ndim != 1:
        raise AudioError(f"expected a 1-D or [frames, channels] signal, got shape {x.shape}")
    return x


def resample(signal: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float signal with soxr (high quality); no-op at the target rate."""
    x = np.asarray(signal, dtype=np.float32)
    if sample_rate <= 0:
        raise AudioError(f"invalid sample rate {sample_rate}")
    if sample_rate == target_rate or x.size == 0:
        return x
    return soxr.resample(x, sample_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike[str], target_rate: int = SAMPLE_RATE, *, allow_empty: bool = False
) -> np.ndarray:
    """Load ``path`` as float32 mono at ``target_rate`` (downmixed, soxr-resampled).

    Raises :class:`AudioError` for unreadable files and, unless ``allow_empty``, for
    files that hold no audio.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file")
    return _decode(os.fspath(p), p, target_rate, allow_empty)


def decode_audio(
    data: bytes,
    name: str | os.PathLike[str],
    target_rate: int = SAMPLE_RATE,
    *,
    allow_empty: bool = False,
) -> np.ndarray:
    """:func:`load_audio` of a file's bytes (read elsewhere: a worker without the file
    system the file lives on); ``name`` names it in errors. Same samples as
    :func:`load_audio` of the file."""
    return _decode(io.BytesIO(data), Path(name), target_rate, allow_empty)


def _decode(source: str | io.BytesIO, p: Path, target_rate: int, allow_empty: bool) -> np.ndarray:
    try:
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise AudioError(f"{p}: unreadable audio ({error_summary(e)})") from None
    if data.shape[0] == 0 and not allow_empty:
        raise AudioError(f"{p}: file holds no audio")
    return resample(to_mono(data), int(sr), target_rate)


def error_summary(e: BaseException) -> str:
    """The last line of an I/O library's error message (the informative one)."""
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__
