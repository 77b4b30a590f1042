"""Uncertainty of reported figures: bootstrap intervals, paired tests, spread over seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

import test_pipeline
from edgeser.core.errors import EdgeserError
from edgeser.data.labels import LABELS
from edgeser.evaluation.metrics import compute_metrics
from edgeser.evaluation.uncertainty import (
    EvalSet,
    bootstrap_ci,
    interval,
    paired_test,
    scores,
    summarize_seeds,
    verdict,
)
from test_pipeline import _tiny_cfg

corpora = test_pipeline.corpora  # the tiny corpora and random encoder of the pipeline tests
encoder = test_pipeline.encoder


def _fold(
    rng: np.random.Generator,
    n: int,
    acc: float,
    prefix: str = "u",
    speakers: int = 2,
    y_true: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions correct with probability ``acc`` (errors uniform)."""
    t = rng.integers(0, 4, n) if y_true is None else y_true
    wrong = (t + rng.integers(1, 4, n)) % 4
    return t, np.where(rng.random(n) < acc, t, wrong)


def _set(t: np.ndarray, preds: list[np.ndarray], prefix: str = "u", speakers: int = 2) -> EvalSet:
    ids = [f"{prefix}{i:04d}" for i in range(len(t))]
    return EvalSet.build(ids, t, preds, [f"spk{i % speakers}" for i in range(len(t))])


def test_scores_of_confusion_counts_equal_compute_metrics():
    rng = np.random.default_rng(3)
    for absent in (None, 3):
        t, p = _fold(rng, 97, 0.5)
        if absent is not None:  # a class missing from the truth (and rarely predicted)
            t = np.where(t == absent, 0, t)
        m = compute_metrics(t, p)
        conf = np.asarray(m["confusion"], dtype=float)
        for key in ("wa", "ua", "macro_f1"):
            assert float(scores(conf, key)) == pytest.approx(m[key])
        for lab in LABELS:
            assert float(scores(conf, f"recall:{lab}")) == pytest.approx(
                m["per_class"][lab]["recall"]
            )
            assert float(scores(conf, f"f1:{lab}")) == pytest.approx(m["per_class"][lab]["f1"])
    with pytest.raises(ValueError, match="unknown metric"):
        scores(conf, "auc")


def test_interval_covers_the_known_accuracy_in_simulation():
    """Test sets drawn from a population with accuracy 0.7: the 95 % interval holds 0.7
    about 95 % of the time (and is not vacuous)."""
    rng = np.random.default_rng(0)
    hits, widths = 0, []
    reps = 200
    for r in range(reps):
        t, p = _fold(rng, 160, 0.7)
        ci = interval(_set(t, [p], speakers=4), n_resamples=400, seed=r)["wa"]
        hits += ci[0] <= 0.7 <= ci[1]
        widths.append(ci[1] - ci[0])
    assert 0.89 <= hits / reps <= 0.99
    # binomial sd at n=160: 0.036, so the 95 % interval is about 0.14 wide
    assert 0.10 < float(np.mean(widths)) < 0.18


def test_intervals_are_deterministic_and_shared_by_settings_on_the_same_folds():
    rng = np.random.default_rng(1)
    t, p = _fold(rng, 80, 0.6)
    a = bootstrap_ci([_set(t, [p])], n_resamples=200, seed=4)
    # the same utterances listed in another order are resampled identically
    order = rng.permutation(80)
    ids = [f"u{i:04d}" for i in range(80)]
    shuffled = EvalSet.build(
        [ids[i] for i in order], t[order], [p[order]], [f"spk{i % 2}" for i in order]
    )
    assert bootstrap_ci([shuffled], n_resamples=200, seed=4) == a
    assert bootstrap_ci([_set(t, [p])], n_resamples=200, seed=5) != a
    assert set(a) >= {"level", "method", "mean", "pooled", "folds"} and a["level"] == 0.95


