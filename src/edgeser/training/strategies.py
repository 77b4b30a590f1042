"""How each feature kind trains: training's registry, feature kind -> :class:`TrainStrategy`.

A strategy holds what the trainer and the pipeline do differently for one kind of features
(:class:`~edgeser.features.kinds.FeatureKind`): how a batch of per-utterance arrays
becomes model inputs (``collate``), how the model turns them into logits (``forward``),
how a training batch's arrays are drawn (cached augmented views, or waveforms augmented
now), whether the model is fitted in one go instead of by the gradient loop
(``fit_once``: the eGeMAPS linear classifier, by scikit-learn), and the per-speaker
normalisation rule (``speaker_stats`` on the features, or ``speaker_batchnorm`` inside
the network). :mod:`edgeser.training.trainer` and :mod:`edgeser.experiments.pipeline`
look the strategy up (:func:`train_strategy`) instead of comparing kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgeser.audio.io import SAMPLE_RATE
from edgeser.features.kinds import FeatureKind
from edgeser.training.linear import fit_linear
from edgeser.training.normalize import group_stats, normalize_pooled, row_stats, standardize

__all__ = ["STRATEGIES", "TrainStrategy", "collate", "train_strategy"]

Outputs = tuple[torch.Tensor, torch.Tensor | None]


# ---------------------------------------------------------------- model inputs


def _stacked(key: str) -> Callable[[Sequence[np.ndarray], str], dict[str, Any]]:
    """Arrays of one shape (a fixed MFCC window, a functionals vector) stacked under ``key``."""

    def collate(arrays: Sequence[np.ndarray], pooling: str) -> dict[str, Any]:
        return {key: torch.from_numpy(np.stack(arrays)).float()}

    return collate


def _pooled_inputs(arrays: Sequence[np.ndarray], pooling: str) -> dict[str, Any]:
    x = torch.from_numpy(np.stack(arrays)).float()  # [B, L, 2D]
    if pooling == "mean":
        x = x[..., : x.shape[-1] // 2]
    return {"pooled": x.transpose(0, 1).contiguous()}


def _waves(arrays: Sequence[np.ndarray], pooling: str) -> dict[str, Any]:
    return {"waves": list(arrays)}


def _mask(lengths: Sequence[int], t: int) -> torch.Tensor:
    mask = torch.zeros(len(lengths), t, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    return mask


def _frames_inputs(arrays: Sequence[np.ndarray], pooling: str) -> dict[str, Any]:
    """Hidden states ``[L, T, D]`` zero-padded to ``[L, B, T, D]`` with a ``[B, T]`` mask."""
    lengths = [a.shape[1] for a in arrays]
    t = max(lengths)
    out = np.zeros((arrays[0].shape[0], len(arrays), t, arrays[0].shape[2]), np.float32)
    for i, a in enumerate(arrays):
        out[:, i, : a.shape[1]] = a
    return {"frames": torch.from_numpy(out), "mask": _mask(lengths, t)}


def _conv_inputs(arrays: Sequence[np.ndarray], pooling: str) -> dict[str, Any]:
    """Conv-extractor outputs ``[T, 512]`` zero-padded to ``[B, T, 512]`` with a mask."""
    lengths = [a.shape[0] for a in arrays]
    t = max(lengths)
    out = np.zeros((len(arrays), t, arrays[0].shape[1]), np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return {"conv": torch.from_numpy(out), "mask": _mask(lengths, t)}


# -------------------------------------------------------------------- forward


def _whole(key: str) -> Callable[[Any, dict[str, Any]], Outputs]:
    """The network takes the encoder's output whole (LIGHT-SERNET, the linear classifier)."""

    def forward(model: Any, batch: dict[str, Any]) -> Outputs:
        return model.head(batch[key]), None

    return forward


def _on_head(
    embed: Callable[[Any, dict[str, Any]], torch.Tensor],
) -> Callable[[Any, dict[str, Any]], Outputs]:
    """An :class:`~edgeser.models.head.EmotionHead`: class logits and, when it has them,
    the dimensional outputs, from the utterance embedding ``embed`` makes."""

    def forward(model: Any, batch: dict[str, Any]) -> Outputs:
        z = embed(model, batch)
        dims = model.head.dimensions(z) if model.has_dimensions else None
        return model.head.classifier(z), dims

    return forward


