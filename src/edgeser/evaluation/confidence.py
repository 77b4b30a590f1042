"""How far to trust a probability: temperature scaling, calibration metrics, the
``low_confidence`` threshold.

- **Temperature scaling** (Guo et al. 2017): one scalar ``T`` per model, fitted on the
  validation speakers' predictions by minimising their negative log-likelihood;
  calibrated probabilities are ``softmax(z / T)`` of the logits ``z``, which from
  probabilities is ``p^(1/T)`` renormalised (log-probabilities are the logits up to a
  constant). The label never changes (argmax is unchanged by ``T > 0``).
- **Metrics**: expected calibration error over 15 equal-width bins of the top
  probability (``sum_b n_b/N |acc_b - conf_b|``), the multi-class Brier score (mean
  squared distance of the probability vector to the one-hot truth), and the negative
  log-likelihood; :func:`reliability` gives the diagram's bins.
- **low_confidence**: a prediction whose calibrated top probability is below the
  threshold :func:`low_confidence_threshold` chose on validation data: the lower edge of
  the first top-probability bin whose validation predictions were right at least half the
  time. Calibrated, that is about a probability of 0.5.

Hand-written: scikit-learn's calibration handles binary problems and refits a classifier;
this is the one-scalar, multi-class, post-hoc method the literature compares against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

__all__ = [
    "BINS",
    "Calibration",
    "apply_temperature",
    "calibration_metrics",
    "fit_temperature",
    "low_confidence_threshold",
    "reliability",
]

#: Equal-width bins of the top probability for the ECE and the reliability diagram.
BINS = 15
_EPS = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: probabilities ``[N, C]`` rescaled by temperature ``T``."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1.0)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0)
    return float(-np.mean(np.log(p)))


def fit_temperature(
    probs: np.ndarray, labels: Sequence[int], *, low: float = 0.05, high: float = 20.0
) -> float:
    """The ``T`` in ``[low, high]`` that minimises the NLL of ``labels`` under
    :func:`apply_temperature` (a bounded search over ``log T``)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, np.float64)
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(
        lambda t: _nll(apply_temperature(p, float(np.exp(t))), y),
        bounds=(np.log(low), np.log(high)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(res.x))


def reliability(
    probs: np.ndarray, labels: Sequence[int], bins: int = BINS
) -> list[dict[str, float]]:
    """Per equal-width bin of the top probability: ``lo``, ``hi``, ``n``, mean
    ``confidence`` and ``accuracy`` (empty bins have ``n`` 0 and no means)."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, dtype=np.int64)
    conf = p.max(axis=1)
    right = p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": n,
                "confidence": float(conf[sel].mean()) if n else None,
                "accuracy": float(right[sel].mean()) if n else None,
            }
        )
    return out


def calibration_metrics(
    probs: np.ndarray, labels: Sequence[int], bins: int = BINS
) -> dict[str, float]:
    """``{"ece", "brier", "nll", "n"}`` of probabilities ``[N, C]`` against ``labels``."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    if n == 0:
        return {"ece": float("nan"), "brier": float("nan"), "nll": float("nan"), "n": 0}
    ece = sum(
        b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability(p, y, bins) if b["n"]
    )
    onehot = np.zeros_like(p)
    onehot[np.arange(n), y] = 1.0
    brier = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    return {"ece": float(ece), "brier": brier, "nll": _nll(p, y), "n": n}


def low_confidence_threshold(
    probs: np.ndarray, labels: Sequence[int], bins: int = BINS, min_count: int = 5
) -> float:
    """Where validation predictions start being right at least half the time: going up the
    ``bins`` equal-width bins of the top probability, the lower edge of the first bin
    (holding ``min_count`` predictions or more) whose accuracy is 50 % or more; 1.0 when
    none is (every prediction is then ``low_confidence``)."""
    for b in reliability(probs, labels, bins):
        if b["n"] >= min_count and b["accuracy"] >= 0.5:
            return float(b["lo"])
    return 1.0


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Temperature scaling fitted on a model's validation speakers: the temperature, the
    ``low_confidence`` threshold, and the validation (and, for a fold, test) metrics
    before and after. Its JSON form (:meth:`to_json`) is ``results.json``'s and the
    training record's ``calibration``: ``{"method", "temperature",
    "low_confidence_below", "n_val", "val": {"before", "after"}}`` and, for a fold,
    ``"test"`` as well."""

    method: str = "temperature"
    temperature: float
    low_confidence_below: float
    n_val: int
    #: :func:`calibration_metrics` on the validation predictions, ``{"before", "after"}``.
    val: dict[str, dict[str, float]]
    #: The same on a fold's test predictions (None: not tested).
    test: dict[str, dict[str, float]] | None = None

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """``probs`` calibrated (float32)."""
        return apply_temperature(probs, self.temperature).astype(np.float32)

    def tested(self, raw: np.ndarray, calibrated: np.ndarray, labels: Sequence[int]) -> Calibration:
        """This calibration with ``test``: the metrics of ``raw`` and ``calibrated``
        probabilities against ``labels``."""
        test = {
            "before": calibration_metrics(raw, labels),
            "after": calibration_metrics(calibrated, labels),
        }
        return replace(self, test=test)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.test is None:
            del out["test"]
        return out

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> Calibration | None:
        """The calibration a record holds under ``"calibration"`` (a trained model
        folder's training record), or None."""
        doc = record.get("calibration")
        return cls.from_json(doc) if doc else None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Calibration:
        """The inverse of :meth:`to_json` (a fold record's or a training record's
        ``calibration``; ``TypeError`` when an entry is missing)."""
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})
