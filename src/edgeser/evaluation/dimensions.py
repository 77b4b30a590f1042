"""Dimensional emotion: arousal, valence and dominance beside the four classes.

IEMOCAP's summary lines give each utterance the mean of its annotators' 1-5 ratings of
valence, activation (arousal) and dominance; the manifest keeps them as ``valence``,
``arousal`` and ``dominance`` columns. edgeser regresses them on the scale ``[0, 1]``
(``(rating - 1) / 4``, stated in an exported model's card), in the order :data:`DIMENSIONS`.
Corpora without dimensional labels (CREMA-D, RAVDESS) have ``NaN`` there: they count
for the class loss only, and their dimensional output is described (mean predicted
arousal and valence per true class and intensity) rather than scored.

Metrics per dimension over the utterances that have labels:

* **CCC**, the concordance correlation coefficient (Lin 1989), the measure of the
  AVEC / MSP-Podcast challenges: ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)``,
  with population (``ddof=0``) moments; 1 is perfect agreement, 0 none, and unlike
  Pearson's r it drops when the predictions are offset or scaled;
* **Pearson's r** (0 where either side is constant);
* **MAE** on the ``[0, 1]`` scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from edgeser.data.labels import DIMENSIONS, LABELS

__all__ = [
    "DIMENSIONS",
    "RATING_RANGE",
    "ccc",
    "describe_by_group",
    "describe_unrated",
    "dimension_metrics",
    "dimension_targets",
    "has_dimension_labels",
    "summarize_dimension_folds",
]

#: IEMOCAP's rating scale, mapped linearly onto [0, 1].
RATING_RANGE: tuple[float, float] = (1.0, 5.0)
#: Scores reported per dimension.
DIMENSION_SCORES: tuple[str, ...] = ("ccc", "pearson", "mae")


def ccc(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Concordance correlation coefficient of two equally long series (population moments).

    Two constant, equal series agree perfectly (1.0); a constant series against a varying
    one has no concordance (0.0).
    """
    a = np.asarray(x, np.float64)
    b = np.asarray(y, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"ccc needs two 1-D series of one length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("ccc of empty series")
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(), b.var()
    cov = ((a - ma) * (b - mb)).mean()
    denom = va + vb + (ma - mb) ** 2
    if denom == 0.0:
        return 1.0
    return float(2.0 * cov / denom)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = a.std(), b.std()
    if sa == 0.0 or sb == 0.0:
        return 0.0
    return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))


def dimension_targets(frame: pd.DataFrame, ids: Sequence[str]) -> np.ndarray:
    """``[N, 3]`` float32 targets on [0, 1] for ``ids`` (rows of ``frame``), in
    :data:`DIMENSIONS` order; ``NaN`` where an utterance has no rating."""
    lo, hi = RATING_RANGE
    index = frame.set_index("utt_id")
    out = np.full((len(ids), len(DIMENSIONS)), np.nan, np.float32)
    for j, dim in enumerate(DIMENSIONS):
        if dim not in index.columns:
            continue
        values = pd.to_numeric(index[dim], errors="coerce").reindex(list(ids)).to_numpy(float)
        out[:, j] = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    return out


def has_dimension_labels(frame: pd.DataFrame) -> bool:
    """Whether any row of ``frame`` carries all three ratings."""
    if not all(d in frame.columns for d in DIMENSIONS):
        return False
    values = frame[list(DIMENSIONS)].apply(pd.to_numeric, errors="coerce")
    return bool(values.notna().all(axis=1).any())


def dimension_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """CCC, Pearson's r and MAE per dimension over the rows whose labels are all finite.

    Returns ``{dimension: {"ccc", "pearson", "mae"}, ..., "n": rows scored}``; with no
    labelled row, ``{"n": 0}``.
    """
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    if t.shape != p.shape or t.ndim != 2 or t.shape[1] != len(DIMENSIONS):
        raise ValueError(f"expected two [N, {len(DIMENSIONS)}] arrays, got {t.shape}, {p.shape}")
    keep = np.isfinite(t).all(axis=1)
    n = int(keep.sum())
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return out
    t, p = t[keep], p[keep]
    for j, dim in enumerate(DIMENSIONS):
        out[dim] = {
            "ccc": ccc(t[:, j], p[:, j]),
            "pearson": _pearson(t[:, j], p[:, j]),
            "mae": float(np.abs(t[:, j] - p[:, j]).mean()),
        }
    return out


