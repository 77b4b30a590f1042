"""The paper's protocol as a chain of library calls: features → splits → training →
evaluation → results, used by ``edgeser train``, ``evaluate``, ``reproduce`` and ``demo``.

Features are held in a :class:`~edgeser.features.container.Features`; each fold's outcome
is a :class:`~edgeser.evaluation.records.FoldResult` (cached in its folder's
``record.json``), and the predictions of a model on a test set are
:class:`~edgeser.evaluation.records.Predictions`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgeser import __version__
from edgeser.audio.augment import Augmenter
from edgeser.audio.io import SAMPLE_RATE, load_audio
from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.core.io import sha256_text, write_json
from edgeser.data.labels import label_index
from edgeser.evaluation.confidence import (
    Calibration,
    apply_temperature,
    calibration_metrics,
    fit_temperature,
    low_confidence_threshold,
    reliability,
)
from edgeser.evaluation.crosscorpus import error_analysis
from edgeser.evaluation.dimensions import (
    DIMENSIONS,
    describe_unrated,
    dimension_metrics,
    dimension_targets,
    has_dimension_labels,
    summarize_dimension_folds,
)
from edgeser.evaluation.metrics import compute_metrics, pool_folds, summarize_folds
from edgeser.evaluation.records import FoldResult, Predictions
from edgeser.evaluation.uncertainty import (
    EvalSet,
    bootstrap_ci,
    interval,
    paired_test,
    summarize_seeds,
)
from edgeser.features import FeatureStore, extract
from edgeser.features.container import Features
from edgeser.features.kinds import feature_kind
from edgeser.models.registry import FeatureEncoder, normalization, signal_front_end
from edgeser.split.protocols import Split
from edgeser.training.folder import build_model, save_model
from edgeser.training.strategies import train_strategy
from edgeser.training.trainer import FeatureSet, SERModel, fit, predict_outputs, speaker_batchnorm

log = logging.getLogger(__name__)


def feature_set(
    feats: Features, df: pd.DataFrame, ids: Sequence[str], with_views: bool, dims: bool = False
) -> FeatureSet:
    """The features of ``ids`` (with their augmented views) and their labels, for training
    or testing; ``dims``: with the dimensional targets (``NaN`` rows for utterances
    without ratings)."""
    labels = dict(zip(df["utt_id"], df["label"], strict=True))
    y = np.array([label_index(labels[u]) for u in ids], dtype=np.int64)
    clean, views = feats.arrays(ids, with_views)
    targets = dimension_targets(df, ids) if dims else None
    speakers = dict(zip(df["utt_id"], df["speaker"].astype(str), strict=True))
    return FeatureSet(feats.kind, list(ids), y, clean, views, targets, [speakers[u] for u in ids])


def speaker_normalized(feats: Features, frame: pd.DataFrame) -> Features:
    """Every utterance standardised with its speaker's statistics (clean features of all
    the speaker's utterances in ``frame``; labels are not used): frame-level statistics of
    pooled SSL features, or plain z-scores of functionals."""
    stats, apply = train_strategy(feats.kind).speaker_stats
    speakers = (list(ids) for _, ids in frame.groupby("speaker", sort=True)["utt_id"])
    return feats.standardized(speakers, stats, apply)


def compute_features(
    cfg: TrainConfig,
    encoder: FeatureEncoder,
    frame: pd.DataFrame,
    train_ids: set[str],
    cache_dir: Path,
    *,
    progress: bool = True,
) -> Features:
    """Clean features for every row, plus ``cfg.aug_views`` views for ``train_ids``."""
    kind = feature_kind(cfg)
    t0 = time.perf_counter()
    front_end = signal_front_end(cfg)
    if not kind.cached:  # waveforms, augmented and encoded at every step
        feats = Features(kind)
        for uid, path in zip(frame["utt_id"], frame["path"], strict=True):
            feats.clean[uid] = front_end(load_audio(path, SAMPLE_RATE), SAMPLE_RATE)
        feats.seconds = time.perf_counter() - t0
        return feats
    precision = getattr(encoder, "precision", "fp32")  # what computed them (mfcc: fp32)
    store = FeatureStore(
        cache_dir,
        encoder.identity,
        kind=kind,
        precision=precision,
        front_end=front_end,
        augment=cfg.augment,
        aug_seed=cfg.seed,
    )
    k = cfg.aug_views
    views = {uid: (0, *range(1, k + 1)) if uid in train_ids else (0,) for uid in frame["utt_id"]}
    arrays = extract(
        frame, encoder, store, views=views, progress=progress, desc=f"encoding ({kind}, {k} views)"
    )
    feats = Features(kind)
    for (uid, view), arr in arrays.items():
        if view == 0:
            feats.clean[uid] = arr
    if k:
        for uid in train_ids:
            feats.views[uid] = [arrays[(uid, v)] for v in range(1, k + 1)]
    feats.seconds = time.perf_counter() - t0
    if normalization(cfg) == "speaker" and not speaker_batchnorm(cfg, kind):  # else: in the net
        feats = speaker_normalized(feats, frame)
    return feats


def require_ratings(frame: pd.DataFrame, train_ids: Sequence[str]) -> None:
    """Refuse ``--dimensions`` when no training utterance has ratings to learn from."""
    if not has_dimension_labels(frame.loc[frame["utt_id"].isin(set(train_ids))]):
        raise EdgeserError(
            "--dimensions: no training utterance has arousal/valence/dominance ratings "
            "(only IEMOCAP's manifests carry them)"
        )


def run_split(
    cfg: TrainConfig,
    encoder: FeatureEncoder,
    frame: pd.DataFrame,
    feats: Features,
    split: Split,
    out_dir: Path,
    *,
    progress: bool = True,
) -> FoldResult:
    """Train on ``split.train``, select on ``split.val``, evaluate on ``split.test``.

    Writes the model (safetensors + its training record) to ``out_dir`` and returns the
    fold's outcome with its test predictions.
    """
    kind = feats.kind
    dims = cfg.dimensions
    if dims:
        require_ratings(frame, split.train)
    train = feature_set(feats, frame, split.train, with_views=True, dims=dims)
    model = build_model(cfg, encoder, kind, train)
    val = feature_set(feats, frame, split.val, with_views=False, dims=dims) if split.val else None
    test = feature_set(feats, frame, split.test, with_views=False, dims=dims)
    augmenter = Augmenter(cfg.augment) if train_strategy(kind).augments_online else None
    t0 = time.perf_counter()
    result = fit(cfg, model, train, val, out_dir, progress=progress, augmenter=augmenter)
    train_seconds = time.perf_counter() - t0
    calibration = fit_calibration(cfg, result.model, val)
    raw, d_pred = predict_outputs(result.model, test, cfg)
    probs = calibrated(raw, calibration)
    y_pred = probs.argmax(1)
    speakers = split.speakers(frame)
    fold = FoldResult(
        name=split.name,
        test_session=split.test_session,
        train_speakers=speakers["train"],
        val_speakers=speakers["val"],
        test_speakers=speakers["test"],
        n_train=len(split.train),
        n_val=len(split.val),
        n_test=len(split.test),
        split_sha256=split.digest(),
        best_epoch=result.best_epoch,
        train_seconds=round(train_seconds, 3),
        history=result.history,
        metrics=compute_metrics(test.labels, y_pred),
        predictions=Predictions(
            ids=list(split.test),
            y_true=test.labels.tolist(),
            y_pred=y_pred.tolist(),
            probs=probs.tolist(),
            probs_raw=raw.tolist(),
        ),
        calibration=(
            calibration.tested(raw, probs, test.labels) if calibration is not None else None
        ),
    )
    if dims:
        fold.dimensions = dimension_metrics(test.dims, d_pred)
        fold.predictions.dims = d_pred.tolist()
        fold.predictions.dims_true = _nan_to_none(test.dims)
    save_model(out_dir, result.model, cfg, encoder, kind, fold.record())
    return fold


def fit_calibration(cfg: TrainConfig, model: Any, val: Any) -> Calibration | None:
    """Temperature scaling of a trained model on its validation speakers
    (``cfg.calibrate == "temperature"``; None without, or without validation data)."""
    if cfg.calibrate != "temperature" or val is None or len(val.labels) == 0:
        return None
    raw, _ = predict_outputs(model, val, cfg)
    temperature = fit_temperature(raw, val.labels)
    fixed = apply_temperature(raw, temperature)
    return Calibration(
        temperature=round(temperature, 6),
        low_confidence_below=low_confidence_threshold(fixed, val.labels),
        n_val=len(val.labels),
        val={
            "before": calibration_metrics(raw, val.labels),
            "after": calibration_metrics(fixed, val.labels),
        },
    )


def calibrated(probs: np.ndarray, calibration: Calibration | None) -> np.ndarray:
    """``probs`` under the calibration :func:`fit_calibration` found (as they are
    without one)."""
    if calibration is None:
        return np.asarray(probs)
    return calibration.apply(probs)


def _nan_to_none(a: np.ndarray) -> list[list[float | None]]:
    """Rows of ``a`` as JSON-safe lists (``NaN`` → ``None``)."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]


