"""The trained-model folder: ``model.safetensors`` (weights) + ``model.json``, the training
record (config, labels, encoder identity, split, metrics; not an exported model's card,
:mod:`edgeser.runtime.card`), written by every training run
(:func:`save_model`) and read by evaluation, export and comparison (:func:`load_trained`,
which returns a :class:`TrainedModel`; :func:`check_model_dir`, :func:`peek_meta` and
:func:`training_corpora` read what export needs before or beside the weights).
:func:`build_model` makes the model a config describes, fresh or to load weights into."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch

from edgeser import __version__
from edgeser.audio.io import SAMPLE_RATE
from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.data.labels import LABELS
from edgeser.features.kinds import FeatureKind
from edgeser.models.head import EmotionHead
from edgeser.models.registry import (
    FeatureEncoder,
    make_encoder,
    model_spec,
    normalization,
    signal_front_end,
)
from edgeser.models.ssl import load_encoder, recorded_source
from edgeser.training.checkpoint import load_weights, read_json, save_weights
from edgeser.training.normalize import group_stats
from edgeser.training.trainer import FeatureSet, SERModel, head_config

__all__ = [
    "TrainedModel",
    "build_model",
    "check_model_dir",
    "load_trained",
    "peek_meta",
    "save_model",
    "training_corpora",
]

log = logging.getLogger(__name__)


class TrainedModel(NamedTuple):
    """A trained model folder, loaded: the model, its config, its encoder and its training
    record (``model.json``'s contents)."""

    model: SERModel
    config: TrainConfig
    encoder: FeatureEncoder
    meta: dict[str, Any]


def build_model(
    cfg: TrainConfig, encoder: FeatureEncoder, kind: str, train: FeatureSet | None = None
) -> SERModel:
    """A fresh model for ``cfg``; ``train`` gives the statistics of ``--feature-norm global``
    (without it, they are left for ``load_state_dict`` to fill)."""
    kind = FeatureKind(kind)
    build_network = model_spec(cfg.model).model_family.build_network
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
        if build_network is not None:  # a network on the encoder's whole output
            return SERModel(build_network(cfg, encoder), None, kind=kind)
        hcfg = head_config(cfg, encoder.num_hidden_states, encoder.hidden_size)
        if normalization(cfg) == "global":
            hcfg = dataclasses.replace(hcfg, normalize=True)
        head = EmotionHead(hcfg)
    if hcfg.normalize and train is not None:
        head.set_normalization(*map(torch.from_numpy, group_stats(train.clean)))
    if kind.trains_encoder:
        # Each model fine-tunes its own copy: folds must not inherit each other's updates.
        encoder = copy.deepcopy(encoder).unfreeze_upper()
    return SERModel(head, encoder if kind.uses_encoder_in_training else None, kind=kind)


def save_model(
    out_dir: Path,
    model: SERModel,
    cfg: TrainConfig,
    encoder: FeatureEncoder,
    kind: str,
    record: dict[str, Any],
) -> None:
    """``model.safetensors`` + ``model.json``: everything needed to rebuild and export."""
    front = signal_front_end(cfg)  # what the model's features were computed on
    meta = {
        "edgeser_version": __version__,
        "model": cfg.model,
        "labels": list(LABELS),
        "sample_rate": SAMPLE_RATE,
        "feature_kind": kind,
        "encoder": {
            "source": encoder.source,
            "identity": encoder.identity,
            "is_random": encoder.is_random,
            "seed": cfg.encoder_seed,
            "num_hidden_states": getattr(encoder, "num_hidden_states", None),
            "hidden_size": getattr(encoder, "hidden_size", None),
        },
        "front_end": {
            "trim": front.trim,
            "top_db": front.top_db,
            "preemphasis": front.preemphasis,
            "normalize": front.normalize,
        },
        "config": cfg.to_dict(),
        "split": {
            k: record.get(k)
            for k in ("name", "test_session", "n_train", "n_val", "n_test", "split_sha256")
        },
        "metrics": record.get("metrics"),
    }
    if cfg.dimensions:
        meta["dimension_metrics"] = record.get("dimensions")
    if record.get("calibration"):  # temperature and low_confidence threshold (validation)
        meta["calibration"] = {k: v for k, v in record["calibration"].items() if k != "test"}
    save_weights(out_dir / "model.safetensors", dict(model.state_dict()), meta)


def load_trained(
    model_dir: str | Path,
    encoder: FeatureEncoder | None = None,
    *,
    encoder_source: str | None = None,
) -> TrainedModel:
    """Rebuild a trained model (and its encoder) from ``model.safetensors`` + ``model.json``.

    ``encoder`` replaces the one ``model.json`` names (it must have the same identity), and
    so does ``encoder_source``, a source the user named (``--encoder``). Without either,
    the source ``model.json`` records is loaded only if it cannot read a file outside the
    folder (:func:`~edgeser.models.ssl.recorded_source`); one log line says what is loaded
    and from where.
    """
    tensors, meta = load_weights(Path(model_dir))
    try:
        cfg = TrainConfig.from_dict(meta["config"])
        enc_meta = meta["encoder"]
        if not isinstance(enc_meta, dict):
            raise TypeError(f"'encoder' is {type(enc_meta).__name__}, not an object")
    except (KeyError, TypeError) as e:
        raise EdgeserError(
            f"{model_dir}: model.json is not an edgeser training record ({e})"
        ) from None
    if encoder is None:
        if model_spec(cfg.model).model_family.encoder_source is not None:  # fixed, rebuilt
            encoder = make_encoder(cfg)
        else:
            if encoder_source:
                source, why = encoder_source, "as named on the command line"
            else:
                source = recorded_source(enc_meta.get("source", ""), model_dir)
                why = f"as {Path(model_dir) / 'model.json'} records it"
            log.info("encoder: %s (%s)", source, why)
            encoder = load_encoder(source, seed=enc_meta.get("seed", 0), precision=cfg.precision)
    if encoder.identity != enc_meta["identity"]:
        raise EdgeserError(
            f"{model_dir}: the encoder loaded from {enc_meta['source']!r} is not the one the "
            f"model was trained with (identity {encoder.identity} != {enc_meta['identity']})"
        )
    model = build_model(cfg, encoder, meta["feature_kind"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise EdgeserError(f"{model_dir}: weights do not fit the model ({e})") from None
    return TrainedModel(model, cfg, encoder, meta)


def check_model_dir(model_dir: Path) -> None:
    """Raise a one-line :class:`EdgeserError` unless ``model_dir`` holds a trained model."""
    if not model_dir.is_dir():
        raise EdgeserError(f"{model_dir}: not a folder (expected a trained model folder)")
    missing = [n for n in ("model.safetensors", "model.json") if not (model_dir / n).is_file()]
    if missing:
        raise EdgeserError(
            f"{model_dir}: not an edgeser model folder (missing {', '.join(missing)}); pass "
            "a folder written by 'edgeser train', e.g. RUN_DIR/production"
        )


def peek_meta(model_dir: Path) -> dict[str, Any] | None:
    """``model.json`` without the weights (to refuse a model before loading anything);
    ``None`` when it is unreadable (:func:`load_trained` then says why)."""
    meta = read_json(model_dir / "model.json")
    return meta if isinstance(meta, dict) else None


def training_corpora(model_dir: Path, meta: dict[str, Any]) -> Any:
    """The corpora a trained model learnt from: ``model.json``'s ``corpora``, else the
    ``corpora`` of the run's ``train.json`` beside it (None when neither says)."""
    corpora = meta.get("corpora")
    if corpora is None:
        run = read_json(model_dir / "train.json")
        corpora = run.get("corpora") if isinstance(run, dict) else None
    return corpora
