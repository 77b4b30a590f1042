"""The eGeMAPS baseline (Eyben et al. 2016): openSMILE's eGeMAPSv02 functionals and a
linear classifier.

:class:`EGeMAPSFrontEnd` is a :class:`~edgeser.models.registry.FeatureEncoder`: it maps each
16 kHz waveform to the 88 eGeMAPSv02 functionals that the
``opensmile`` package computes (``FeatureSet.eGeMAPSv02``, ``FeatureLevel.Functionals``:
pitch, jitter, shimmer, loudness, HNR, formants, spectral slopes, MFCC 1-4, rates of
voiced segments, ... as means, deviations and percentiles over the utterance). The
features go through the feature cache like any encoder's (kind ``functionals``).

The signal is the one openSMILE is designed for: resampled to 16 kHz, mono, trimmed of
leading and trailing silence, without the pre-emphasis and peak normalisation of the
shared front end (:func:`edgeser.models.registry.signal_front_end`). Pre-emphasis tilts the
spectral balance that the alpha ratio, Hammarberg index and spectral slopes measure; peak
normalisation removes the level the loudness descriptors carry. On 12 real RAVDESS actors
(6 speaker-disjoint folds) the shared front end cost the classifier 5-10 points of UA.

openSMILE is C++ code called through its Python wrapper; it is not a graph that ONNX can
hold, so an ``egemaps`` model is not exportable (``edgeser export`` says so in one line).

:class:`LinearClassifier` is the trained model: a standardisation (the training
utterances' mean and deviation of every functional, stored with the weights, for
``--feature-norm global``; identity otherwise) and one linear layer whose softmax is the
multinomial logistic regression that :mod:`edgeser.training.linear` fits with scikit-learn.
Its coefficients are saved as safetensors like every other model's weights (no pickles).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeser.audio.io import SAMPLE_RATE
from edgeser.core.errors import EdgeserError
from edgeser.models.lightsernet import as_waveform

__all__ = ["EGEMAPS_NUM_FEATURES", "EGeMAPSFrontEnd", "LinearClassifier"]

#: Functionals of the eGeMAPSv02 set.
EGEMAPS_NUM_FEATURES = 88
#: Shorter inputs are zero-padded to this many samples first: openSMILE's pitch and formant
#: analysis windows need about 60 ms of signal to produce any frame (0.25 s leaves margin).
_MIN_SAMPLES = 4_000


class EGeMAPSFrontEnd:
    """openSMILE eGeMAPSv02 functionals as an encoder-like object for the feature cache.

    ``encode(waves)`` gives each wave's ``[88]`` float32 functionals (``num_features``);
    ``identity`` names the feature set and the openSMILE version that computed them, so
    an upgrade never reuses stale cache entries. Inputs shorter than 0.25 s are
    zero-padded to it; a functional openSMILE leaves undefined (no voiced frame at all) is
    stored as 0.
    """

    source = "egemaps"
    is_random = False
    precision = "fp32"
    num_features = EGEMAPS_NUM_FEATURES

    def __init__(self) -> None:
        try:
            import opensmile
        except ImportError:  # pragma: no cover - part of the train extra
            raise EdgeserError(
                "--model egemaps needs the opensmile package: pip install 'edgeser[train]'"
            ) from None
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.feature_names: list[str] = list(self._smile.feature_names)
        if len(self.feature_names) != EGEMAPS_NUM_FEATURES:
            raise EdgeserError(
                f"opensmile {opensmile.__version__}: eGeMAPSv02 has "
                f"{len(self.feature_names)} functionals, expected 88"
            )
        payload = f"egemaps-v02-functionals|opensmile={opensmile.__version__}|sr={SAMPLE_RATE}"
        self.identity = hashlib.sha256(payload.encode()).hexdigest()[:16]
        self.version = str(opensmile.__version__)

    def __repr__(self) -> str:
        return f"EGeMAPSFrontEnd(identity={self.identity}, opensmile={self.version})"

    def encode(self, waves: Sequence[Any]) -> list[torch.Tensor]:
        """``[88]`` float32 functionals per (resampled, trimmed, 16 kHz) wave."""
        out = []
        for i, w in enumerate(waves):
            x = as_waveform(w, i).astype(np.float32)
            if x.shape[0] < _MIN_SAMPLES:
                x = np.concatenate([x, np.zeros(_MIN_SAMPLES - x.shape[0], np.float32)])
            values = self._smile.process_signal(x, SAMPLE_RATE).to_numpy(np.float32)
            feats = np.nan_to_num(values.reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
            out.append(torch.from_numpy(feats.copy()))
        return out


class LinearClassifier(nn.Module):
    """``functionals [B, F] -> logits [B, C]``: ``(x - mean) / std`` then one linear layer.

    ``mean`` and ``std`` are buffers (saved with the weights, not parameters): identity
    until :meth:`set_standardization` fills them. The parameter count is that of the
    linear layer, ``F · C + C``.
    """

    def __init__(self, num_features: int = EGEMAPS_NUM_FEATURES, num_classes: int = 4) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.linear = nn.Linear(num_features, num_classes)

    def set_standardization(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.asarray(std), dtype=torch.float32))

    def set_weights(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Coefficients ``[C, F]`` and intercepts ``[C]`` (scikit-learn's ``coef_``,
        ``intercept_``), applied to standardised inputs."""
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(coef, dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[-1] != self.mean.shape[0]:
            raise ValueError(
                f"expected functionals [batch, {self.mean.shape[0]}], got {tuple(x.shape)}"
            )
        return self.linear(self.standardize(x.float()))
