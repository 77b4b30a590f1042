"""How calibrated edgeser's probabilities are, before and after temperature scaling, on
real speech, speaker-independent.

Runs ``edgeser evaluate --protocol loso`` on the RAVDESS actors of one or more folders
(default: ``../shared/corpora/ravdess-mini`` and ``ravdess-dev``, 12 actors, four classes)
with ``--folds`` speaker-disjoint folds. Each fold's temperature is fitted on that fold's
validation speakers (never its test speakers) and applied to its test predictions; the
script prints, per model, the test ECE (15 equal-width bins), Brier score and NLL before
and after (mean over folds and pooled over every test utterance), the fitted temperatures
and low-confidence thresholds, and how many test utterances fall under the threshold
(and how many of those are wrong), then the hardware. Writes ``calibration.json`` and a
reliability diagram per model (``reliability-<model>.png``) into ``--out``.

Models: those that train without pretrained weights (eGeMAPS with per-speaker and global
standardisation, LIGHT-SERNET with ``--epochs``). Not a test: the figures move with
the seed (LIGHT-SERNET) and the folds.

    .venv/bin/python bench/calibration.py [--corpus DIR ...] [--folds 6]
        [--models egemaps-speaker egemaps-global light-sernet] [--epochs 30] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from edgeser.config import TrainConfig
from edgeser.core.cpu import format_hardware
from edgeser.data.manifest import write_manifest
from edgeser.data.recipes import prepare_ravdess
from edgeser.experiments.runs import evaluate_loso

MODELS = {
    "egemaps-speaker": ("egemaps", {"feature_norm": "speaker"}),
    "egemaps-global": ("egemaps", {}),
    "light-sernet": ("light-sernet", {"feature_norm": "speaker"}),
}


def _below_threshold(run: Path, thresholds: list[float]) -> tuple[int, int, int]:
    """``(n, under, wrong among under)``: test utterances whose top calibrated probability
    is under their fold's threshold."""
    preds = pd.read_csv(run / "loso" / "predictions.csv")
    cols = [c for c in preds.columns if c.startswith("p_")]
    top = preds[cols].max(axis=1).to_numpy()
    fold = preds["fold"].to_numpy()
    folds = list(pd.unique(fold))  # in the order of the folds' records
    limit = np.array([thresholds[folds.index(f)] for f in fold])
    under = top < limit
    wrong = (preds["label"] != preds["predicted"]).to_numpy()
    return len(preds), int(under.sum()), int((under & wrong).sum())


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    corpora = here.parent / "shared" / "corpora"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--corpus",
        type=Path,
        nargs="+",
        default=[corpora / "ravdess-mini", corpora / "ravdess-dev"],
    )
    ap.add_argument("--folds", type=int, default=6)
    ap.add_argument(
        "--models", nargs="+", choices=sorted(MODELS), default=["egemaps-speaker", "egemaps-global"]
    )
    ap.add_argument("--epochs", type=int, default=30, help="LIGHT-SERNET epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="edgeser-calibration-"))
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.concat([prepare_ravdess(c) for c in args.corpus if c.is_dir()], ignore_index=True)
    if frame.empty:
        raise SystemExit(f"no RAVDESS actors under {', '.join(map(str, args.corpus))}")
    write_manifest(frame, out / "corpus.csv")
    print(
        f"{len(frame)} utterances, {frame['speaker'].nunique()} speakers, "
        f"{args.folds} speaker-disjoint folds; temperature fitted on each fold's "
        "validation speakers"
    )
    print(
        "| model | ECE before | ECE after | Brier before | Brier after | NLL before "
        "| NLL after | T per fold | under threshold (wrong) | UA | s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    report: dict[str, object] = {}
    for key in args.models:
        name, values = MODELS[key]
        if name == "light-sernet":
            values = {**values, "epochs": args.epochs}
        run = out / key
        t0 = time.perf_counter()
        res = evaluate_loso(
            TrainConfig(model=name, seed=args.seed, **values),
            out / "corpus.csv",
            run,
            folds=args.folds,
            progress=False,
            cache_dir=out / "cache",
        )
        took = time.perf_counter() - t0
        s = res["loso"][next(iter(res["loso"]))]
        cal = s["calibration"]
        n, under, wrong = _below_threshold(run, cal["low_confidence_below"])
        pooled = cal["pooled"]
        temps = "/".join(f"{t:.2f}" for t in cal["temperature"])
        print(
            f"| {key} | {pooled['before']['ece']:.3f} | {pooled['after']['ece']:.3f} "
            f"| {pooled['before']['brier']:.3f} | {pooled['after']['brier']:.3f} "
            f"| {pooled['before']['nll']:.3f} | {pooled['after']['nll']:.3f} | {temps} "
            f"| {under}/{n} ({wrong}) | {s['mean']['ua']:.3f} | {took:.0f} |",
            flush=True,
        )
        report[key] = {
            "calibration": cal,
            "ua": s["mean"]["ua"],
            "n": n,
            "under_threshold": under,
            "wrong_under_threshold": wrong,
            "seconds": took,
        }
        for png in sorted(run.rglob("reliability.png"))[:1]:
            (out / f"reliability-{key}.png").write_bytes(png.read_bytes())
    (out / "calibration.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\nECE, Brier, NLL pooled over every test utterance of every fold; wrote {out}")
    print(format_hardware())


if __name__ == "__main__":
    main()