def test_paired_test_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(2)
    a_sets, b_sets, n_sets = [], [], []
    for k in range(5):
        t, a = _fold(rng, 120, 0.55)
        better = np.where(rng.random(120) < 0.25, t, a)  # a quarter of A's errors fixed
        _, other = _fold(rng, 120, 0.55, y_true=t)  # another system as good as A
        a_sets.append(_set(t, [a], prefix=f"f{k}_"))
        b_sets.append(_set(t, [better], prefix=f"f{k}_"))
        n_sets.append(_set(t, [other], prefix=f"f{k}_"))
    real = paired_test(a_sets, b_sets, n_resamples=500, seed=0)
    for key in ("wa", "ua", "macro_f1"):
        m = real["metrics"][key]
        assert m["diff"] > 0.05 and m["ci95"][0] > 0 and m["supported"]
        assert m["p_bootstrap"] < 0.01 and m["p_permutation"] < 0.01
    null = paired_test(a_sets, n_sets, n_resamples=500, seed=0)
    for key in ("wa", "ua", "macro_f1"):
        m = null["metrics"][key]
        assert m["ci95"][0] < 0 < m["ci95"][1] and not m["supported"]
        assert m["p_bootstrap"] > 0.05 and m["p_permutation"] > 0.05
    same = paired_test(a_sets, a_sets, n_resamples=200, seed=0)
    assert (
        same["metrics"]["ua"]["ci95"] == [0.0, 0.0]
        and same["metrics"]["ua"]["p_permutation"] == 1.0
    )
    # 5 folds cannot establish a fold-variance change
    assert real["variance_change"]["wa"]["ci95"][0] < 0 < real["variance_change"]["wa"]["ci95"][1]
    with pytest.raises(EdgeserError, match="same test utterances"):
        paired_test(a_sets, [_set(np.zeros(120, int), [a]), *b_sets[1:]], n_resamples=100)


def test_paired_test_rejects_rarely_under_the_null():
    """Two systems of equal accuracy: the paired bootstrap's interval excludes 0 in about
    5 % of replications, not more."""
    rng = np.random.default_rng(7)
    rejections = 0
    reps = 60
    for r in range(reps):
        t, a = _fold(rng, 150, 0.6)
        _, b = _fold(rng, 150, 0.6, y_true=t)
        res = paired_test(
            [_set(t, [a])], [_set(t, [b])], metrics=("ua",), n_resamples=300, seed=r, variance=False
        )
        rejections += res["metrics"]["ua"]["supported"]
    assert rejections / reps <= 0.15


