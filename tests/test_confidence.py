"""Temperature scaling and calibration metrics on synthetic predictions with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from edgeser.evaluation.confidence import (
    apply_temperature,
    calibration_metrics,
    fit_temperature,
    low_confidence_threshold,
    reliability,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): softmax(logits) is calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, 4))
    q = _softmax(z)
    labels = np.array([rng.choice(4, p=row) for row in q])
    return z, labels


def test_temperature_recovers_the_overconfidence_it_was_given():
    z, y = _sample(20_000)
    overconfident = _softmax(2.0 * z)  # a model twice as sure as it should be
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(2.0, rel=0.08)
    fixed = apply_temperature(overconfident, t)
    assert (fixed.argmax(1) == overconfident.argmax(1)).all()  # labels never change
    before, after = (calibration_metrics(p, y) for p in (overconfident, fixed))
    assert after["ece"] < 0.02 < before["ece"]
    assert after["nll"] < before["nll"] and after["brier"] < before["brier"]
    np.testing.assert_allclose(apply_temperature(overconfident, 1.0), overconfident, atol=1e-9)


def test_metrics_and_reliability_bins():
    y = np.array([0, 1, 2, 3])
    perfect = np.eye(4)
    m = calibration_metrics(perfect, y)
    assert m["ece"] == pytest.approx(0.0) and m["brier"] == pytest.approx(0.0)
    assert m["nll"] == pytest.approx(0.0, abs=1e-9) and m["n"] == 4
    uniform = np.full((4, 4), 0.25)
    m = calibration_metrics(uniform, y)
    assert m["brier"] == pytest.approx(0.75) and m["nll"] == pytest.approx(np.log(4))
    bins = reliability(uniform, y)
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 4
    full = next(b for b in bins if b["n"])
    assert full["lo"] < 0.25 <= full["hi"] and full["accuracy"] == 0.25


def test_low_confidence_threshold_is_where_predictions_stop_being_right():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.25, 1.0, 5000)
    right = rng.uniform(size=5000) < conf  # calibrated: right with probability conf
    probs = np.zeros((5000, 4))
    probs[:, 0] = conf
    probs[:, 1:] = ((1 - conf) / 3)[:, None]
    labels = np.where(right, 0, 1)
    t = low_confidence_threshold(probs, labels)
    assert 0.4 <= t <= 0.6
    sure = np.tile(np.eye(4), (2, 1))
    assert low_confidence_threshold(sure, np.tile(np.arange(4), 2), min_count=1) > 0.9
    assert low_confidence_threshold(probs, (labels + 1) % 4) == 1.0  # never right
