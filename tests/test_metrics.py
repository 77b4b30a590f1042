"""Metrics on small cases checked by hand."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from edgeser.data.labels import LABELS
from edgeser.evaluation.metrics import compute_metrics, pool_folds, summarize_folds, variance_change

A, H, N, S = LABELS


def test_hand_checked_case() -> None:
    y_true = [A, A, A, H, H, N, N, N, N, S]
    y_pred = [A, A, H, H, A, N, N, N, S, S]
    m = compute_metrics(y_true, y_pred)
    # correct: A,A | H | N,N,N | S -> 7 / 10
    assert m["wa"] == pytest.approx(0.7)
    # recalls: angry 2/3, happy 1/2, neutral 3/4, sad 1/1
    assert m["ua"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4 + 1) / 4)
    assert m["confusion"] == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 3, 1], [0, 0, 0, 1]]
    # precision: angry 2/3, happy 1/2, neutral 3/3, sad 1/2
    pc = m["per_class"]
    assert pc[A] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert pc[H]["f1"] == pytest.approx(0.5)
    assert pc[N]["f1"] == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert pc[S]["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 6 / 7 + 2 / 3) / 4)
    assert m["labels"] == list(LABELS) and m["n"] == 10
    assert set(m) == {"wa", "ua", "macro_f1", "labels", "confusion", "per_class", "n"}
    # plain Python types: round-trips through JSON unchanged
    assert json.loads(json.dumps(m)) == m
    assert type(m["wa"]) is float and type(pc[A]["support"]) is int
    assert type(m["confusion"][0][0]) is int


def test_indices_equal_names() -> None:
    names = compute_metrics([A, H, N, S, S], [A, N, N, S, A])
    idx = compute_metrics([0, 1, 2, 3, 3], [0, 2, 2, 3, 0])
    assert names == idx


def test_absent_classes_no_warning_no_nan() -> None:
    # sad never occurs; happy never true but once predicted
    y_true = [A, A, N, N]
    y_pred = [A, H, N, N]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(y_true, y_pred)
    # UA only over angry (1/2) and neutral (2/2)
    assert m["ua"] == pytest.approx(0.75)
    # macro-F1 over angry, happy (predicted, F1 0), neutral; sad absent from both
    f1_a = 2 * 1 * 0.5 / 1.5
    assert m["macro_f1"] == pytest.approx((f1_a + 0 + 1) / 3)
    assert m["per_class"][S] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"][H]["precision"] == 0.0
    flat = [m["wa"], m["ua"], m["macro_f1"]]
    flat += [v for d in m["per_class"].values() for v in d.values()]
    assert all(math.isfinite(v) for v in flat)


def test_custom_labels_and_errors() -> None:
    m = compute_metrics(["x", "y"], ["x", "x"], labels=("x", "y"))
    assert m["confusion"] == [[1, 0], [1, 0]] and m["ua"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown label"):
        compute_metrics(["fear"], [A])
    with pytest.raises(ValueError, match="out of range"):
        compute_metrics([4], [0])
    with pytest.raises(ValueError, match="items"):
        compute_metrics([A, H], [A])
    with pytest.raises(ValueError, match="empty"):
        compute_metrics([], [])


def test_summarize_folds() -> None:
    f1 = compute_metrics([A, H, N, S], [A, H, N, S])  # perfect: wa 1
    f2 = compute_metrics([A, H, N, S], [A, A, N, N])  # wa 0.5
    f3 = compute_metrics([A, H, N, S], [A, H, N, N])  # wa 0.75
    s = summarize_folds([f1, f2, f3])
    assert set(s) == {"mean", "std"}
    assert s["mean"]["wa"] == pytest.approx(0.75)
    # sample sd of (1, .5, .75): sqrt(((.25)^2 + (.25)^2 + 0) / 2) = 0.25
    assert s["std"]["wa"] == pytest.approx(0.25)
    assert s["mean"]["ua"] == pytest.approx(0.75)
    assert s["mean"]["per_class"][H]["recall"] == pytest.approx(2 / 3)
    assert s["mean"]["labels"] == list(LABELS) == s["std"]["labels"]
    assert "confusion" not in s["mean"] and "confusion" not in s["std"]
    assert set(s["mean"]["per_class"][A]) == {"precision", "recall", "f1"}
    json.dumps(s)

    single = summarize_folds([f2])
    assert single["std"]["wa"] == 0.0 and single["mean"]["wa"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        summarize_folds([])
    other = compute_metrics(["x"], ["x"], labels=("x", "y"))
    with pytest.raises(ValueError, match="labels"):
        summarize_folds([f1, other])


def test_pool_folds() -> None:
    pooled = pool_folds([[A, H], [N, S, S]], [[A, A], [N, S, N]])
    direct = compute_metrics([A, H, N, S, S], [A, A, N, S, N])
    assert pooled == direct
    assert pooled["n"] == 5 and pooled["wa"] == pytest.approx(0.6)
    with pytest.raises(ValueError):
        pool_folds([[A]], [[A], [H]])
    with pytest.raises(ValueError, match="fold 1"):
        pool_folds([[A], [H, N]], [[A], [H]])


def test_variance_change() -> None:
    std_a = {"wa": 0.05, "ua": 0.04, "macro_f1": 0.0}
    std_b = {"wa": 0.04, "ua": 0.04, "macro_f1": 0.01}
    change = variance_change(std_a, std_b)
    assert change["wa"] == pytest.approx((0.0016 - 0.0025) / 0.0025)  # -36 %
    assert change["ua"] == pytest.approx(0.0)
    assert change["macro_f1"] is None
    assert variance_change(2.0, 1.0) == pytest.approx(-0.75)
    assert variance_change(0.0, 1.0) is None
    s1 = summarize_folds([compute_metrics([A, H], [A, H]), compute_metrics([A, H], [A, A])])
    s2 = summarize_folds([compute_metrics([A, H], [A, H]), compute_metrics([A, H], [A, H])])
    assert variance_change(s1["std"], s2["std"])["wa"] == pytest.approx(-1.0)
    with pytest.raises(TypeError):
        variance_change(std_a, 1.0)  # type: ignore[call-overload]
