"""``report.md`` and PNG plots for a ``reproduce`` run, beside ``results.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from edgeser.core.io import write_text
from edgeser.data.labels import LABELS
from edgeser.evaluation.dimensions import DIMENSIONS
from edgeser.evaluation.plots import (
    plot_confusion,
    plot_fold_bars,
    plot_per_class_recall,
    plot_reliability,
    plot_valence_arousal,
)
from edgeser.evaluation.uncertainty import verdict
from edgeser.models.registry import MODELS

log = logging.getLogger(__name__)

#: The paper's published protocol figures (percent), shown beside ours. The LOSO reference
#: of each model (the paper's UA for DistilHuBERT, Pepino et al.'s, SUPERB's) is its
#: ``ModelSpec.paper`` in :mod:`edgeser.models.registry`, the one place those live.
PAPER = {
    "cremad_delta_wa": 1.2,
    "cremad_delta_macro_f1": 1.4,
    "cremad_variance_change": -32.0,
    "ravdess_accuracy": 43.29,
    "ravdess_angry_recall": 97.0,
}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ms(
    mean: dict[str, Any], std: dict[str, Any], key: str, ci: dict[str, Any] | None = None
) -> str:
    """``mean ± sd`` in percent, with the 95 % interval of the mean when given."""
    return f"{100 * mean[key]:.1f} ± {100 * std[key]:.1f}" + ci_text((ci or {}).get(key))


def ci_text(ci: list[float] | None, signed: bool = False) -> str:
    """`` [lo, hi]`` of a 95 % interval (percent, or points with ``signed``); empty when
    there is none."""
    if not ci:
        return ""
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return " [" + ", ".join(fmt.format(100 * v) for v in ci) + "]"


def _ci_cell(ci: list[float] | None) -> str:
    return ci_text(ci).strip() or "–"


def _p(x: float | None) -> str:
    if x is None:
        return "–"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


#: Names of the figures a paired test compares, as the reports print them.
METRIC_NAMES = {
    "wa": "WA",
    "ua": "UA",
    "macro_f1": "macro-F1",
    "f1:neutral": "neutral F1",
    "recall:sad": "sad recall",
}


def paired_rows(test: dict[str, Any]) -> list[str]:
    """Markdown rows ``| metric | B − A (points) | 95 % CI | p (bootstrap) | p (permutation)
    | claim |`` of a :func:`edgeser.evaluation.uncertainty.paired_test` result."""
    rows = []
    for m, t in test["metrics"].items():
        rows.append(
            f"| {METRIC_NAMES.get(m, m)} | {100 * t['diff']:+.1f} | "
            f"{ci_text(t['ci95'], signed=True).strip()} | {_p(t['p_bootstrap'])} | "
            f"{_p(t['p_permutation'])} | {verdict(t['ci95'])} |"
        )
    return rows


PAIRED_HEADER = [
    "| figure | B − A (points) | 95 % CI | p (bootstrap) | p (permutation) | "
    'claim "B differs from A" |',
    "|---|---:|---|---:|---:|---|",
]

#: What the intervals mean, said once in every report that prints them.
CI_NOTE = (
    "Brackets: 95 % confidence intervals from a bootstrap over test utterances, "
    "resampled within each test speaker (a speaker bootstrap is degenerate with the "
    "1–2 test speakers of a fold), so they cover the sampling of utterances of these "
    "speakers, not the variation between speakers (the sd over folds shows that). "
    "Differences between settings are tested paired, on the same folds and "
    "utterances; a claim is *supported* only when its interval excludes 0."
)


def _arch(source: str) -> str:
    """The architecture a random encoder source names (``random``: DistilHuBERT)."""
    return source.split(":", 1)[1] if source.startswith("random:") else "DistilHuBERT"


def write_report(out: Path, results: dict[str, Any]) -> Path:
    """Write ``report.md`` and the plots; returns the report's path."""
    plots = out / "plots"
    lines: list[str] = ["# edgeser reproduction report", ""]
    enc = results["encoder"]
    if enc.get("is_random"):
        lines += [
            f"> **WARNING: RANDOM ENCODER.** The encoder has the exact {_arch(enc['source'])} "
            "architecture but *randomly initialised weights* (no pretrained checkpoint was "
            "given). The "
            "numbers below test the pipeline; they are NOT comparable to the paper's.",
            "",
        ]
    model = results.get("model", "distilhubert")
    precision = enc.get("precision", results.get("config", {}).get("precision", "fp32"))
    lines += [
        f"Model: `{model}`; encoder: `{enc['source']}` (identity `{enc['identity']}`, "
        f"{precision} arithmetic); edgeser {results['edgeser_version']}; "
        f"seed {results['seed']}.",
        "",
    ]
    if "data" in results:
        lines += [
            "## Data",
            "",
            "| corpus | utterances | speakers | hours | " + " | ".join(LABELS) + " |",
            "|---|---|---|---|" + "---|" * len(LABELS),
        ]
        for name, d in results["data"].items():
            lines.append(
                f"| {name} | {d['n']} | {d['speakers']} | {d['hours']:.2f} | "
                + " | ".join(str(d["classes"][c]) for c in LABELS)
                + " |"
            )
        lines.append("")
    loso = results.get("loso", {})
    if loso:
        first = next(iter(loso.values()))
        seeded = "seeds" in first
        lines += [
            "## Leave-one-session-out (speaker-independent)",
            "",
            "Mean ± sd over folds (%) [95 % interval of the mean]"
            + (f", seed {results['seed']}" if seeded else "")
            + "; validation speakers come from the training "
            "sessions; CREMA-D (when used) is in training only.",
            "",
            "| setting | WA | UA | macro-F1 | pooled UA | paper UA |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in loso.items():
            paper = _loso_reference(model) if name == "iemocap" else "–"
            ci = s.get("ci95", {})
            lines.append(
                f"| {name} | {_ms(s['mean'], s['std'], 'wa', ci.get('mean'))} | "
                f"{_ms(s['mean'], s['std'], 'ua', ci.get('mean'))} | "
                f"{_ms(s['mean'], s['std'], 'macro_f1', ci.get('mean'))} | "
                f"{_pct(s['pooled']['ua'])}"
                f"{ci_text(ci.get('pooled', {}).get('ua'))} | {paper} |"
            )
        lines += ["", CI_NOTE, ""]
        if seeded:
            lines += _seed_lines(loso)
        for name, s in loso.items():
            lines += [
                f"### Folds: {name}",
                "",
                "| fold | test session | test speakers | "
                "val speakers | n train/val/test | WA | UA | macro-F1 |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for f in s["folds"]:
                m, ci = f["metrics"], f.get("ci95", {})
                lines.append(
                    f"| {f['name']} | {f['test_session']} | {', '.join(f['test_speakers'])} | "
                    f"{', '.join(f['val_speakers']) or '–'} | "
                    f"{f['n_train']}/{f['n_val']}/{f['n_test']} | "
                    + " | ".join(_pct(m[k]) + ci_text(ci.get(k)) for k in ("wa", "ua", "macro_f1"))
                    + " |"
                )
            lines.append("")
            plot_confusion(
                s["pooled"]["confusion"],
                LABELS,
                plots / f"confusion_loso_{name}.png",
                title=f"LOSO {name} (pooled over folds)",
            )
            lines += [f"![confusion {name}](plots/confusion_loso_{name}.png)", ""]
        plot_fold_bars(
            {k: [f["metrics"] for f in v["folds"]] for k, v in loso.items()},
            path=plots / "loso_folds.png",
            title="LOSO per fold",
        )
        lines += ["![per-fold metrics](plots/loso_folds.png)", ""]
    if "delta" in results:
        lines += _cremad_lines(results)
    prod = results.get("production")
    if prod:
        m = prod["metrics"]
        lines += [
            "## Production model",
            "",
            "All IEMOCAP (+ CREMA-D in training) shuffled; 5 % validation, 5 % test "
            "drawn per utterance. **This split is speaker-dependent** (test speakers "
            "are also in training), so it overstates accuracy on new speakers; use the "
            "LOSO figures for that.",
            "",
            "Test: "
            + ", ".join(
                f"{METRIC_NAMES[k]} {_pct(m[k])}{ci_text(prod.get('ci95', {}).get(k))}"
                for k in ("wa", "ua", "macro_f1")
            )
            + f" (n = {prod['n_test']}; 95 % intervals in brackets).",
            "",
        ]
    cc = results.get("cross_corpus", {}).get("ravdess")
    if cc:
        m, cci = cc["metrics"], cc.get("ci95", {})
        lines += [
            "## Cross-corpus: production model on RAVDESS",
            "",
            "| | ours | 95 % CI | paper |",
            "|---|---|---|---|",
            f"| accuracy (WA) | {_pct(m['wa'])} | {_ci_cell(cci.get('wa'))} | "
            f"{PAPER['ravdess_accuracy']} |",
            f"| UA | {_pct(m['ua'])} | {_ci_cell(cci.get('ua'))} | – |",
            f"| macro-F1 | {_pct(m['macro_f1'])} | {_ci_cell(cci.get('macro_f1'))} | – |",
            f"| angry recall | {_pct(cc['per_class_recall']['angry'])} | – | "
            f"{PAPER['ravdess_angry_recall']:.0f} |",
            f"| happy predicted as angry | {_pct(cc['high_arousal']['happy_as_angry'])} "
            "| – | most |",
            f"| arousal accuracy (high: angry, happy / low: neutral, sad) | "
            f"{_pct(cc['arousal_accuracy'])} | – | – |",
            f"| errors within the same arousal level | "
            f"{_pct(cc['errors']['share_within_arousal_level'])} | – | – |",
            "",
        ]
        lines += [
            "Per-class recall: "
            + ", ".join(f"{c} {_pct(cc['per_class_recall'][c])}" for c in LABELS)
            + ".",
            "",
        ]
        for col, groups in cc.get("by", {}).items():
            lines += [
                f"By {col}: "
                + "; ".join(
                    f"{v} WA {_pct(g['wa'])} UA {_pct(g['ua'])} (n {g['n']})"
                    for v, g in groups.items()
                )
                + ".",
                "",
            ]
        plot_confusion(
            m["confusion"], LABELS, plots / "confusion_ravdess.png", title="RAVDESS (cross-corpus)"
        )
        lines += ["![confusion RAVDESS](plots/confusion_ravdess.png)", ""]
        by_name = {k: v["pooled"] for k, v in loso.items()} | {"ravdess": m}
        plot_per_class_recall(by_name, plots / "per_class_recall.png", title="Per-class recall")
        lines += ["![per-class recall](plots/per_class_recall.png)", ""]
    lines += _calibration_lines(results, plots)
    lines += _dimension_lines(out, results, plots)
    if "timings_seconds" in results:
        t = results["timings_seconds"]
        lines += [
            "## Time",
            "",
            ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in t.items()) + ".",
            "",
        ]
    lines += [
        "Files: `results.json` (every number above, per fold), `config.yaml` (the "
        "resolved config), `loso/*/predictions.csv`, `cross_corpus_ravdess.csv`, "
        "`production/model.safetensors` + `model.json`.",
        "",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _calibration_lines(results: dict[str, Any], plots: Path) -> list[str]:
    """Temperature scaling: test ECE, Brier and NLL before and after, per setting (mean
    over folds and pooled), the temperatures, and a reliability diagram."""
    loso = {k: v["calibration"] for k, v in results.get("loso", {}).items() if "calibration" in v}
    if not loso:
        return []
    lines = [
        "## Calibration: how far to trust a probability",
        "",
        "One temperature per model, fitted on its validation speakers (never the test "
        "fold); the labels do not change. ECE over 15 bins of the top probability, "
        "multi-class Brier score, negative log-likelihood, on the test folds.",
        "",
        "| setting | ECE before → after | Brier before → after | NLL before → after "
        "| temperature per fold | low_confidence below |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in loso.items():
        b, a = c["mean"]["before"], c["mean"]["after"]
        lines.append(
            f"| {name} | {b['ece']:.3f} → {a['ece']:.3f} | {b['brier']:.3f} → "
            f"{a['brier']:.3f} | {b['nll']:.3f} → {a['nll']:.3f} | "
            + ", ".join(f"{t:.2f}" for t in c["temperature"])
            + " | "
            + ", ".join(f"{t:.2f}" for t in c["low_confidence_below"])
            + " |"
        )
    cc = results.get("cross_corpus", {}).get("ravdess", {}).get("calibration")
    if cc:
        lines.append(
            f"| RAVDESS (production model) | {cc['before']['ece']:.3f} → "
            f"{cc['after']['ece']:.3f} | {cc['before']['brier']:.3f} → "
            f"{cc['after']['brier']:.3f} | {cc['before']['nll']:.3f} → "
            f"{cc['after']['nll']:.3f} | {cc['temperature']:.2f} | – |"
        )
    name, first = next(iter(loso.items()))
    plot_reliability(
        {
            "before": first["pooled"]["reliability_before"],
            "after": first["pooled"]["reliability_after"],
        },
        plots / "reliability.png",
        title=f"reliability, {name} (pooled folds)",
    )
    lines += ["", "![reliability](plots/reliability.png)", ""]
    return lines


def _seed_lines(loso: dict[str, Any]) -> list[str]:
    """The spread over seeds (``--seeds`` > 1): mean ± sd over all seed x fold runs [95 %
    interval of that mean], and the sd of the fold mean from seed to seed."""
    first = next(iter(loso.values()))["seeds"]
    seeds = first["seeds"]
    lines = [
        f"### Over {len(seeds)} seeds ({seeds[0]}–{seeds[-1]})",
        "",
        "The same features, the head retrained with each seed. Mean ± sd over all "
        "seed × fold runs (%) [95 % interval of the mean]; *seed sd*: the sd of the "
        "mean over folds from seed to seed (training randomness alone).",
        "",
        "| setting | runs | WA | UA | macro-F1 | seed sd WA / UA / macro-F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in loso.items():
        sd = s["seeds"]
        ci = sd.get("ci95", {}).get("mean")
        lines.append(
            f"| {name} | {sd['runs']} | "
            + " | ".join(_ms(sd["mean"], sd["sd_runs"], k, ci) for k in ("wa", "ua", "macro_f1"))
            + " | "
            + " / ".join(f"{100 * sd['sd_seed_means'][k]:.1f}" for k in ("wa", "ua", "macro_f1"))
            + " |"
        )
    return [*lines, ""]


def _cremad_lines(results: dict[str, Any]) -> list[str]:
    """The effect of CREMA-D: each of the paper's claims with our difference, its paired
    95 % interval and p-values, and whether the claim is supported."""
    d, vc = results["delta"], results["variance_change"]
    loso = results["loso"]
    test = results.get("paired", {}).get("cremad", {})
    tm, tv = test.get("metrics", {}), test.get("variance_change", {})
    folds = test.get("folds", len(loso["iemocap"]["folds"]))
    runs = test.get("runs", [1, 1])[0]
    pc_i = loso["iemocap"]["mean"]["per_class"]
    pc_c = loso["iemocap+cremad"]["mean"]["per_class"]
    ours = {
        "wa": d["wa"],
        "macro_f1": d["macro_f1"],
        "ua": d["ua"],
        "f1:neutral": pc_c["neutral"]["f1"] - pc_i["neutral"]["f1"],
        "recall:sad": pc_c["sad"]["recall"] - pc_i["sad"]["recall"],
    }
    paper = {
        "wa": f"+{PAPER['cremad_delta_wa']}",
        "macro_f1": f"+{PAPER['cremad_delta_macro_f1']}",
        "ua": "–",
        "f1:neutral": "+5.4",
        "recall:sad": "−2.9",
    }
    lines = [
        "## Effect of adding CREMA-D to training",
        "",
        f"B = with CREMA-D, A = without, on the same {folds} folds and test utterances"
        + (f" ({runs} seeds each)" if runs > 1 else "")
        + ". Differences in points, "
        "fold-mean figures; 95 % interval of the difference from the paired bootstrap "
        "(the same resampled utterances for A and B), p-values two-sided (bootstrap, and "
        "an approximate randomisation test swapping A's and B's predictions per "
        "utterance). A claim is supported only when its interval excludes 0.",
        "",
        "| | ours | 95 % CI | p (bootstrap) | p (permutation) | claim | paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, value in ours.items():
        t = tm.get(key)
        if t is not None and runs > 1:
            value = t["diff"]  # every seed
        cells = (
            f"{ci_text(t['ci95'], signed=True).strip()} | {_p(t['p_bootstrap'])} | "
            f"{_p(t['p_permutation'])} | {verdict(t['ci95'])}"
            if t
            else "– | – | – | –"
        )
        lines.append(
            f"| Δ {METRIC_NAMES[key]} (points) | {100 * value:+.1f} | {cells} | {paper[key]} |"
        )
    for key in ("wa", "ua"):
        t = tv.get(key)
        value = t["value"] if t and runs > 1 else vc.get(key)
        if t:
            claim = (
                "supported"
                if t["supported"]
                else f"not established with {folds} folds (interval includes 0)"
            )
            cells = f"{_rel_ci(t['ci95'])} | – | – | {claim}"
        else:
            cells = "– | – | – | –"
        paper_v = f"{PAPER['cremad_variance_change']:+.0f} %" if key == "wa" else "–"
        lines.append(
            f"| fold variance of {METRIC_NAMES[key]} | {_rel(value)} | {cells} | {paper_v} |"
        )
    lines += [
        "",
        "Fold-variance intervals resample the folds as well as the utterances; "
        "with a handful of folds a variance ratio is poorly determined.",
        "",
    ]
    return lines


def _loso_reference(model: str) -> str:
    """The published IEMOCAP LOSO UA of ``model`` (percent), or its accuracy marked as such."""
    spec = MODELS.get(model)
    ref = (spec.paper or {}) if spec else {}
    if "ua" in ref:
        return f"{100 * ref['ua']:.1f}"
    if "wa" in ref:
        return f"{100 * ref['wa']:.1f} (accuracy)"
    return "–"


def _rel(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.0f} %"


def _rel_ci(ci: list[float]) -> str:
    """A relative change's interval, ``[-93 %, +4230 %]``."""
    if not all(v == v for v in ci):  # NaN: fewer than two folds
        return "–"
    return "[" + ", ".join(_rel(v) for v in ci) + "]"


def _dimension_lines(out: Path, results: dict[str, Any], plots: Path) -> list[str]:
    """The dimensional section (runs with ``--dimensions``): CCC, r and MAE per setting and
    dimension, the production model's test scores, RAVDESS's predicted arousal and valence
    per class and intensity, and the valence-arousal plots."""
    loso = {k: v for k, v in results.get("loso", {}).items() if "dimensions" in v}
    prod = results.get("production", {}).get("dimensions")
    cc = results.get("cross_corpus", {}).get("ravdess", {}).get("dimensions")
    if not (loso or prod or cc):
        return []
    lines = [
        "## Dimensions: arousal, valence, dominance",
        "",
        "A second output of the head regresses IEMOCAP's ratings (mean of the "
        "annotators' 1–5 scores, rescaled to [0, 1]); CREMA-D and RAVDESS have no "
        "ratings and train the classes only. CCC = concordance correlation (1 perfect, "
        "0 none), r = Pearson, MAE on [0, 1].",
    ]
    if results.get("synthetic_data"):
        lines += [
            "",
            "**These corpora are synthetic**: their ratings are generated from "
            "the acoustics the synthesiser renders (arousal from loudness, pitch range "
            "and tempo), so the figures test the pipeline, not real annotators.",
        ]
    lines.append("")
    if loso:
        lines += [
            "| setting | dimension | CCC (mean ± sd) | r | MAE | pooled CCC |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in loso.items():
            d = s["dimensions"]
            for dim in DIMENSIONS:
                m, sd, pooled = d["mean"][dim], d["std"][dim], d["pooled"].get(dim, {})
                lines.append(
                    f"| {name} | {dim} | {m['ccc']:.3f} ± {sd['ccc']:.3f} | "
                    f"{m['pearson']:.3f} ± {sd['pearson']:.3f} | {m['mae']:.3f} ± "
                    f"{sd['mae']:.3f} | {pooled.get('ccc', float('nan')):.3f} |"
                )
        lines.append("")
    if prod and prod.get("n", 0):
        lines += [
            "Production model, test utterances with ratings (n = "
            f"{prod['n']}): "
            + ", ".join(f"{dim} CCC {prod[dim]['ccc']:.3f}" for dim in DIMENSIONS)
            + ".",
            "",
        ]
    if cc:
        lines += [
            "### RAVDESS (no ratings): predicted arousal and valence",
            "",
            f"Arousal ranks angry and happy above neutral and sad with AUC "
            f"{_num(cc.get('arousal_auc'))}; valence ranks happy above angry with AUC "
            f"{_num(cc.get('valence_auc_happy_vs_angry'))} (0.5: chance).",
            "",
            "| true class | intensity | n | arousal | valence | dominance |",
            "|---|---|---|---|---|---|",
        ]
        table = cc.get("by_class_and_intensity") or {}
        rows = [(k.split("/")[0], k.split("/")[1], v) for k, v in table.items()]
        rows += [(c, "all", v) for c, v in cc["by_class"].items()]
        for c, inten, v in sorted(
            rows, key=lambda r: (LABELS.index(r[0]) if r[0] in LABELS else 99, r[1])
        ):
            lines.append(
                f"| {c} | {inten} | {v['n']} | "
                + " | ".join(f"{v[d]:.3f} ± {v[d + '_sd']:.3f}" for d in DIMENSIONS)
                + " |"
            )
        for inten, v in (cc.get("by_intensity") or {}).items():
            lines.append(
                f"| all | {inten} | {v['n']} | "
                + " | ".join(f"{v[d]:.3f} ± {v[d + '_sd']:.3f}" for d in DIMENSIONS)
                + " |"
            )
        lines.append("")
    sources = [
        (
            f"loso/{name}/predictions.csv",
            f"IEMOCAP test folds ({name})",
            f"valence_arousal_loso_{name}.png",
        )
        for name in loso
    ]
    if cc:
        sources.append(
            ("cross_corpus_ravdess.csv", "RAVDESS (cross-corpus)", "valence_arousal_ravdess.png")
        )
    for rel, title, png in sources:
        path = out / rel
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        if "pred_valence" not in frame.columns:
            continue
        plot_valence_arousal(
            frame["pred_valence"],
            frame["pred_arousal"],
            frame["label"],
            plots / png,
            title=title,
            order=LABELS,
        )
        lines += [f"![valence vs arousal: {title}](plots/{png})", ""]
    return lines


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"
