"""Single runs behind ``edgeser train`` and ``edgeser evaluate``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.core.io import write_json
from edgeser.data.manifest import four_class, read_manifest, validate_manifest
from edgeser.evaluation.confidence import Calibration
from edgeser.evaluation.dimensions import dimension_metrics
from edgeser.evaluation.metrics import compute_metrics
from edgeser.evaluation.records import write_predictions
from edgeser.evaluation.report import write_report
from edgeser.evaluation.uncertainty import EvalSet
from edgeser.experiments.pipeline import (
    compute_features,
    cross_corpus,
    feature_set,
    fit_calibration,
    predictions_interval,
    require_ratings,
    run_info,
    run_seeds,
    summarise_runs,
)
from edgeser.models.registry import FeatureEncoder, make_encoder
from edgeser.split.protocols import Split, group_sessions, loso_splits, speaker_holdout_split
from edgeser.split.validate import combine_manifests
from edgeser.training.folder import build_model, load_trained, save_model
from edgeser.training.trainer import fit, predict_outputs

log = logging.getLogger(__name__)


def read_four_class(path: str | Path) -> pd.DataFrame:
    """The four-class rows of a validated manifest. Rows with an empty label (outside the
    task, as ``prepare --all-labels`` writes them) are left out; any other label that is
    not one of the four (``Angry``, ``calm``) is an error, as in ``edgeser validate``, not a
    row silently dropped; an empty result is an error."""
    full = read_manifest(path)
    try:
        if not full.empty:
            validate_manifest(full, check_paths=False, allow_unlabelled=True)
    except EdgeserError as e:
        raise EdgeserError(f"{path}: {e}") from None
    df = four_class(full)
    if df.empty:
        raise EdgeserError(f"{path}: no four-class utterances in the manifest")
    validate_manifest(df)
    return df


def train_on_manifests(
    cfg: TrainConfig,
    manifests: Sequence[str | Path],
    out: str | Path,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    encoder: FeatureEncoder | None = None,
) -> dict[str, Any]:
    """Train on every row; validation = ``cfg.val_speakers`` speakers of the first manifest."""
    out = Path(out)
    dfs = [read_four_class(m) for m in manifests]
    main = dfs[0]
    frame = combine_manifests(*dfs)
    split = speaker_holdout_split(
        main,
        combine_manifests(*dfs[1:]) if dfs[1:] else None,
        val_speakers=cfg.val_speakers,
        seed=cfg.seed,
    )
    train, val, val_spk = split.train, split.val, split.info["val_speakers"]
    encoder = encoder or make_encoder(cfg)
    feats = compute_features(
        cfg,
        encoder,
        frame,
        set(train),
        Path(cache_dir) if cache_dir else out / "cache",
        progress=progress,
    )
    dims = cfg.dimensions
    if dims:
        require_ratings(frame, train)
    train_set = feature_set(feats, frame, train, with_views=True, dims=dims)
    model = build_model(cfg, encoder, feats.kind, train_set)
    val_set = feature_set(feats, frame, val, with_views=False, dims=dims) if val else None
    result = fit(cfg, model, train_set, val_set, out, progress=progress)
    record: dict[str, Any] = {
        "name": "train",
        "n_train": len(train),
        "n_val": len(val),
        "val_speakers": sorted(val_spk),
        "best_epoch": result.best_epoch,
        "history": result.history,
    }
    calibration = fit_calibration(cfg, result.model, val_set)
    if calibration is not None:
        record["calibration"] = calibration.to_json()
    if val_set is not None:
        probs, d_pred = predict_outputs(result.model, val_set, cfg)
        record["val_metrics"] = compute_metrics(val_set.labels, probs.argmax(1))
        if dims:
            record["dimensions"] = dimension_metrics(val_set.dims, d_pred)
    record["metrics"] = record.get("val_metrics")
    save_model(out, result.model, cfg, encoder, feats.kind, record)
    write_json(out / "train.json", {**run_info(cfg, encoder), **record})
    return record


def evaluate_model(
    model_dir: str | Path,
    corpus: str | Path,
    out: str | Path,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    encoder: FeatureEncoder | None = None,
    encoder_source: str | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model on a manifest, with cross-corpus error analysis
    (``encoder`` / ``encoder_source``: as :func:`~edgeser.training.folder.load_trained`)."""
    out = Path(out)
    df = read_four_class(corpus)
    model, cfg, encoder, meta = load_trained(model_dir, encoder, encoder_source=encoder_source)
    feats = compute_features(
        cfg, encoder, df, set(), Path(cache_dir) if cache_dir else out / "cache", progress=progress
    )
    name = str(df["corpus"].iloc[0])
    analysis, predictions = cross_corpus(cfg, model, feats, df, df, Calibration.of_record(meta))
    analysis["ci95"] = predictions_interval(cfg, predictions, df)
    results = {
        **run_info(cfg, encoder),
        "model_dir": str(model_dir),
        "cross_corpus": {name: analysis},
    }
    write_json(out / "results.json", results)
    write_predictions(out / "predictions.csv", {name: predictions})

    write_report(out, results)
    return {k: v for k, v in analysis.items() if k != "n"}


def evaluate_loso(
    cfg: TrainConfig, corpus: str | Path, out: str | Path, **kw: Any
) -> dict[str, Any]:
    """Speaker-independent folds on any corpus (:func:`run_loso`); returns the
    ``results.json`` content."""
    return run_loso(cfg, corpus, out, **kw)[0]


def run_loso(
    cfg: TrainConfig,
    corpus: str | Path,
    out: str | Path,
    *,
    folds: int = 5,
    extra_train: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    encoder: FeatureEncoder | None = None,
) -> tuple[dict[str, Any], list[EvalSet]]:
    """Speaker-independent folds on any corpus: sessions grouped into ``folds`` folds,
    each trained ``cfg.seeds`` times on the same features. Returns the ``results.json``
    content and every fold's test predictions (all seeds) for paired tests.

    ``extra_train``: a manifest added to the training side of every fold only (e.g.
    CREMA-D); the results key then reads ``"<corpus>+<extra corpus>"``.
    """
    out = Path(out)
    df = read_four_class(corpus)
    name = "+".join(sorted(df["corpus"].astype(str).unique()))
    extra = read_four_class(extra_train) if extra_train is not None else None
    frame = df
    if extra is not None:
        name += "+" + "+".join(sorted(extra["corpus"].astype(str).unique()))
        frame = combine_manifests(df, extra)
    splits: list[Split] = loso_splits(
        df, extra, val_speakers=cfg.val_speakers, sessions=group_sessions(df, folds)
    )
    encoder = encoder or make_encoder(cfg)
    feats = compute_features(
        cfg,
        encoder,
        frame,
        set(frame["utt_id"]),
        Path(cache_dir) if cache_dir else out / "cache",
        progress=progress,
    )
    runs = run_seeds(cfg, encoder, frame, feats, splits, out / "loso", progress)
    summary, sets = summarise_runs(cfg, runs, frame)
    results = {**run_info(cfg, encoder), "loso": {name: summary}}
    write_predictions(out / "loso" / "predictions.csv", {f.name: f.predictions for f in runs[0]})
    write_json(out / "results.json", results)

    write_report(out, results)
    return results, sets