def test_seed_summary_by_hand():
    runs = [
        [{"wa": 0.5, "ua": 0.4, "macro_f1": 0.3}, {"wa": 0.7, "ua": 0.6, "macro_f1": 0.5}],
        [{"wa": 0.6, "ua": 0.4, "macro_f1": 0.3}, {"wa": 0.8, "ua": 0.6, "macro_f1": 0.5}],
    ]
    s = summarize_seeds([3, 4], runs)
    assert s["seeds"] == [3, 4] and s["runs"] == 4
    assert s["mean"]["wa"] == pytest.approx(0.65)
    assert s["sd_runs"]["wa"] == pytest.approx(np.std([0.5, 0.7, 0.6, 0.8], ddof=1))
    # fold means 0.6 and 0.7 for WA; UA's are equal for both seeds
    assert s["sd_seed_means"]["wa"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert s["sd_seed_means"]["ua"] == pytest.approx(0.0)
    assert s["per_seed"][1]["mean"]["wa"] == pytest.approx(0.7)


def test_verdict_wording():
    assert verdict([0.01, 0.05]) == "supported"
    assert verdict([-0.05, -0.01]) == "supported"
    assert verdict([-0.01, 0.05]) == "not supported (interval includes 0)"
    assert verdict([0.0, 0.0]) == "not supported (interval includes 0)"


def test_interval_and_p_value_agree_when_resamples_tie_at_zero():
    """A UA difference on a few dozen utterances takes few values and many resamples tie at
    exactly 0: the interval excludes 0 exactly when the bootstrap p-value is below 0.05
    (an interpolated end would sit above 0 with 2.5 % of the differences at 0)."""
    from edgeser.evaluation.uncertainty import _percentile, _two_sided

    rng = np.random.default_rng(0)
    for zeros in range(18, 32):
        for sign in (1, -1):
            diffs = np.concatenate(
                [np.zeros(zeros), sign * rng.choice([0.03125, 0.0625, 0.125], 1000 - zeros)]
            )
            ci, p = _percentile(diffs), _two_sided(diffs)
            assert (verdict(ci) == "supported") == (p < 0.05), (zeros, sign, ci, p)
            assert set(ci) <= set(diffs.tolist())  # the ends are resampled values
    assert verdict(_percentile(np.r_[np.zeros(25), np.full(975, 0.1)])) != "supported"


# ------------------------------------------------------------------ through the protocols
def _counting(encoder):
    """``encoder`` with a record of every waveform it encodes (a digest of its samples)."""
    import hashlib

    seen: list[str] = []

    class Counting:
        def __getattr__(self, name):
            return getattr(encoder, name)

        def encode(self, waves, *a, **kw):
            seen.extend(hashlib.sha1(np.ascontiguousarray(w).tobytes()).hexdigest() for w in waves)
            return encoder.encode(waves, *a, **kw)

    return Counting(), seen


def test_seeds_share_the_features_and_report_their_spread(corpora, encoder, tmp_path):
    from edgeser.data.manifest import write_manifest
    from edgeser.data.recipes import prepare_iemocap
    from edgeser.experiments.runs import evaluate_loso

    ie = tmp_path / "ie.csv"
    write_manifest(prepare_iemocap(corpora["iemocap"]), ie)
    out = tmp_path / "lo"
    counting, seen = _counting(encoder)
    cfg = _tiny_cfg(val_speakers=0, seeds=2, seed=0, epochs=2)
    res = evaluate_loso(cfg, ie, out, folds=2, progress=False, encoder=counting)
    assert seen and len(seen) == len(set(seen))  # no waveform encoded twice: one pass
    # the first seed's folds are those of a one-seed run (same folder, same reuse key)
    assert cfg.run_config(0) == _tiny_cfg(val_speakers=0, epochs=2).run_config(0)
    assert (out / "loso" / "fold1" / "model.safetensors").is_file()
    assert (out / "loso" / "seed1" / "fold2" / "model.safetensors").is_file()
    s = res["loso"]["iemocap"]
    seeds = s["seeds"]
    assert seeds["seeds"] == [0, 1] and seeds["runs"] == 4
    assert [p["seed"] for p in seeds["per_seed"]] == [0, 1]
    assert seeds["per_seed"][0]["mean"]["ua"] == pytest.approx(s["mean"]["ua"])
    assert seeds["mean"]["ua"] == pytest.approx(
        np.mean([p["mean"]["ua"] for p in seeds["per_seed"]])
    )
    assert seeds["sd_seed_means"]["ua"] == pytest.approx(
        np.std([p["mean"]["ua"] for p in seeds["per_seed"]], ddof=1)
    )
    for k in ("wa", "ua", "macro_f1"):
        lo, hi = seeds["ci95"]["mean"][k]
        assert 0 <= lo <= hi <= 1
    disk = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert disk["loso"]["iemocap"]["seeds"]["sd_seed_means"] == seeds["sd_seed_means"]
    assert disk["config"]["seeds"] == 2
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "### Over 2 seeds (0–1)" in report
    row = next(x for x in report.splitlines() if x.startswith("| iemocap | 4 |"))
    assert f"{100 * seeds['mean']['ua']:.1f} ± {100 * seeds['sd_runs']['ua']:.1f}" in row
    with pytest.raises(EdgeserError, match="seeds must be >= 1"):
        _tiny_cfg(seeds=0)


def check_cremad_claims(disk: dict, report: str, folds: int) -> None:
    """A reproduce run's paired test of the CREMA-D claims, its intervals and the report's
    wording (called by test_pipeline's reproduce test, which has the run)."""
    from test_evaluate import _table_rows

    test = disk["paired"]["cremad"]
    assert (test["a"], test["b"], test["folds"], test["runs"]) == (
        "iemocap",
        "iemocap+cremad",
        folds,
        [1, 1],
    )
    for key in ("wa", "ua", "macro_f1"):
        t = test["metrics"][key]
        assert t["diff"] == pytest.approx(disk["delta"][key])  # the delta results.json had
        assert t["ci95"][0] <= t["ci95"][1]
        assert 0 < t["p_bootstrap"] <= 1 and 0 < t["p_permutation"] <= 1
        assert t["supported"] == (t["ci95"][0] > 0 or t["ci95"][1] < 0)
    assert set(test["metrics"]) >= {"f1:neutral", "recall:sad"}
    vc = test["variance_change"]["wa"]
    if disk["variance_change"]["wa"] is not None:
        assert vc["value"] == pytest.approx(disk["variance_change"]["wa"])
    for setting in disk["loso"].values():
        assert set(setting["ci95"]) >= {"mean", "pooled", "level", "method"}
        assert all(set(f["ci95"]) == {"wa", "ua", "macro_f1"} for f in setting["folds"])
    assert set(disk["production"]["ci95"]) >= {"wa", "ua", "macro_f1"}
    assert set(disk["cross_corpus"]["ravdess"]["ci95"]) >= {"wa", "ua", "macro_f1"}
    rows = {
        r[0]: r
        for r in _table_rows(report.split("## Effect of adding CREMA-D", 1)[1], "| | ours |")
    }
    for key, name in (("wa", "WA"), ("ua", "UA"), ("macro_f1", "macro-F1")):
        t = test["metrics"][key]
        row = rows[f"Δ {name} (points)"]
        assert row[1] == f"{100 * t['diff']:+.1f}"
        lo, hi = (f"{100 * v:+.1f}" for v in t["ci95"])
        assert row[2] == f"[{lo}, {hi}]"
        assert row[5] == ("supported" if t["supported"] else "not supported (interval includes 0)")
    claim = rows["fold variance of WA"][5]
    if vc["supported"]:
        assert claim == "supported"
    else:
        assert claim == f"not established with {folds} folds (interval includes 0)"
    assert "resampled within each test speaker" in report


def check_compare_pairs(doc: dict, table: str) -> None:
    """``compare``'s paired test of every pair of models, in compare.json and compare.md
    (called by test_baselines' compare test, which has the run)."""
    names = [r["model"] for r in doc["models"]]
    pairs = [(t["a"], t["b"]) for t in doc["paired"]]
    assert pairs == [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    rows = {r["model"]: r for r in doc["models"]}
    for t in doc["paired"]:
        assert t["folds"] == doc["folds"] and "variance_change" not in t
        ua = t["metrics"]["ua"]
        assert ua["diff"] == pytest.approx(rows[t["b"]]["mean"]["ua"] - rows[t["a"]]["mean"]["ua"])
        section = table.split(f"**{t['b']}** (B) vs **{t['a']}** (A):", 1)[1]
        line = next(x for x in section.splitlines() if x.startswith("| UA |"))
        assert line.startswith(f"| UA | {100 * ua['diff']:+.1f} |")
        assert line.endswith(
            "| supported |" if ua["supported"] else "| not supported (interval includes 0) |"
        )
    assert all(
        set(r["ci95"]) == {"wa", "ua", "macro_f1"} and r["seeds"] is None for r in doc["models"]
    )


def test_report_words_claims_by_their_intervals():
    """A real difference is reported as supported, a null one as not, and a fold-variance
    change over 5 folds as not established."""
    from edgeser.evaluation.report import _cremad_lines
    from edgeser.evaluation.uncertainty import SCALARS

    rng = np.random.default_rng(5)
    a_sets, b_sets = [], []
    for k in range(5):
        t, a = _fold(rng, 150, 0.5)
        b = np.where(rng.random(150) < 0.3, t, a)  # WA, UA, F1 clearly better
        a_sets.append(_set(t, [a], prefix=f"f{k}_"))
        b_sets.append(_set(t, [b], prefix=f"f{k}_"))
    better = paired_test(a_sets, b_sets, metrics=(*SCALARS, "recall:sad"), n_resamples=300)
    same = paired_test(a_sets, a_sets, metrics=(*SCALARS, "recall:sad"), n_resamples=300)
    per_class = {c: {"f1": 0.5, "recall": 0.5} for c in LABELS}
    for test, word in ((better, "supported"), (same, "not supported (interval includes 0)")):
        results = {
            "delta": {k: test["metrics"][k]["diff"] for k in SCALARS},
            "variance_change": {k: test["variance_change"][k]["value"] for k in SCALARS},
            "loso": {
                name: {"folds": [{}] * 5, "mean": {"per_class": per_class}}
                for name in ("iemocap", "iemocap+cremad")
            },
            "paired": {"cremad": test},
        }
        lines = _cremad_lines(results)
        row = next(x for x in lines if x.startswith("| Δ UA (points) |"))
        assert row.split(" | ")[5] == word
        var = next(x for x in lines if x.startswith("| fold variance of WA |"))
        if not test["variance_change"]["wa"]["supported"]:
            assert "not established with 5 folds (interval includes 0)" in var
        # a figure without a paired test (here: neutral F1) gets no claim
        assert "| Δ neutral F1 (points) | +0.0 | – | – | – | – | +5.4 |" in lines
