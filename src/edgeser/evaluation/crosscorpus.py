"""Cross-corpus error analysis: where a model trained on one corpus fails on another.

Beyond the usual metrics this reports the arousal/valence view of the errors
(angry and happy are high-arousal, neutral and sad low; happy is the only
positive-valence class), the high-arousal happy→angry confusion the paper
highlights, and breakdowns by any categorical column the manifest has
(RAVDESS intensity, gender).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from edgeser.data.labels import LABELS
from edgeser.evaluation.metrics import compute_metrics

AROUSAL = {"angry": "high", "happy": "high", "neutral": "low", "sad": "low"}
VALENCE = {"angry": "negative", "happy": "positive", "neutral": "neutral", "sad": "negative"}


def error_analysis(
    rows: pd.DataFrame,
    y_true: Sequence[int],
    y_pred: Sequence[int],
    *,
    by: Sequence[str] = ("intensity", "gender"),
) -> dict[str, Any]:
    """Metrics plus arousal/valence views and per-group breakdowns of one test set."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    true_l = [LABELS[i] for i in t]
    pred_l = [LABELS[i] for i in p]
    out: dict[str, Any] = {"metrics": compute_metrics(t, p)}
    out["per_class_recall"] = {c: out["metrics"]["per_class"][c]["recall"] for c in LABELS}
    aro_t = [AROUSAL[x] for x in true_l]
    aro_p = [AROUSAL[x] for x in pred_l]
    val_t = [VALENCE[x] for x in true_l]
    val_p = [VALENCE[x] for x in pred_l]
    out["arousal_accuracy"] = float(np.mean([a == b for a, b in zip(aro_t, aro_p, strict=True)]))
    out["valence_accuracy"] = float(np.mean([a == b for a, b in zip(val_t, val_p, strict=True)]))
    high = [i for i, a in enumerate(aro_t) if a == "high"]
    errors = [i for i in range(len(t)) if t[i] != p[i]]
    same_arousal = [i for i in errors if aro_t[i] == aro_p[i]]
    out["errors"] = {
        "n": len(errors),
        "within_arousal_level": len(same_arousal),
        "share_within_arousal_level": len(same_arousal) / len(errors) if errors else 0.0,
    }
    happy = [i for i in high if true_l[i] == "happy"]
    angry = [i for i in high if true_l[i] == "angry"]
    out["high_arousal"] = {
        "happy_as_angry": _rate(happy, pred_l, "angry"),
        "angry_as_happy": _rate(angry, pred_l, "happy"),
        "n_happy": len(happy),
        "n_angry": len(angry),
    }
    groups: dict[str, Any] = {}
    for col in by:
        if col not in rows.columns:
            continue
        values = rows[col].astype(str).to_numpy()
        groups[col] = {}
        for v in sorted(set(values)):
            idx = np.flatnonzero(values == v)
            groups[col][v] = compute_metrics(t[idx], p[idx]) | {"n": len(idx)}
            if col == "intensity":
                hap = [i for i in idx if true_l[i] == "happy"]
                groups[col][v]["happy_as_angry"] = _rate(hap, pred_l, "angry")
    out["by"] = groups
    return out


def _rate(idx: Sequence[int], pred: Sequence[str], target: str) -> float | None:
    if not idx:
        return None
    return float(np.mean([pred[i] == target for i in idx]))