def summarize_dimension_folds(folds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample sd (``ddof=1``; 0 for one fold) of each dimension's scores over the
    folds that scored any utterance: ``{"mean": {dim: {score}}, "std": {...}, "folds": k}``."""
    scored = [f for f in folds if f.get("n", 0) > 0]
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    for dim in DIMENSIONS:
        mean[dim], std[dim] = {}, {}
        for score in DIMENSION_SCORES:
            vals = np.array([f[dim][score] for f in scored], np.float64)
            mean[dim][score] = float(vals.mean()) if len(vals) else float("nan")
            std[dim][score] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "folds": len(scored)}


def describe_by_group(
    predicted: np.ndarray, groups: Mapping[str, Sequence[str]], order: Sequence[str] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean (and sd) predicted dimension per group value, for each grouping.

    ``groups`` maps a grouping name (``"label"``, ``"intensity"``) to one value per row
    of ``predicted``; returns ``{grouping: {value: {dim: mean, dim_sd: sd, "n": count}}}``
    (values in ``order`` first when given, then sorted).
    """
    pred = np.asarray(predicted, np.float64)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, values in groups.items():
        vals = np.asarray(list(values), dtype=object)
        if len(vals) != len(pred):
            raise ValueError(f"{name}: {len(vals)} values for {len(pred)} predictions")
        present = [v for v in dict.fromkeys(vals.tolist()) if isinstance(v, str) and v]
        ranked = [v for v in (order or []) if v in present]
        ranked += sorted(v for v in present if v not in ranked)
        table: dict[str, dict[str, float]] = {}
        for v in ranked:
            rows = pred[vals == v]
            entry: dict[str, float] = {"n": len(rows)}
            for j, dim in enumerate(DIMENSIONS):
                entry[dim] = float(rows[:, j].mean())
                entry[f"{dim}_sd"] = float(rows[:, j].std(ddof=1)) if len(rows) > 1 else 0.0
            table[v] = entry
        out[name] = table
    return out


#: Classes of high and low arousal, and the high-arousal pair told apart by valence only.
HIGH_AROUSAL: tuple[str, ...] = ("angry", "happy")
LOW_AROUSAL: tuple[str, ...] = ("neutral", "sad")


def _auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a random positive scores above a random negative (ties: half)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.concatenate([pos, neg])
    ranks = pd.Series(order).rank(method="average").to_numpy()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def describe_unrated(predicted: np.ndarray, frame: pd.DataFrame) -> dict[str, Any]:
    """The dimensional output on a corpus without ratings (RAVDESS, CREMA-D), as numbers.

    * ``by_class`` / ``by_intensity`` / ``by_class_and_intensity``: mean (sd) predicted
      arousal, valence and dominance per true class, per intensity (RAVDESS: normal,
      strong) and per both (:func:`describe_by_group`);
    * ``arousal_auc``: how well predicted arousal ranks the high-arousal classes (angry,
      happy) above the low ones (neutral, sad): 0.5 is chance, 1 perfect;
    * ``valence_auc_happy_vs_angry``: how well predicted valence ranks happy above angry,
      the two high-arousal classes that only valence tells apart.

    "Arousal robust, valence confused" reads as a high first AUC and a second near 0.5.
    """
    pred = np.asarray(predicted, np.float64)
    labels = frame["label"].astype(str).to_numpy()
    groups: dict[str, Sequence[str]] = {"label": labels.tolist()}
    if "intensity" in frame.columns:
        intensity = frame["intensity"].fillna("").astype(str)
        groups["intensity"] = intensity.tolist()
        groups["label_intensity"] = [
            f"{a}/{b}" if b else "" for a, b in zip(labels, intensity, strict=True)
        ]
    order = list(LABELS) + [f"{c}/{i}" for c in LABELS for i in ("normal", "strong")]
    table = describe_by_group(pred, groups, order=order)
    out: dict[str, Any] = {"by_class": table["label"]}
    if "intensity" in table:
        out["by_intensity"] = table["intensity"]
        out["by_class_and_intensity"] = table["label_intensity"]
    a = DIMENSIONS.index("arousal")
    v = DIMENSIONS.index("valence")
    aro = np.isin(labels, HIGH_AROUSAL + LOW_AROUSAL)
    out["arousal_auc"] = _auc(pred[aro, a], np.isin(labels[aro], HIGH_AROUSAL))
    hi = np.isin(labels, HIGH_AROUSAL)
    out["valence_auc_happy_vs_angry"] = _auc(pred[hi, v], labels[hi] == "happy")
    return out