def run_split_cached(
    cfg: TrainConfig,
    encoder: FeatureEncoder,
    frame: pd.DataFrame,
    feats: Features,
    split: Split,
    out: Path,
    progress: bool,
) -> FoldResult:
    """:func:`run_split`, reusing the fold's ``record.json`` when config and split match
    (the protocol-level ``seeds`` and ``bootstrap`` do not count, so folds finished
    before those settings existed are reused too)."""
    shape = {k: v for k, v in cfg.to_dict().items() if k not in ("seeds", "bootstrap")}
    key = sha256_text(json.dumps([shape, encoder.identity, split.digest()], sort_keys=True))[:16]
    rec_path = out / "record.json"
    if rec_path.is_file():
        try:
            rec = json.loads(rec_path.read_text(encoding="utf-8"))
            if rec.get("_key") == key:
                fold = FoldResult.from_json(rec)
                log.info("%s: reusing finished fold", out)
                return fold
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            pass  # unreadable: the fold runs again
    fold = run_split(cfg, encoder, frame, feats, split, out, progress=progress)
    write_json(rec_path, fold.to_json(key))
    return fold


def summarise_setting(folds: Sequence[FoldResult]) -> dict[str, Any]:
    """``{"folds", "mean", "std", "pooled"}`` for one LOSO setting."""
    summary = summarize_folds([f.metrics for f in folds])
    pooled = pool_folds(
        [f.predictions.y_true for f in folds], [f.predictions.y_pred for f in folds]
    )
    out = {
        "folds": [f.record() for f in folds],
        "mean": summary["mean"],
        "std": summary["std"],
        "pooled": pooled,
    }
    if folds and all(f.calibration is not None for f in folds):
        out["calibration"] = summarise_calibration(folds)
    if all(f.dimensions is not None for f in folds):
        out["dimensions"] = {
            **summarize_dimension_folds([f.dimensions for f in folds]),
            "pooled": dimension_metrics(
                _as_array([t for f in folds for t in f.predictions.dims_true or ()]),
                _as_array([p for f in folds for p in f.predictions.dims or ()]),
            ),
        }
    return out