def _embed_pooled(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    return model.head.embed_pooled(batch["pooled"])


def _embed_frames(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    return model.head.embed(batch["frames"], batch["mask"])


def _embed_conv(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    hidden = model.encoder.forward_from_conv(batch["conv"], batch["mask"])
    return model.head.embed(hidden, batch["mask"][:, : hidden.shape[2]])


def _embed_waves(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        outs = model._frozen_encoder.encode(batch["waves"])
    pooled = [model.head.pool_layers(o.unsqueeze(1)) for o in outs]  # [L,1,P] each
    return model.head.embed_pooled(torch.cat(pooled, dim=1))


# ------------------------------------------------------------- training draws


def _cached_views(
    data: Any, idx: np.ndarray, view_pick: np.ndarray, epoch: int, cfg: Any, augmenter: Any
) -> list[np.ndarray]:
    """Each utterance's view drawn for the epoch (its clean features without views)."""
    if data.views:
        return [data.views[i][view_pick[i]] for i in idx]
    return [data.clean[i] for i in idx]


def _augmented_now(
    data: Any, idx: np.ndarray, view_pick: np.ndarray, epoch: int, cfg: Any, augmenter: Any
) -> list[np.ndarray]:
    """Waveforms augmented at this step (seeded by the run, the epoch and the row)."""
    if augmenter is None or cfg.aug_views == 0:
        return [data.clean[i] for i in idx]
    return [
        augmenter(
            data.clean[i],
            SAMPLE_RATE,
            seed=(cfg.seed * 7919 + epoch * 104_729 + int(i)) % (2**31),
        )
        for i in idx
    ]


# ----------------------------------------------------------------- registry


@dataclass(frozen=True)
class TrainStrategy:
    """How one feature kind trains (see the module's docstring)."""

    #: ``(arrays, pooling) -> batch``: per-utterance arrays into model inputs
    collate: Callable[[Sequence[np.ndarray], str], dict[str, Any]]
    #: ``(model, batch) -> (logits [B, C], dimensions [B, K] or None)``
    forward: Callable[[Any, dict[str, Any]], Outputs]
    #: ``(data, idx, view_pick, epoch, cfg, augmenter) -> arrays`` of a training batch
    draw: Callable[..., list[np.ndarray]] = _cached_views
    #: ``(cfg, network, train, val) -> (history, best_epoch)`` fitting in one go, or None
    #: (the gradient loop)
    fit_once: Callable[..., tuple[list[dict[str, float]], int]] | None = None
    #: ``--feature-norm speaker`` on the features: ``(stats of a speaker's arrays,
    #: apply(array, mean, std))``; None when the kind has no such rule
    speaker_stats: tuple[Callable[..., Any], Callable[..., np.ndarray]] | None = None
    #: ``--feature-norm speaker`` inside the network instead: its BatchNorm layers use each
    #: speaker's statistics (:func:`~edgeser.training.trainer.adapt_batchnorm`)
    speaker_batchnorm: bool = False
    #: the model takes the waveforms and augments them now (an augmenter is built)
    augments_online: bool = False


STRATEGIES: dict[FeatureKind, TrainStrategy] = {
    FeatureKind.POOLED: TrainStrategy(
        _pooled_inputs, _on_head(_embed_pooled), speaker_stats=(group_stats, normalize_pooled)
    ),
    FeatureKind.FRAMES: TrainStrategy(_frames_inputs, _on_head(_embed_frames)),
    FeatureKind.CONV: TrainStrategy(_conv_inputs, _on_head(_embed_conv)),
    FeatureKind.WAVE: TrainStrategy(
        _waves, _on_head(_embed_waves), draw=_augmented_now, augments_online=True
    ),
    FeatureKind.MFCC: TrainStrategy(_stacked("mfcc"), _whole("mfcc"), speaker_batchnorm=True),
    FeatureKind.FUNCTIONALS: TrainStrategy(
        _stacked("functionals"),
        _whole("functionals"),
        fit_once=fit_linear,
        speaker_stats=(row_stats, standardize),
    ),
}


def train_strategy(kind: str) -> TrainStrategy:
    """The strategy of feature kind ``kind`` (a :class:`FeatureKind` or its value)."""
    return STRATEGIES[FeatureKind(kind)]


def collate(kind: str, arrays: Sequence[np.ndarray], pooling: str) -> dict[str, Any]:
    """Batch per-utterance arrays into model inputs."""
    return train_strategy(kind).collate(arrays, pooling)
