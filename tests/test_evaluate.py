"""Evaluation outputs a user reads: the cross-corpus error analysis and the report, whose
tables must say what results.json says."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from edgeser.data.labels import LABELS
from edgeser.evaluation.crosscorpus import error_analysis

A, H, N, S = (LABELS.index(c) for c in ("angry", "happy", "neutral", "sad"))


def test_error_analysis_by_hand() -> None:
    """Eight RAVDESS-like utterances with known predictions: every figure checked."""
    y_true = [A, A, H, H, H, N, S, S]
    y_pred = [A, A, A, A, H, S, S, N]
    rows = pd.DataFrame(
        {
            "intensity": [
                "strong",
                "normal",
                "strong",
                "strong",
                "normal",
                "normal",
                "normal",
                "strong",
            ],
            "gender": ["m", "f", "m", "f", "m", "f", "m", "f"],
        }
    )
    out = error_analysis(rows, y_true, y_pred)
    assert out["metrics"]["wa"] == pytest.approx(4 / 8)
    assert out["per_class_recall"] == pytest.approx(
        {"angry": 1.0, "happy": 1 / 3, "neutral": 0.0, "sad": 0.5}
    )
    # arousal: the happy->angry and neutral<->sad errors stay within their arousal level
    assert out["arousal_accuracy"] == 1.0
    assert out["errors"] == {"n": 4, "within_arousal_level": 4, "share_within_arousal_level": 1.0}
    # valence: angry/happy swaps and neutral/sad swaps cross valence classes
    assert out["valence_accuracy"] == pytest.approx(4 / 8)
    assert out["high_arousal"] == {
        "happy_as_angry": pytest.approx(2 / 3),
        "angry_as_happy": 0.0,
        "n_happy": 3,
        "n_angry": 2,
    }
    strong = out["by"]["intensity"]["strong"]
    assert strong["n"] == 4 and strong["wa"] == pytest.approx(1 / 4)
    assert strong["happy_as_angry"] == 1.0
    assert out["by"]["intensity"]["normal"]["happy_as_angry"] == 0.0
    assert set(out["by"]["gender"]) == {"f", "m"}
    assert "missing" not in error_analysis(rows, y_true, y_pred, by=("missing",))["by"]


def _table_rows(report: str, header: str) -> list[list[str]]:
    """The body rows of the markdown table that starts with ``header``."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def check_report_matches_results(report: str, results: dict) -> None:
    """Every LOSO figure in report.md is results.json's, as printed (percent, 1 decimal)."""

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    def ci(interval: list[float] | None) -> str:
        return "" if interval is None else f" [{pct(interval[0])}, {pct(interval[1])}]"

    summary = {r[0]: r for r in _table_rows(report, "| setting | WA | UA |")}
    assert set(summary) == set(results["loso"])
    for name, s in results["loso"].items():
        row = summary[name]
        cis = s.get("ci95", {})
        for cell, key in zip(row[1:4], ("wa", "ua", "macro_f1"), strict=True):
            assert cell == (
                f"{pct(s['mean'][key])} ± {pct(s['std'][key])}" + ci(cis.get("mean", {}).get(key))
            ), (name, key)
        assert row[4] == pct(s["pooled"]["ua"]) + ci(cis.get("pooled", {}).get("ua"))
        folds = _table_rows(report.split(f"### Folds: {name}", 1)[1], "| fold |")
        assert len(folds) == len(s["folds"])
        for row, fold in zip(folds, s["folds"], strict=True):
            assert row[0] == fold["name"] and row[1] == fold["test_session"]
            assert row[4] == f"{fold['n_train']}/{fold['n_val']}/{fold['n_test']}"
            m, fci = fold["metrics"], fold.get("ci95", {})
            assert row[5:8] == [pct(m[k]) + ci(fci.get(k)) for k in ("wa", "ua", "macro_f1")]
    cc = results.get("cross_corpus", {}).get("ravdess")
    if cc:
        rows = {r[0]: r[1:] for r in _table_rows(report.split("## Cross-corpus", 1)[1], "| |")}
        assert rows["accuracy (WA)"][0] == pct(cc["metrics"]["wa"])
        assert rows["angry recall"][0] == pct(cc["per_class_recall"]["angry"])
        assert rows["happy predicted as angry"][0] == pct(cc["high_arousal"]["happy_as_angry"])
        if "ci95" in cc:
            assert rows["UA"][1] == ci(cc["ci95"]["ua"]).strip()
    prod = results.get("production")
    if prod:
        num = r"([\d.]+)( \[[\d.]+, [\d.]+\])?"
        m = re.search(rf"Test: WA {num}, UA {num}, macro-F1 {num} \(n = (\d+)", report)
        assert m is not None
        pci = prod.get("ci95", {})
        assert m.groups() == (
            *(
                x
                for k in ("wa", "ua", "macro_f1")
                for x in (pct(prod["metrics"][k]), ci(pci.get(k)) or None)
            ),
            str(prod["n_test"]),
        )


def test_report_numbers_check_catches_a_wrong_cell() -> None:
    results = {
        "loso": {
            "iemocap": {
                "mean": {"wa": 0.5, "ua": 0.25, "macro_f1": 0.125},
                "std": {"wa": 0.1, "ua": 0.05, "macro_f1": 0.0},
                "pooled": {"ua": 0.3},
                "folds": [
                    {
                        "name": "fold1",
                        "test_session": "Ses01",
                        "n_train": 3,
                        "n_val": 1,
                        "n_test": 2,
                        "metrics": {"wa": 0.5, "ua": 0.25, "macro_f1": 0.125},
                    }
                ],
            }
        }
    }
    good = (
        "| setting | WA | UA | macro-F1 | pooled UA | paper UA |\n|---|\n"
        "| iemocap | 50.0 ± 10.0 | 25.0 ± 5.0 | 12.5 ± 0.0 | 30.0 | 61.4 |\n\n"
        "### Folds: iemocap\n\n| fold | a | b | c | d | WA | UA | F1 |\n|---|\n"
        "| fold1 | Ses01 | x | y | 3/1/2 | 50.0 | 25.0 | 12.5 |\n"
    )
    check_report_matches_results(good, results)
    with pytest.raises(AssertionError):
        check_report_matches_results(good.replace("25.0 ± 5.0", "25.0 ± 5.1"), results)