def summarise_calibration(folds: Sequence[FoldResult]) -> dict[str, Any]:
    """Calibration of a setting's folds: each fold's temperature and threshold, the mean
    over folds of the test ECE, Brier and NLL before and after, and the same on the pooled
    test predictions (with the reliability bins behind the report's diagram)."""
    keys = ("ece", "brier", "nll")
    cal = [f.calibration for f in folds if f.calibration is not None]
    mean = {
        when: {k: float(np.mean([c.test[when][k] for c in cal if c.test])) for k in keys}
        for when in ("before", "after")
    }
    y = [t for f in folds for t in f.predictions.y_true]
    raw = np.array([p for f in folds for p in f.predictions.probs_raw])
    fixed = np.array([p for f in folds for p in f.predictions.probs])
    return {
        "temperature": [c.temperature for c in cal],
        "low_confidence_below": [c.low_confidence_below for c in cal],
        "mean": mean,
        "pooled": {
            "before": calibration_metrics(raw, y),
            "after": calibration_metrics(fixed, y),
            "reliability_before": reliability(raw, y),
            "reliability_after": reliability(fixed, y),
        },
    }


def run_seeds(
    cfg: TrainConfig,
    encoder: FeatureEncoder,
    frame: pd.DataFrame,
    feats: Features,
    splits: Sequence[Split],
    out: Path,
    progress: bool,
) -> list[list[FoldResult]]:
    """Every split trained ``cfg.seeds`` times on the same features: ``runs[i][fold]`` for
    seed ``cfg.seed + i``. The first seed's folds live in ``out/<fold>`` (as with one
    seed), the others' in ``out/seed<s>/<fold>``; each resumes like any fold."""
    runs = []
    for i in range(cfg.seeds):
        seed = cfg.seed + i
        base = out if i == 0 else out / f"seed{seed}"
        runs.append(
            [
                run_split_cached(
                    cfg.run_config(seed), encoder, frame, feats, s, base / s.name, progress
                )
                for s in splits
            ]
        )
    return runs


def eval_sets(runs: Sequence[Sequence[FoldResult]], frame: pd.DataFrame) -> list[EvalSet]:
    """Each fold's test predictions of every seed (``runs[seed][fold]``), with the speaker
    of each utterance, for :mod:`edgeser.evaluation.uncertainty`."""
    sets = []
    for k, first in enumerate(runs[0]):
        ids = first.predictions.ids
        for seed_runs in runs:
            if seed_runs[k].predictions.ids != ids:
                raise EdgeserError(f"fold {first.name}: seeds tested different utterances")
        sets.append(eval_set([seed_runs[k].predictions for seed_runs in runs], frame))
    return sets


