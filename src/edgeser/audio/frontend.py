"""The paper's pre-processing, applied to every utterance, train and test alike.

1. trim leading/trailing silence at 20 dB below the peak frame (the semantics of
   ``librosa.effects.trim(top_db=20)``: RMS over 2048-sample frames, hop 512,
   centred with zero padding, reference = loudest frame);
2. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]``;
3. peak normalisation to ``max |y| = 1``.

The trim is written here in numpy rather than called from librosa because the
deployed runtime (``edgeser[runtime]``) must not pull in librosa and numba; a test
checks that it matches librosa sample for sample.

Edge cases are defined, never NaN: empty input stays empty; a signal that is
silent (all zeros) is kept whole by the trim (as librosa does: every frame is
0 dB relative to a zero reference) and left at zero by the normalisation; a
one-sample signal is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_DB = 20.0
FRAME_LENGTH = 2048
HOP_LENGTH = 512
PREEMPHASIS = 0.97
_AMIN = 1e-5


def trim_bounds(
    signal: np.ndarray,
    top_db: float = TOP_DB,
    frame_length: int = FRAME_LENGTH,
    hop_length: int = HOP_LENGTH,
) -> tuple[int, int]:
    """``(start, end)`` sample bounds of the non-silent part, as librosa computes them."""
    x = np.asarray(signal, dtype=np.float32)
    n = x.shape[-1]
    if n == 0:
        return 0, 0
    pad = frame_length // 2
    padded = np.pad(x.astype(np.float64), (pad, pad), mode="constant")
    n_frames = 1 + (padded.shape[0] - frame_length) // hop_length
    # Frame power via a cumulative sum of squares: O(n) instead of O(n * frame_length).
    csum = np.concatenate([[0.0], np.cumsum(padded * padded)])
    starts = np.arange(n_frames) * hop_length
    power = (csum[starts + frame_length] - csum[starts]) / frame_length
    power = np.maximum(power, 0.0)  # cumsum round-off
    rms = np.sqrt(power)
    ref = rms.max()
    db = 20.0 * np.log10(np.maximum(_AMIN, rms)) - 20.0 * np.log10(max(_AMIN, ref))
    nonsilent = np.flatnonzero(db > -top_db)
    if nonsilent.size == 0:
        return 0, 0
    start = int(nonsilent[0] * hop_length)
    end = min(n, int((nonsilent[-1] + 1) * hop_length))
    return start, end


def trim_silence(signal: np.ndarray, sample_rate: int, top_db: float = TOP_DB) -> np.ndarray:
    """Remove leading and trailing silence (``top_db`` below the loudest frame)."""
    start, end = trim_bounds(signal, top_db=top_db)
    return np.asarray(signal, dtype=np.float32)[start:end]


def preemphasis(signal: np.ndarray, sample_rate: int, coef: float = PREEMPHASIS) -> np.ndarray:
    """``y[n] = x[n] - coef * x[n-1]`` with ``y[0] = x[0]``."""
    x = np.asarray(signal, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - np.float32(coef) * x[:-1]
    return y


def peak_normalize(signal: np.ndarray, sample_rate: int, eps: float = 1e-8) -> np.ndarray:
    """Scale to ``max |y| = 1``; a signal whose peak is below ``eps`` is returned as is."""
    x = np.asarray(signal, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    peak = float(np.max(np.abs(x)))
    if not np.isfinite(peak):
        raise ValueError("signal contains NaN or infinite samples")
    if peak < eps:
        return x.copy()
    return (x / np.float32(peak)).astype(np.float32)


@dataclass(frozen=True)
class FrontEnd:
    """The pre-processing chain with its settings (part of every cache key)."""

    trim: bool = True
    top_db: float = TOP_DB
    preemphasis: float = PREEMPHASIS
    normalize: bool = True

    def __call__(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        x = np.asarray(signal, dtype=np.float32)
        if self.trim:
            x = trim_silence(x, sample_rate, top_db=self.top_db)
        if self.preemphasis:
            x = preemphasis(x, sample_rate, coef=self.preemphasis)
        if self.normalize:
            x = peak_normalize(x, sample_rate)
        return x

    def key(self) -> str:
        """A stable string naming these settings (for cache keys and sidecars)."""
        return (
            f"trim={int(self.trim)},top_db={self.top_db:g},"
            f"pre={self.preemphasis:g},peak={int(self.normalize)}"
        )


def preprocess(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """The paper's default pre-processing (trim 20 dB, pre-emphasis 0.97, peak norm)."""
    return FrontEnd()(signal, sample_rate)
