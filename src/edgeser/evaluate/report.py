"""``report.md`` and PNG plots for a ``reproduce`` run, beside ``results.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from edgeser.core.io import write_text
from edgeser.data.labels import LABELS
from edgeser.evaluate.dimensions import DIMENSIONS
from edgeser.evaluate.plots import (
    plot_confusion,
    plot_fold_bars,
    plot_per_class_recall,
    plot_valence_arousal,
)
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


def _ms(mean: dict[str, Any], std: dict[str, Any], key: str) -> str:
    return f"{100 * mean[key]:.1f} ± {100 * std[key]:.1f}"


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
    lines += [f"Model: `{model}`; encoder: `{enc['source']}` (identity `{enc['identity']}`, "
              f"{precision} arithmetic); edgeser {results['edgeser_version']}; "
              f"seed {results['seed']}.", ""]
    if "data" in results:
        lines += ["## Data", "", "| corpus | utterances | speakers | hours | "
                  + " | ".join(LABELS) + " |", "|---|---|---|---|" + "---|" * len(LABELS)]
        for name, d in results["data"].items():
            lines.append(f"| {name} | {d['n']} | {d['speakers']} | {d['hours']:.2f} | "
                         + " | ".join(str(d["classes"][c]) for c in LABELS) + " |")
        lines.append("")
    loso = results.get("loso", {})
    if loso:
        lines += ["## Leave-one-session-out (speaker-independent)", "",
                  "Mean ± sd over folds (%); validation speakers come from the training "
                  "sessions; CREMA-D (when used) is in training only.", "",
                  "| setting | WA | UA | macro-F1 | pooled UA | paper UA |",
                  "|---|---|---|---|---|---|"]
        for name, s in loso.items():
            paper = _loso_reference(model) if name == "iemocap" else "–"
            lines.append(f"| {name} | {_ms(s['mean'], s['std'], 'wa')} | "
                         f"{_ms(s['mean'], s['std'], 'ua')} | "
                         f"{_ms(s['mean'], s['std'], 'macro_f1')} | "
                         f"{_pct(s['pooled']['ua'])} | {paper} |")
        lines.append("")
        for name, s in loso.items():
            lines += [f"### Folds: {name}", "", "| fold | test session | test speakers | "
                      "val speakers | n train/val/test | WA | UA | macro-F1 |",
                      "|---|---|---|---|---|---|---|---|"]
            for f in s["folds"]:
                m = f["metrics"]
                lines.append(
                    f"| {f['name']} | {f['test_session']} | {', '.join(f['test_speakers'])} | "
                    f"{', '.join(f['val_speakers']) or '–'} | "
                    f"{f['n_train']}/{f['n_val']}/{f['n_test']} | {_pct(m['wa'])} | "
                    f"{_pct(m['ua'])} | {_pct(m['macro_f1'])} |")
            lines.append("")
            plot_confusion(s["pooled"]["confusion"], LABELS, plots / f"confusion_loso_{name}.png",
                           title=f"LOSO {name} (pooled over folds)")
            lines += [f"![confusion {name}](plots/confusion_loso_{name}.png)", ""]
        plot_fold_bars({k: [f["metrics"] for f in v["folds"]] for k, v in loso.items()},
                       path=plots / "loso_folds.png", title="LOSO per fold")
        lines += ["![per-fold metrics](plots/loso_folds.png)", ""]
    if "delta" in results:
        d, vc = results["delta"], results["variance_change"]
        ua_i = loso["iemocap"]["mean"]["per_class"]
        ua_c = loso["iemocap+cremad"]["mean"]["per_class"]
        lines += [
            "## Effect of adding CREMA-D to training", "",
            "| | ours | paper |", "|---|---|---|",
            f"| Δ WA (points) | {100 * d['wa']:+.1f} | +{PAPER['cremad_delta_wa']} |",
            f"| Δ macro-F1 (points) | {100 * d['macro_f1']:+.1f} | "
            f"+{PAPER['cremad_delta_macro_f1']} |",
            f"| Δ UA (points) | {100 * d['ua']:+.1f} | – |",
            f"| fold variance of WA | {_rel(vc.get('wa'))} | "
            f"{PAPER['cremad_variance_change']:+.0f} % |",
            f"| fold variance of UA | {_rel(vc.get('ua'))} | – |",
            f"| Δ neutral F1 (points) | "
            f"{100 * (ua_c['neutral']['f1'] - ua_i['neutral']['f1']):+.1f} | +5.4 |",
            f"| Δ sad recall (points) | "
            f"{100 * (ua_c['sad']['recall'] - ua_i['sad']['recall']):+.1f} | −2.9 |",
            "",
        ]
    prod = results.get("production")
    if prod:
        m = prod["metrics"]
        lines += ["## Production model", "",
                  "All IEMOCAP (+ CREMA-D in training) shuffled; 5 % validation, 5 % test "
                  "drawn per utterance. **This split is speaker-dependent** (test speakers "
                  "are also in training), so it overstates accuracy on new speakers; use the "
                  "LOSO figures for that.", "",
                  f"Test: WA {_pct(m['wa'])}, UA {_pct(m['ua'])}, macro-F1 "
                  f"{_pct(m['macro_f1'])} (n = {prod['n_test']}).", ""]
    cc = results.get("cross_corpus", {}).get("ravdess")
    if cc:
        m = cc["metrics"]
        lines += ["## Cross-corpus: production model on RAVDESS", "",
                  "| | ours | paper |", "|---|---|---|",
                  f"| accuracy (WA) | {_pct(m['wa'])} | {PAPER['ravdess_accuracy']} |",
                  f"| UA | {_pct(m['ua'])} | – |",
                  f"| angry recall | {_pct(cc['per_class_recall']['angry'])} | "
                  f"{PAPER['ravdess_angry_recall']:.0f} |",
                  f"| happy predicted as angry | {_pct(cc['high_arousal']['happy_as_angry'])} "
                  "| most |",
                  f"| arousal accuracy (high: angry, happy / low: neutral, sad) | "
                  f"{_pct(cc['arousal_accuracy'])} | – |",
                  f"| errors within the same arousal level | "
                  f"{_pct(cc['errors']['share_within_arousal_level'])} | – |", ""]
        lines += ["Per-class recall: " + ", ".join(
            f"{c} {_pct(cc['per_class_recall'][c])}" for c in LABELS) + ".", ""]
        for col, groups in cc.get("by", {}).items():
            lines += [f"By {col}: " + "; ".join(
                f"{v} WA {_pct(g['wa'])} UA {_pct(g['ua'])} (n {g['n']})"
                for v, g in groups.items()) + ".", ""]
        plot_confusion(m["confusion"], LABELS, plots / "confusion_ravdess.png",
                       title="RAVDESS (cross-corpus)")
        lines += ["![confusion RAVDESS](plots/confusion_ravdess.png)", ""]
        by_name = {k: v["pooled"] for k, v in loso.items()} | {"ravdess": m}
        plot_per_class_recall(by_name, plots / "per_class_recall.png",
                              title="Per-class recall")
        lines += ["![per-class recall](plots/per_class_recall.png)", ""]
    lines += _dimension_lines(out, results, plots)
    if "timings_seconds" in results:
        t = results["timings_seconds"]
        lines += ["## Time", "", ", ".join(f"{k.replace('_', ' ')} {v:.1f} s"
                                           for k, v in t.items()) + ".", ""]
    lines += ["Files: `results.json` (every number above, per fold), `config.yaml` (the "
              "resolved config), `loso/*/predictions.csv`, `cross_corpus_ravdess.csv`, "
              "`production/model.safetensors` + `model.json`.", ""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


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


def _dimension_lines(out: Path, results: dict[str, Any], plots: Path) -> list[str]:
    """The dimensional section (runs with ``--dimensions``): CCC, r and MAE per setting and
    dimension, the production model's test scores, RAVDESS's predicted arousal and valence
    per class and intensity, and the valence-arousal plots."""
    loso = {k: v for k, v in results.get("loso", {}).items() if "dimensions" in v}
    prod = results.get("production", {}).get("dimensions")
    cc = results.get("cross_corpus", {}).get("ravdess", {}).get("dimensions")
    if not (loso or prod or cc):
        return []
    lines = ["## Dimensions: arousal, valence, dominance", "",
             "A second output of the head regresses IEMOCAP's ratings (mean of the "
             "annotators' 1–5 scores, rescaled to [0, 1]); CREMA-D and RAVDESS have no "
             "ratings and train the classes only. CCC = concordance correlation (1 perfect, "
             "0 none), r = Pearson, MAE on [0, 1]."]
    if results.get("synthetic_data"):
        lines += ["", "**These corpora are synthetic**: their ratings are generated from "
                  "the acoustics the synthesiser renders (arousal from loudness, pitch range "
                  "and tempo), so the figures test the pipeline, not real annotators."]
    lines.append("")
    if loso:
        lines += ["| setting | dimension | CCC (mean ± sd) | r | MAE | pooled CCC |",
                  "|---|---|---|---|---|---|"]
        for name, s in loso.items():
            d = s["dimensions"]
            for dim in DIMENSIONS:
                m, sd, pooled = d["mean"][dim], d["std"][dim], d["pooled"].get(dim, {})
                lines.append(
                    f"| {name} | {dim} | {m['ccc']:.3f} ± {sd['ccc']:.3f} | "
                    f"{m['pearson']:.3f} ± {sd['pearson']:.3f} | {m['mae']:.3f} ± "
                    f"{sd['mae']:.3f} | {pooled.get('ccc', float('nan')):.3f} |")
        lines.append("")
    if prod and prod.get("n", 0):
        lines += ["Production model, test utterances with ratings (n = "
                  f"{prod['n']}): " + ", ".join(
                      f"{dim} CCC {prod[dim]['ccc']:.3f}" for dim in DIMENSIONS) + ".", ""]
    if cc:
        lines += ["### RAVDESS (no ratings): predicted arousal and valence", "",
                  f"Arousal ranks angry and happy above neutral and sad with AUC "
                  f"{_num(cc.get('arousal_auc'))}; valence ranks happy above angry with AUC "
                  f"{_num(cc.get('valence_auc_happy_vs_angry'))} (0.5: chance).", "",
                  "| true class | intensity | n | arousal | valence | dominance |",
                  "|---|---|---|---|---|---|"]
        table = cc.get("by_class_and_intensity") or {}
        rows = [(k.split("/")[0], k.split("/")[1], v) for k, v in table.items()]
        rows += [(c, "all", v) for c, v in cc["by_class"].items()]
        for c, inten, v in sorted(rows, key=lambda r: (LABELS.index(r[0]) if r[0] in LABELS
                                                       else 99, r[1])):
            lines.append(f"| {c} | {inten} | {v['n']} | " + " | ".join(
                f"{v[d]:.3f} ± {v[d + '_sd']:.3f}" for d in DIMENSIONS) + " |")
        for inten, v in (cc.get("by_intensity") or {}).items():
            lines.append(f"| all | {inten} | {v['n']} | " + " | ".join(
                f"{v[d]:.3f} ± {v[d + '_sd']:.3f}" for d in DIMENSIONS) + " |")
        lines.append("")
    sources = [(f"loso/{name}/predictions.csv", f"IEMOCAP test folds ({name})",
                f"valence_arousal_loso_{name}.png") for name in loso]
    if cc:
        sources.append(("cross_corpus_ravdess.csv", "RAVDESS (cross-corpus)",
                        "valence_arousal_ravdess.png"))
    for rel, title, png in sources:
        path = out / rel
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        if "pred_valence" not in frame.columns:
            continue
        plot_valence_arousal(frame["pred_valence"], frame["pred_arousal"], frame["label"],
                             plots / png, title=title, order=LABELS)
        lines += [f"![valence vs arousal: {title}](plots/{png})", ""]
    return lines


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"
