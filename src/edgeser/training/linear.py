"""Fitting the eGeMAPS baseline's linear classifier with scikit-learn.

The classifier is scikit-learn's :class:`~sklearn.linear_model.LogisticRegression`:
multinomial (softmax over the four classes), L2-penalised, solved by L-BFGS to
convergence, which is deterministic (no random initialisation, no sampling), with
``class_weight="balanced"`` (the same ``N / (C · n_c)`` rule as the networks' loss; off
with ``--class-weights false``). Why this one: it is a linear model as in Eyben et al.
(2016), who used linear SVMs, but its scores are calibrated class probabilities like every
other edgeser model's (the predictions CSV, AUCs and the report's confidence use them),
and its softmax is exactly a ``torch.nn.Linear`` + softmax, so the fitted model is saved
as safetensors and evaluated by the same code as the networks.

Regularisation strength ``C`` is chosen from :data:`C_GRID` by cross-validation over the
training speakers: :class:`~sklearn.model_selection.GroupKFold` with the speakers as groups
(``min(5, speakers)`` folds; deterministic, no shuffling), each fold standardised with its
own training rows' statistics under ``--feature-norm global``; the ``C`` with the best mean
UA over the folds wins (ties: the lower mean log-loss, then the smaller ``C``). The model is
then fitted on all training speakers. With a single training speaker there is nothing to
cross-validate: ``C`` is chosen on the validation speakers by UA if there are any, else
``C = 1`` (scikit-learn's default). Validation speakers are never trained on; their scores
are recorded for every ``C`` and they remain the calibration set (temperature scaling).
Choosing by cross-validation instead of on one held-out speaker: on 12 real RAVDESS actors
one validation speaker picked ``C`` values three decades apart from fold to fold.

Features are standardised before the fit: with ``--feature-norm global`` by the training
utterances' mean and deviation, stored in the model; with ``speaker`` each speaker's
utterances were already standardised by their own statistics
(:func:`edgeser.experiments.pipeline.speaker_normalized`). Augmented views, if
any were cached (``--aug-views K``; the model's default is 0), are added as extra training
rows; the standardisation statistics come from the clean rows.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgeser.config import TrainConfig
from edgeser.data.labels import LABELS
from edgeser.evaluation.metrics import compute_metrics
from edgeser.models.egemaps import LinearClassifier
from edgeser.models.registry import normalization
from edgeser.training.normalize import row_stats

log = logging.getLogger(__name__)

__all__ = ["C_GRID", "DEFAULT_C", "cross_validate", "fit_linear"]

#: Inverse regularisation strengths tried (by cross-validation, or on the validation speakers).
C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_C = 1.0
_MAX_ITER = 5000
#: Speaker-grouped folds of the cross-validation that chooses ``C`` (fewer speakers: one
#: fold per speaker).
_CV_FOLDS = 5


def _rows(data: Any, with_views: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, labels and the speaker of every row (``""`` when unknown)."""
    speakers = list(data.speakers) if data.speakers is not None else [""] * len(data)
    x = [np.asarray(a, np.float64).reshape(-1) for a in data.clean]
    y = list(data.labels)
    g = list(speakers)
    if with_views and data.views:
        for i, views in enumerate(data.views):
            x.extend(np.asarray(v, np.float64).reshape(-1) for v in views)
            y.extend([data.labels[i]] * len(views))
            g.extend([speakers[i]] * len(views))
    return np.stack(x), np.asarray(y, np.int64), np.asarray(g, dtype=object)


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def _path(
    cfg: TrainConfig, grid: tuple[float, ...], z: np.ndarray, y: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(classes, coef, intercept)`` of the fit for every ``C`` of ``grid`` in turn,
    each fit started from the previous one's solution (the regularisation path, as
    :class:`~sklearn.linear_model.LogisticRegressionCV` walks it: the same optima, fewer
    L-BFGS iterations)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(
        class_weight="balanced" if cfg.class_weights else None, max_iter=_MAX_ITER, warm_start=True
    )
    for c in grid:
        clf.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(z, y)
        yield clf.classes_, clf.coef_.copy(), clf.intercept_.copy()


