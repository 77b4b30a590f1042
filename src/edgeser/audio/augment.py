"""Training-time augmentation, built on audiomentations.

Applied *after* the pre-processing and not re-normalised afterwards (a gain
applied before peak normalisation would be undone by it), as the paper does.
Each transform has its own probability and range, all in :class:`AugmentConfig`.

Reproducibility: audiomentations draws from Python's ``random`` and numpy's
legacy global generator. :class:`Augmenter` seeds both from the seed it is given
for each call and restores their previous state afterwards, so a call with the
same ``(signal, seed)`` always gives the same output and the caller's global RNG
state is left as it was.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the four augmentations (the paper's set).

    Gaussian noise is specified as a signal-to-noise ratio, so its strength is
    relative to each utterance rather than an absolute amplitude.
    """

    gain_p: float = 0.5
    gain_min_db: float = -18.0
    gain_max_db: float = 6.0
    noise_p: float = 0.5
    noise_min_snr_db: float = 15.0
    noise_max_snr_db: float = 40.0
    pitch_p: float = 0.5
    pitch_min_semitones: float = -2.0
    pitch_max_semitones: float = 2.0
    polarity_p: float = 0.5

    def key(self) -> str:
        """A stable string naming these settings (for cache keys)."""
        return ",".join(f"{k}={v:g}" for k, v in asdict(self).items())


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed ``random`` and ``np.random`` for the block, then restore their state."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class Augmenter:
    """``f(signal, sample_rate, seed) -> signal`` applying the configured transforms."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        from audiomentations import (
            AddGaussianSNR,
            Compose,
            Gain,
            PitchShift,
            PolarityInversion,
        )

        self.config = config or AugmentConfig()
        c = self.config
        self._compose = Compose(
            [
                Gain(min_gain_db=c.gain_min_db, max_gain_db=c.gain_max_db, p=c.gain_p),
                AddGaussianSNR(
                    min_snr_db=c.noise_min_snr_db, max_snr_db=c.noise_max_snr_db, p=c.noise_p
                ),
                PitchShift(
                    min_semitones=c.pitch_min_semitones,
                    max_semitones=c.pitch_max_semitones,
                    p=c.pitch_p,
                ),
                PolarityInversion(p=c.polarity_p),
            ]
        )

    def __call__(self, signal: np.ndarray, sample_rate: int, seed: int = 0) -> np.ndarray:
        x = np.asarray(signal, dtype=np.float32)
        if x.size == 0:
            return x.copy()
        with seeded_global_rngs(seed):
            y = self._compose(samples=x, sample_rate=sample_rate)
        y = np.asarray(y, dtype=np.float32)
        if not np.all(np.isfinite(y)):
            # Noise at an SNR relative to a silent signal, or pitch shift of a
            # degenerate signal, must not inject NaN into training.
            y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        return y
