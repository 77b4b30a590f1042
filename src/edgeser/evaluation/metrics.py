"""Classification metrics for SER: WA, UA, macro-F1, per-class scores, confusion matrix.

Conventions (all rates are fractions in [0, 1], all values plain Python numbers so a
metrics dict is JSON-serialisable as is):

* **WA** (weighted accuracy) is plain accuracy over utterances.
* **UA** (unweighted accuracy, UAR) is the mean per-class recall over the classes that
  *occur in y_true*. A class with no test examples has no recall; counting it as 0 would
  punish the model for the test set's make-up, so it is left out of the mean.
* **macro-F1** is the mean F1 over the classes that occur in y_true *or* y_pred. A class
  that is predicted but never true has F1 = 0 and counts (those predictions are errors);
  a class absent from both has no F1 and is left out.
* Per-class precision/recall/F1 use ``zero_division=0``: an undefined score is reported as
  0 (check ``support`` and the confusion matrix to tell "undefined" from "bad").

Fold summaries use the sample standard deviation (``ddof=1``), the usual "mean ± sd over
folds"; with a single fold the sd is reported as 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from edgeser.data.labels import LABELS

logger = logging.getLogger(__name__)

__all__ = ["compute_metrics", "pool_folds", "summarize_folds", "variance_change"]

#: Scalar metrics summarised over folds and compared between training settings.
SCALAR_METRICS: tuple[str, ...] = ("wa", "ua", "macro_f1")
#: Per-class scores summarised over folds.
PER_CLASS_SCORES: tuple[str, ...] = ("precision", "recall", "f1")


def _to_names(values: Sequence[str | int], labels: Sequence[str], what: str) -> list[str]:
    """Map class indices or names onto label names, rejecting anything unknown."""
    known = set(labels)
    out: list[str] = []
    for v in values:
        if isinstance(v, str):
            if v not in known:
                raise ValueError(f"{what}: unknown label {v!r}; expected one of {list(labels)}")
            out.append(v)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            i = int(v)
            if not 0 <= i < len(labels):
                raise ValueError(f"{what}: class index {i} out of range 0..{len(labels) - 1}")
            out.append(labels[i])
        else:
            raise TypeError(f"{what}: expected a label name or class index, got {v!r}")
    return out


def compute_metrics(
    y_true: Sequence[str | int], y_pred: Sequence[str | int], labels: Sequence[str] = LABELS
) -> dict[str, Any]:
    """Metrics of one evaluation (one fold, one corpus).

    ``y_true``/``y_pred`` hold label names or indices into ``labels``. Returns::

        {"wa", "ua", "macro_f1", "labels": [...], "confusion": [[...]],
         "per_class": {label: {"precision", "recall", "f1", "support"}}, "n"}

    with confusion rows = true class and columns = predicted class, both in ``labels``
    order. UA averages recall over classes present in ``y_true`` only (module docstring).
    """
    labels = list(labels)
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be non-empty and unique, got {labels}")
    true = _to_names(list(y_true), labels, "y_true")
    pred = _to_names(list(y_pred), labels, "y_pred")
    if len(true) != len(pred):
        raise ValueError(f"y_true has {len(true)} items but y_pred has {len(pred)}")
    if not true:
        raise ValueError("cannot compute metrics of an empty evaluation set")

    cm = confusion_matrix(true, pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, zero_division=0
    )
    predicted = cm.sum(axis=0)
    in_true = support > 0
    in_either = in_true | (predicted > 0)
    n = len(true)
    return {
        "wa": float(np.trace(cm) / n),
        "ua": float(recall[in_true].mean()),
        "macro_f1": float(f1[in_either].mean()),
        "labels": labels,
        "confusion": cm.astype(int).tolist(),
        "per_class": {
            lab: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, lab in enumerate(labels)
        },
        "n": n,
    }


def pool_folds(
    y_true_lists: Sequence[Sequence[str | int]],
    y_pred_lists: Sequence[Sequence[str | int]],
    labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """Metrics of all folds' predictions pooled into one evaluation set."""
    if len(y_true_lists) != len(y_pred_lists):
        raise ValueError(f"{len(y_true_lists)} y_true folds but {len(y_pred_lists)} y_pred folds")
    true: list[str | int] = []
    pred: list[str | int] = []
    for k, (t, p) in enumerate(zip(y_true_lists, y_pred_lists, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"fold {k}: y_true has {len(t)} items but y_pred has {len(p)}")
        true.extend(t)
        pred.extend(p)
    return compute_metrics(true, pred, labels)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def summarize_folds(fold_metrics: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and sample sd (ddof=1; 0 for one fold) of per-fold metrics.

    Returns ``{"mean": M, "std": M}`` where ``M`` has ``wa``, ``ua``, ``macro_f1``,
    ``labels`` and ``per_class[label]`` with ``precision``, ``recall``, ``f1``. Confusion
    matrices, supports and ``n`` are not averaged (pool them with :func:`pool_folds`).
    """
    if not fold_metrics:
        raise ValueError("no folds to summarise")
    labels = list(fold_metrics[0]["labels"])
    for k, m in enumerate(fold_metrics):
        if list(m["labels"]) != labels:
            raise ValueError(f"fold {k} has labels {list(m['labels'])}, fold 0 has {labels}")
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key in SCALAR_METRICS:
        mean[key], std[key] = _mean_std([float(m[key]) for m in fold_metrics])
    mean["labels"], std["labels"] = list(labels), list(labels)
    mean["per_class"], std["per_class"] = {}, {}
    for lab in labels:
        mean["per_class"][lab], std["per_class"][lab] = {}, {}
        for score in PER_CLASS_SCORES:
            mu, sd = _mean_std([float(m["per_class"][lab][score]) for m in fold_metrics])
            mean["per_class"][lab][score] = mu
            std["per_class"][lab][score] = sd
    return {"mean": mean, "std": std}


def _rel_var_change(std_a: float, std_b: float) -> float | None:
    var_a, var_b = float(std_a) ** 2, float(std_b) ** 2
    if var_a == 0.0 or not math.isfinite(var_a):
        return None
    return (var_b - var_a) / var_a


@overload
def variance_change(std_a: float, std_b: float) -> float | None: ...


@overload
def variance_change(
    std_a: Mapping[str, Any], std_b: Mapping[str, Any]
) -> dict[str, float | None]: ...


def variance_change(
    std_a: float | Mapping[str, Any], std_b: float | Mapping[str, Any]
) -> float | dict[str, float | None] | None:
    """Relative change of the fold variance from setting A to B: ``(var_b - var_a) / var_a``.

    Pass two ``summarize_folds(...)["std"]`` dicts to get ``{"wa", "ua", "macro_f1"}``, or
    two standard deviations to get one number. ``-0.32`` means B's fold variance is 32 %
    lower (the paper's IEMOCAP → IEMOCAP+CREMA-D figure). ``None`` when ``var_a`` is 0
    (the relative change is undefined).
    """
    if isinstance(std_a, Mapping) and isinstance(std_b, Mapping):
        return {key: _rel_var_change(std_a[key], std_b[key]) for key in SCALAR_METRICS}
    if isinstance(std_a, Mapping) or isinstance(std_b, Mapping):
        raise TypeError("variance_change needs two std dicts or two numbers")
    return _rel_var_change(std_a, std_b)
