"""Calibration audio for the 8-bit models: a self-contained speech-like generator (so that
the default calibration never changes with other modules) and the runtime's trimming of
a user's files. numpy and soundfile only: the command line builds ``edgeser export``'s
parser in the torch-free runtime install (the quantiser's reader is in
:mod:`edgeser.exporting.quantize`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeser.audio.frontend import trim_silence
from edgeser.audio.io import SAMPLE_RATE, load_audio
from edgeser.core.errors import EdgeserError

__all__ = ["calibration_waves", "speech_like"]


_VOWELS = (
    (730, 1090, 2440),
    (270, 2290, 3010),
    (530, 1840, 2480),
    (570, 840, 2410),
    (300, 870, 2240),
    (660, 1720, 2410),
    (440, 1020, 2240),
)


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A deterministic speech-like signal: voiced syllables with moving formants, fricative
    noise, pauses, a varying pitch and level (self-contained, so calibration never changes
    with other modules)."""
    n = max(int(seconds * SAMPLE_RATE), 1)
    t = np.arange(n) / SAMPLE_RATE
    f0_base = rng.uniform(90.0, 260.0)
    f0 = f0_base * 2 ** (
        (rng.uniform(2, 6) * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t) + rng.normal(0, 0.5))
        / 12
    )
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    rate = rng.uniform(3.0, 6.0)  # syllables per second
    syllable = np.floor(t * rate).astype(int)
    vowels = rng.integers(0, len(_VOWELS), syllable.max() + 1)
    formants = np.array([_VOWELS[v] for v in vowels], dtype=np.float64)[syllable]
    formants *= rng.uniform(0.9, 1.2)
    voiced = np.zeros(n)
    for k in range(1, 60):
        freq = k * f0
        gain = (
            sum(
                np.exp(-(((freq - formants[:, j]) / (80.0 + 40 * j)) ** 2)) / (j + 1)
                for j in range(3)
            )
            + 0.02
        )
        voiced += gain * np.sin(k * phase) * (freq < 7800) / k**0.5
    pos = t * rate - syllable  # position inside the syllable, 0..1
    envelope = np.sin(np.pi * np.clip((pos - 0.15) / 0.75, 0, 1)) ** 2
    envelope *= rng.random(syllable.max() + 1)[syllable] > 0.15  # some pauses
    noise = rng.standard_normal(n) * (pos < 0.15) * rng.uniform(0.05, 0.3)
    level = 10 ** (rng.uniform(-20.0, 0.0) / 20)
    signal = voiced * envelope + noise + 0.003 * rng.standard_normal(n)
    return (0.9 * level * signal / np.abs(signal).max()).astype(np.float32)


def calibration_waves(
    paths: Sequence[str | Path] | None = None,
    *,
    trim: bool = True,
    top_db: float = 20.0,
    count: int = 12,
    seed: int = 1234,
) -> list[np.ndarray]:
    """Calibration audio as the runtime feeds it (16 kHz, trimmed), deterministic.

    ``paths``: audio files to use; otherwise ``count`` speech-like signals of 1–4 s
    (:func:`speech_like`, fixed ``seed``).
    """
    waves: list[np.ndarray] = []
    if paths:
        for p in paths:
            waves.append(load_audio(p, SAMPLE_RATE))
    else:
        rng = np.random.default_rng(seed)
        waves = [speech_like(float(rng.uniform(1.0, 4.0)), rng) for _ in range(count)]
    if trim:
        waves = [trim_silence(w, SAMPLE_RATE, top_db=top_db) for w in waves]
    waves = [w for w in waves if len(w)]
    if not waves:
        raise EdgeserError("no usable calibration audio (all files empty or silent)")
    return waves
