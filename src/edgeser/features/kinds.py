"""Feature kinds: what the feature cache stores per utterance and what a model trains on.

One registry (:class:`FeatureKind`, a string enum, so that its values are what
``model.json`` and cache folders hold) instead of strings spelled in several modules;
:func:`feature_kind` picks the kind a config trains on.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from edgeser.core.errors import EdgeserError
from edgeser.models.registry import model_spec, normalization

__all__ = ["CACHED_KINDS", "FeatureKind", "feature_kind"]


class FeatureKind(StrEnum):
    """* ``pooled``: per-layer mean and standard deviation over frames, ``[L, 2D]`` float32
      (serves ``mean`` and ``meanstd`` pooling heads);
    * ``frames``: all hidden states ``[L, T, D]`` float16 (attention pooling);
    * ``conv``: the convolutional feature extractor's output ``[T, 512]`` float16
      (fine-tuning the transformer layers with the extractor frozen);
    * ``wave``: pre-processed waveforms, augmented and re-encoded at every step (not
      cached; the exact, slow reference);
    * ``mfcc``: LIGHT-SERNET's fixed-window MFCCs ``[T, 40]`` float32;
    * ``functionals``: openSMILE's eGeMAPSv02 functionals ``[88]`` float32 (``egemaps``).
    """

    POOLED = "pooled"
    FRAMES = "frames"
    CONV = "conv"
    WAVE = "wave"
    MFCC = "mfcc"
    FUNCTIONALS = "functionals"

    @property
    def cached(self) -> bool:
        """Stored in the feature cache (everything but ``wave``, which is loaded, augmented
        online and encoded at every step)."""
        return self not in _UNCACHED

    @property
    def uses_encoder_in_training(self) -> bool:
        """The model runs (part of) the encoder at every training step."""
        return self in _ENCODER_IN_TRAINING

    @property
    def trains_encoder(self) -> bool:
        """The encoder's upper layers are fine-tuned with the head (``conv``)."""
        return self in _ENCODER_TRAINED


#: Kinds whose model fine-tunes the encoder's upper layers (it holds its own copy).
_ENCODER_TRAINED = frozenset({FeatureKind.CONV})
#: Kinds whose model runs the encoder at every step (trained or frozen).
_ENCODER_IN_TRAINING = _ENCODER_TRAINED | {FeatureKind.WAVE}
#: Kinds that are not cached: pre-processed waveforms.
_UNCACHED = frozenset({FeatureKind.WAVE})


CACHED_KINDS: tuple[FeatureKind, ...] = tuple(k for k in FeatureKind if k.cached)


def feature_kind(cfg: Any) -> FeatureKind:
    """Which features a config trains on (see :mod:`edgeser.training.trainer`): the
    family's own (:attr:`~edgeser.models.families.ModelFamily.features`), or, for SSL
    models, the one the pooling, ``--train`` and ``--aug-mode`` settings pick."""
    norm = normalization(cfg)
    family = model_spec(cfg.model).model_family
    if family.features is not None:
        family.check_features(cfg)
        return FeatureKind(family.features)
    if norm != "none" and (
        cfg.aug_mode == "online" or cfg.train == "encoder" or cfg.pooling == "attention"
    ):
        raise EdgeserError(
            f"--feature-norm {norm} needs cached pooled features (train head, "
            "aug-mode cached, pooling mean or meanstd)"
        )
    if cfg.aug_mode == "online":
        if cfg.train == "encoder":
            raise EdgeserError("aug-mode online is only available with train=head")
        return FeatureKind.WAVE
    if cfg.train == "encoder":
        return FeatureKind.CONV
    return FeatureKind.FRAMES if cfg.pooling == "attention" else FeatureKind.POOLED
