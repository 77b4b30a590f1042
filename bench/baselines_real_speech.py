"""LIGHT-SERNET against the eGeMAPS baseline on real speech, speaker-independent.

Trains each model on one RAVDESS actor of ``--corpus`` (a folder of ``Actor_XX`` folders,
default ``../shared/corpora/ravdess-mini``) and tests it on the other(s), every way round
(``edgeser evaluate --protocol loso --folds N``), with the models' defaults: LIGHT-SERNET
with its authors' recipe (300 epochs of batch 32, Adam 1e-4 with exponential decay, L2
1e-6), eGeMAPS with global and with per-speaker standardisation. Prints the UA of every
fold for every seed, the mean, and the angry-vs-sad AUC (the arousal ranking), then the
hardware. eGeMAPS' L-BFGS fit has no random part: one seed. LIGHT-SERNET runs twice: as
the authors ran it, and with ``--feature-norm speaker`` (per-speaker BatchNorm statistics,
the counterpart of eGeMAPS' per-speaker standardisation). Not a test: LIGHT-SERNET's
figures move with the seed (and a CPU's rounding), and training takes ~5-15 min per fold
on a 2-core CPU.

    .venv/bin/python bench/baselines_real_speech.py [--seeds 0 1] [--epochs 300]
        [--corpus ../shared/corpora/ravdess-mini] [--out DIR]
"""

from __future__ import annotations

import argparse
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


def _auc(predictions: Path) -> list[float]:
    from sklearn.metrics import roc_auc_score

    preds = pd.read_csv(predictions)
    return [
        roc_auc_score(f["label"] == "angry", f["p_angry"] - f["p_sad"])
        for _, f in preds[preds["label"].isin(["angry", "sad"])].groupby("fold")
    ]


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--corpus", type=Path, default=here.parent / "shared" / "corpora" / "ravdess-mini"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--epochs", type=int, default=None, help="LIGHT-SERNET epochs (default: the authors' 300)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="edgeser-baselines-"))
    frame = prepare_ravdess(args.corpus)
    write_manifest(frame, out / "corpus.csv")
    folds = int(frame["speaker"].nunique())
    runs = [
        ("egemaps (global)", "egemaps", {}, [0]),
        ("egemaps (per speaker)", "egemaps", {"feature_norm": "speaker"}, [0]),
        (
            "light-sernet",
            "light-sernet",
            {"epochs": args.epochs} if args.epochs else {},
            args.seeds,
        ),
        (
            "light-sernet (per-speaker BatchNorm)",
            "light-sernet",
            {"feature_norm": "speaker"} | ({"epochs": args.epochs} if args.epochs else {}),
            args.seeds,
        ),
    ]
    print(f"{len(frame)} utterances, {folds} speakers, {folds} folds (one speaker tested each)")
    print(
        "| model | seed | UA per fold (tested speaker) | mean UA [95 % CI] | angry-vs-sad AUC | s |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for label, model, values, seeds in runs:
        for seed in seeds:
            run = out / f"{model}-{'-'.join(map(str, values.values())) or 'default'}-s{seed}"
            t0 = time.perf_counter()
            res = evaluate_loso(
                TrainConfig(model=model, seed=seed, **values),
                out / "corpus.csv",
                run,
                folds=folds,
                progress=False,
                cache_dir=out / "cache",
            )
            took = time.perf_counter() - t0
            s = res["loso"][next(iter(res["loso"]))]
            per = [f"{f['metrics']['ua']:.3f} ({','.join(f['test_speakers'])})" for f in s["folds"]]
            aucs = _auc(run / "loso" / "predictions.csv")
            lo, hi = s["ci95"]["mean"]["ua"]
            print(
                f"| {label} | {seed} | {' / '.join(per)} | {s['mean']['ua']:.3f} "
                f"[{lo:.3f}, {hi:.3f}] | "
                f"{np.mean(aucs):.3f} | {took:.0f} |",
                flush=True,
            )
    print()
    print(format_hardware())


if __name__ == "__main__":
    main()
