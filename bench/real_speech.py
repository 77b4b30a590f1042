"""Every model that trains without pretrained weights, on twelve real RAVDESS actors.

eGeMAPS (openSMILE functionals + logistic regression), LIGHT-SERNET (MFCC + 3-path CNN from
scratch, early stopping) and DistilHuBERT with random weights (the SSL pipeline's floor: no
pretraining), each with both normalisations where they apply, on the speech actors of
``--corpora`` (default ``../shared/corpora/ravdess-mini`` and ``ravdess-dev``: actors
01-12, four classes), ``--folds`` speaker-disjoint folds (default 6 of 2 actors),
``--seeds`` seeds (default 3). One ``edgeser compare`` run per normalisation, so that the
paired tests compare models under the same normalisation:

* ``speaker``: per-speaker statistics for every model (eGeMAPS' z-scores per speaker,
  LIGHT-SERNET's per-speaker BatchNorm, the SSL head's per-speaker standardisation):
  transductive, like Pepino et al.'s normalisation;
* ``global``: training-set statistics only (eGeMAPS standardised globally, LIGHT-SERNET and
  the SSL head as exported: ``--feature-norm none`` for both).

Writes ``OUT/<normalisation>/compare.md`` and ``compare.json`` (UA/WA/macro-F1 with
intervals, the spread over seeds, every pair of models tested paired on the same
utterances), then ``OUT/real_speech.md``: the two tables with the minutes each model took,
each model's per-speaker run tested paired against its global one (same folds, utterances
and seeds), and the hardware. Runs resume: a finished fold of a seed is read back, not trained again
(``OUT/*/<model>/``), so an interrupted run loses at most one fold. Not a test: LIGHT-SERNET
takes ~11-12 min per seed on a 2-core CPU; the suite's cheap check on the same data is
``tests/test_egemaps.py::test_egemaps_on_twelve_real_actors_is_at_least_the_plain_pipeline``.

    .venv/bin/python bench/real_speech.py [--out runs/real-speech] [--seeds 3] [--folds 6]
        [--models egemaps,light-sernet,distilhubert] [--norms speaker,global]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd

from edgeser.config import TrainConfig
from edgeser.core.cpu import format_hardware
from edgeser.core.io import write_text
from edgeser.data.manifest import write_manifest
from edgeser.data.recipes import prepare_ravdess
from edgeser.evaluation.records import FoldResult
from edgeser.evaluation.report import PAIRED_HEADER, paired_rows
from edgeser.experiments.compare import compare
from edgeser.experiments.pipeline import eval_sets, paired_settings

HERE = Path(__file__).resolve().parents[1]
CORPORA = [HERE.parent / "shared" / "corpora" / n for n in ("ravdess-mini", "ravdess-dev")]

#: Per normalisation, the ``--feature-norm`` of each model (what it allows).
NORMS: dict[str, dict[str, str]] = {
    "speaker": {"egemaps": "speaker", "light-sernet": "speaker", "distilhubert": "speaker"},
    "global": {"egemaps": "global", "light-sernet": "none", "distilhubert": "none"},
}
#: Model settings beside the normalisation: the SSL encoder without pretrained weights.
SETTINGS: dict[str, dict[str, object]] = {"distilhubert": {"encoder": "random"}}


def twelve_actors(corpora: list[Path], out: Path) -> Path:
    """One manifest of the four-class speech of every actor under ``corpora``."""
    frames = [prepare_ravdess(c) for c in corpora]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["label"].isin(["neutral", "happy", "sad", "angry"])]
    path = out / "ravdess-12.csv"
    write_manifest(frame.reset_index(drop=True), path)
    return path


def fold_results(run: Path, seeds: int, folds: int) -> list[list[FoldResult]]:
    """``runs[seed][fold]`` of one model's finished LOSO run (``run/loso/[seedK/]foldN``)."""
    runs = []
    for k in range(seeds):
        base = run / "loso" / (f"seed{k}" if k else "")
        runs.append(
            [
                FoldResult.from_json(json.loads((base / f"fold{f}" / "record.json").read_text()))
                for f in range(1, folds + 1)
            ]
        )
    return runs


def normalisation_pairs(out: Path, models: list[str], manifest: Path, seeds: int, folds: int):
    """Per model, its ``speaker`` run against its ``global`` one, paired on the same folds,
    utterances and seeds: is the transductive normalisation worth it for that model?"""
    frame = pd.read_csv(manifest)
    cfg = TrainConfig(seeds=seeds)
    lines = ["## Per-speaker against global normalisation, per model", ""]
    for m in models:
        runs = {n: out / n / m for n in ("global", "speaker")}
        if not all((r / "loso").is_dir() for r in runs.values()):
            continue
        sets = {n: eval_sets(fold_results(r, seeds, folds), frame) for n, r in runs.items()}
        test = paired_settings(
            cfg, (f"{m} global", sets["global"]), (f"{m} speaker", sets["speaker"]), variance=False
        )
        lines += [f"{m}: B = speaker, A = global", "", *PAIRED_HEADER, *paired_rows(test), ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", type=Path, nargs="+", default=CORPORA)
    ap.add_argument("--out", type=Path, default=HERE / "runs" / "real-speech")
    ap.add_argument("--folds", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", default="egemaps,light-sernet,distilhubert")
    ap.add_argument("--norms", default="speaker,global")
    args = ap.parse_args()
    # progress lines (extraction, every epoch with its validation UA and an ETA) in a log
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for c in args.corpora:
        if not c.is_dir():
            raise SystemExit(f"{c}: no such corpus folder (the shared RAVDESS actors)")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = twelve_actors(args.corpora, args.out)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    lines = [f"# Real speech: {', '.join(models)} on {manifest.name}", ""]
    for norm in [n.strip() for n in args.norms.split(",") if n.strip()]:
        overrides = {m: {"feature_norm": NORMS[norm][m], **SETTINGS.get(m, {})} for m in models}
        run = {
            "corpus": manifest,
            "out": args.out / norm,
            "base": TrainConfig(seeds=args.seeds),
            "folds": args.folds,
            "cache_dir": args.out / "cache",
            "export": False,
        }
        minutes = {}
        for m in models:  # one model at a time, timed; the joint run below reads them back
            t0 = time.perf_counter()
            compare([m], overrides={m: overrides[m]}, **run)
            minutes[m] = round((time.perf_counter() - t0) / 60, 1)
        compare(models, overrides=overrides, **run)
        md = (args.out / norm / "compare.md").read_text(encoding="utf-8")
        lines += [f"## Normalisation: {norm}", "", md, ""]
        lines += [
            "Minutes per model (all seeds and folds, this run; 0 if read back): "
            + ", ".join(f"{m} {t}" for m, t in minutes.items()),
            "",
        ]
    lines += normalisation_pairs(args.out, models, manifest, args.seeds, args.folds)
    lines += ["```", format_hardware(), "```", ""]
    write_text(args.out / "real_speech.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
