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

Regularisation strength ``C`` is chosen on the validation speakers by UA (ties: the
lower validation log-loss) from :data:`C_GRID`; without
validation speakers (e.g. a fold that trains on one speaker) ``C = 1`` (scikit-learn's
default), which on standardised features is a moderate penalty. The model is fitted on the
training speakers only, as the networks are (validation speakers select, never train).

Features are standardised before the fit: with ``--feature-norm global`` by the training
utterances' mean and deviation, stored in the model; with ``speaker`` each speaker's
utterances were already standardised by their own statistics
(:meth:`edgeser.experiments.pipeline.Features.speaker_normalized`). Augmented views, if
any were cached (``--aug-views K``; the model's default is 0), are added as extra training
rows; the standardisation statistics come from the clean rows.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from edgeser.config import TrainConfig
from edgeser.evaluate.metrics import compute_metrics
from edgeser.models.egemaps import LinearClassifier
from edgeser.models.registry import normalization
from edgeser.train.normalize import row_stats

log = logging.getLogger(__name__)

__all__ = ["C_GRID", "DEFAULT_C", "fit_linear"]

#: Inverse regularisation strengths tried on the validation speakers.
C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_C = 1.0
_MAX_ITER = 5000


def _rows(data: Any, with_views: bool) -> tuple[np.ndarray, np.ndarray]:
    x = [np.asarray(a, np.float64).reshape(-1) for a in data.clean]
    y = list(data.labels)
    if with_views and data.views:
        for i, views in enumerate(data.views):
            x.extend(np.asarray(v, np.float64).reshape(-1) for v in views)
            y.extend([data.labels[i]] * len(views))
    return np.stack(x), np.asarray(y, np.int64)


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_linear(
    cfg: TrainConfig, head: LinearClassifier, train: Any, val: Any | None,
) -> tuple[list[dict[str, float]], int]:
    """Fit ``head`` in place on ``train`` (a :class:`~edgeser.train.trainer.FeatureSet`),
    choosing ``C`` on ``val``; returns the history (one record per ``C`` tried) and the
    index of the chosen one."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x_clean, _ = _rows(train, with_views=False)
    if normalization(cfg) == "global":
        mean, std = row_stats(x_clean)
    else:
        mean, std = np.zeros(x_clean.shape[1]), np.ones(x_clean.shape[1])
    head.set_standardization(mean, std)
    x, y = _rows(train, with_views=True)
    z = (x - mean) / std
    has_val = val is not None and len(val) > 0
    if has_val:
        xv, yv = _rows(val, with_views=False)
        zv = (xv - mean) / std
    grid = C_GRID if has_val else (DEFAULT_C,)
    history: list[dict[str, float]] = []
    fits = []
    for i, c in enumerate(grid):
        clf = LogisticRegression(C=c, class_weight="balanced" if cfg.class_weights else None,
                                 max_iter=_MAX_ITER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(z, y)
        record: dict[str, float] = {"epoch": i, "C": c,
                                    "train_loss": _log_loss(clf.predict_proba(z), y)}
        if has_val:
            pv = clf.predict_proba(zv)
            m = compute_metrics(yv, pv.argmax(1))
            record.update(val_loss=_log_loss(pv, yv), val_ua=m["ua"], val_wa=m["wa"])
        history.append(record)
        fits.append(clf)
    if has_val:
        best = max(range(len(grid)),
                   key=lambda i: (history[i]["val_ua"], -history[i]["val_loss"]))
    else:
        best = 0
    chosen = fits[best]
    log.info("logistic regression: C=%g", grid[best])
    head.set_weights(chosen.coef_, chosen.intercept_)
    return history, best