def _probs(fit: tuple[np.ndarray, np.ndarray, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Probabilities over all classes (a fold may lack one: its column stays 0)."""
    classes, coef, intercept = fit
    logits = z @ coef.T + intercept
    if len(classes) == 2:  # scikit-learn's binary form: one column
        logits = np.concatenate([-logits / 2, logits / 2], axis=1)
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    out = np.zeros((len(z), len(LABELS)))
    out[:, classes] = p / p.sum(1, keepdims=True)
    return out


def _standardizer(cfg: TrainConfig, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if normalization(cfg) == "global":
        return row_stats(x)
    return np.zeros(x.shape[1]), np.ones(x.shape[1])


def cross_validate(
    cfg: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    clean: np.ndarray,
    grid: tuple[float, ...] = C_GRID,
) -> list[dict[str, float]]:
    """Mean UA and log-loss of every ``C`` of ``grid`` over speaker-grouped folds of the
    training rows ``x`` (``clean``: which rows are clean utterances, the rows the
    standardisation statistics and the scores come from)."""
    from sklearn.model_selection import GroupKFold

    splits = list(GroupKFold(n_splits=min(_CV_FOLDS, len(set(groups)))).split(x, y, groups))
    uas = np.zeros((len(grid), len(splits)))
    losses = np.zeros_like(uas)
    for k, (tr, te) in enumerate(splits):
        te = te[clean[te]]
        mean, std = _standardizer(cfg, x[tr][clean[tr]])
        for i, fit in enumerate(_path(cfg, grid, (x[tr] - mean) / std, y[tr])):
            p = _probs(fit, (x[te] - mean) / std)
            uas[i, k] = compute_metrics(y[te], p.argmax(1))["ua"]
            losses[i, k] = _log_loss(p, y[te])
    return [
        {"cv_ua": float(u), "cv_loss": float(v)}
        for u, v in zip(uas.mean(1), losses.mean(1), strict=True)
    ]


def fit_linear(
    cfg: TrainConfig,
    head: LinearClassifier,
    train: Any,
    val: Any | None,
) -> tuple[list[dict[str, float]], int]:
    """Fit ``head`` in place on ``train`` (a :class:`~edgeser.training.trainer.FeatureSet`),
    choosing ``C`` by cross-validation over its speakers (or on ``val``, see the module);
    returns the history (one record per ``C`` tried) and the index of the chosen one."""
    from threadpoolctl import threadpool_limits

    # 88 features x a few hundred rows: threaded BLAS only adds synchronisation (8x slower
    # on a busy 2-core machine), and one thread rounds the same way on every machine
    with threadpool_limits(limits=1):
        return _fit_linear(cfg, head, train, val)


def _fit_linear(
    cfg: TrainConfig,
    head: LinearClassifier,
    train: Any,
    val: Any | None,
) -> tuple[list[dict[str, float]], int]:
    x_clean, _, _ = _rows(train, with_views=False)
    mean, std = _standardizer(cfg, x_clean)
    head.set_standardization(mean, std)
    x, y, groups = _rows(train, with_views=True)
    clean = np.arange(len(x)) < len(x_clean)
    z = (x - mean) / std
    has_val = val is not None and len(val) > 0
    zv = yv = None
    if has_val:
        xv, yv, _ = _rows(val, with_views=False)
        zv = (xv - mean) / std
    by_cv = len(set(groups.tolist())) >= 2
    grid = C_GRID if by_cv or has_val else (DEFAULT_C,)
    history: list[dict[str, float]] = [{"epoch": i, "C": c} for i, c in enumerate(grid)]
    if by_cv:
        for record, scores in zip(
            history, cross_validate(cfg, x, y, groups, clean, grid), strict=True
        ):
            record.update(scores)
    fits = list(_path(cfg, grid, z, y))
    for record, fit in zip(history, fits, strict=True):
        record["train_loss"] = _log_loss(_probs(fit, z), y)
        if has_val:
            pv = _probs(fit, zv)
            m = compute_metrics(yv, pv.argmax(1))
            record.update(val_loss=_log_loss(pv, yv), val_ua=m["ua"], val_wa=m["wa"])
    score = "cv" if by_cv else "val" if has_val else None
    best = (
        0
        if score is None
        else max(
            range(len(grid)),
            key=lambda i: (history[i][f"{score}_ua"], -history[i][f"{score}_loss"]),
        )
    )
    log.info(
        "logistic regression: C=%g (%s)",
        grid[best],
        {
            "cv": "cross-validated over the training speakers",
            "val": "chosen on the validation speakers",
            None: "default",
        }[score],
    )
    classes, coef, intercept = fits[best]
    if len(classes) != len(LABELS):  # fit() refuses a training set without every class
        raise ValueError(f"the training rows hold {len(classes)} of {len(LABELS)} classes")
    head.set_weights(coef, intercept)
    return history, best