def eval_set(seeds: Sequence[Predictions], frame: pd.DataFrame) -> EvalSet:
    """One test set's predictions (of one or more seeds, on the same utterances), with the
    speaker of each utterance, for :mod:`edgeser.evaluation.uncertainty`."""
    speaker = dict(zip(frame["utt_id"], frame["speaker"], strict=True))
    first = seeds[0]
    preds = [p.y_pred for p in seeds]
    return EvalSet.build(first.ids, first.y_true, preds, [speaker[u] for u in first.ids])


def summarise_runs(
    cfg: TrainConfig,
    runs: Sequence[Sequence[FoldResult]],
    frame: pd.DataFrame,
) -> tuple[dict[str, Any], list[EvalSet]]:
    """:func:`summarise_setting` of the first seed with its 95 % intervals (``ci95`` of the
    setting and of each fold), and with more than one seed a ``seeds`` block (spread over
    seeds, and the interval of the mean over all seed x fold runs); also the folds'
    predictions of every seed, for paired tests."""
    out = summarise_setting(list(runs[0]))
    sets = eval_sets(runs, frame)
    first = [EvalSet(s.ids, s.y_true, s.y_pred[:1], s.groups) for s in sets]
    ci = bootstrap_ci(first, n_resamples=cfg.bootstrap, seed=cfg.seed)
    for fold, fold_ci in zip(out["folds"], ci.pop("folds"), strict=True):
        fold["ci95"] = fold_ci
    out["ci95"] = ci
    if len(runs) > 1:
        seeds = summarize_seeds(
            [cfg.seed + i for i in range(len(runs))],
            [[f.metrics for f in folds] for folds in runs],
        )
        all_ci = bootstrap_ci(sets, n_resamples=cfg.bootstrap, seed=cfg.seed)
        out["seeds"] = {**seeds, "ci95": {k: v for k, v in all_ci.items() if k != "folds"}}
    return out, sets


def paired_settings(
    cfg: TrainConfig, a: tuple[str, Sequence[EvalSet]], b: tuple[str, Sequence[EvalSet]], **kw: Any
) -> dict[str, Any]:
    """The paired test of setting ``b`` against ``a`` (``(name, eval sets)``) on their
    shared folds, every seed included: ``{"a", "b", **paired_test(...)}``."""
    test = paired_test(a[1], b[1], n_resamples=cfg.bootstrap, seed=cfg.seed, **kw)
    return {"a": a[0], "b": b[0], **test}


def predictions_interval(
    cfg: TrainConfig, predictions: Predictions, frame: pd.DataFrame
) -> dict[str, Any]:
    """95 % intervals of one evaluation's WA/UA/macro-F1."""
    return interval(eval_set([predictions], frame), n_resamples=cfg.bootstrap, seed=cfg.seed)


def _as_array(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array(
        [[np.nan if v is None else v for v in row] for row in rows], np.float64
    ).reshape(-1, len(DIMENSIONS))


def run_info(cfg: TrainConfig, encoder: FeatureEncoder) -> dict[str, Any]:
    return {
        "edgeser_version": __version__,
        "model": cfg.model,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "encoder": {
            "source": encoder.source,
            "identity": encoder.identity,
            "is_random": encoder.is_random,
            "precision": getattr(encoder, "precision", "fp32"),
        },
    }


def cross_corpus(
    cfg: TrainConfig,
    model: SERModel,
    feats: Features,
    frame: pd.DataFrame,
    corpus: pd.DataFrame,
    calibration: Calibration | None = None,
) -> tuple[dict[str, Any], Predictions]:
    """A trained model on every utterance of ``corpus`` (features from ``feats``):
    ``(analysis, predictions)`` with the error analysis (``n`` added); with the model's
    ``calibration`` the probabilities are its calibrated ones, and the analysis says how
    calibrated they are on this corpus."""
    ids = list(corpus["utt_id"])
    data = feature_set(feats, frame, ids, with_views=False)
    raw, d_pred = predict_outputs(model, data, cfg)
    probs = calibrated(raw, calibration)
    y_true = [label_index(x) for x in corpus["label"]]
    y_pred = probs.argmax(1).tolist()
    rows = corpus.reset_index(drop=True)
    analysis = error_analysis(rows, y_true, y_pred)
    if calibration is not None:
        analysis["calibration"] = {
            "temperature": calibration.temperature,
            "before": calibration_metrics(raw, y_true),
            "after": calibration_metrics(probs, y_true),
        }
    predictions = Predictions(ids, y_true, y_pred, probs.tolist(), raw.tolist())
    if d_pred is not None:
        d_true = dimension_targets(corpus, ids)
        dims = describe_unrated(d_pred, rows)
        if np.isfinite(d_true).all(axis=1).any():
            dims["metrics"] = dimension_metrics(d_true, d_pred)
        analysis["dimensions"] = dims
        predictions.dims = d_pred.tolist()
        predictions.dims_true = _nan_to_none(d_true)
    return {**analysis, "n": len(ids)}, predictions
