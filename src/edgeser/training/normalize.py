"""Feature normalisation for SSL-encoder models (Pepino et al. 2021) and for one feature
vector per utterance (eGeMAPS functionals: :func:`row_stats`, :func:`standardize`).

Cached features are per-utterance, per-layer frame statistics ``[L, 2D]`` (mean ‖ std
over frames, see :mod:`edgeser.features`). Standardising every frame with a layer's
mean ``μ`` and deviation ``σ`` is affine, so the pooled statistics of the normalised
frames follow exactly from the cached ones: mean → ``(m - μ) / σ``, std → ``s / σ``.

The statistics of a group of utterances (a speaker's, or a training set's) are
frame-level: ``μ = avg(m)``, ``σ² = avg(s² + m²) - μ²``, with every utterance weighted
equally (so a few long utterances do not dominate a speaker's statistics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["group_stats", "normalize_pooled", "row_stats", "standardize"]

_VAR_EPS = 1e-6


def group_stats(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Frame-level per-layer mean and std ``[L, D]`` of utterances given as ``[L, 2D]``."""
    if not len(arrays):
        raise ValueError("statistics need at least one utterance")
    x = np.stack([np.asarray(a, dtype=np.float64) for a in arrays])  # [N, L, 2D]
    d = x.shape[-1] // 2
    m, s = x[..., :d], x[..., d:]
    mu = m.mean(axis=0)
    var = (s * s + m * m).mean(axis=0) - mu * mu
    std = np.sqrt(np.maximum(var, 0.0) + _VAR_EPS)
    return mu.astype(np.float32), std.astype(np.float32)


def normalize_pooled(array: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The pooled ``[L, 2D]`` statistics of the utterance's frames after standardisation."""
    d = mean.shape[-1]
    out = np.empty_like(array, dtype=np.float32)
    out[..., :d] = (array[..., :d] - mean) / std
    out[..., d:] = array[..., d:] / std
    return out


def row_stats(arrays: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and deviation ``[F]`` over utterances of per-utterance vectors ``[F]`` (a
    constant feature gets deviation ``sqrt(1e-6)``, so standardising it gives 0)."""
    if not len(arrays):
        raise ValueError("statistics need at least one utterance")
    x = np.stack([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])
    return x.mean(axis=0), np.sqrt(x.var(axis=0) + _VAR_EPS)


def standardize(array: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(array - mean) / std`` as float32."""
    return ((np.asarray(array, np.float64) - mean) / std).astype(np.float32)
