"""``reproduce``: the paper's whole protocol in one call.

1. manifests for IEMOCAP, CREMA-D and RAVDESS (from corpus roots or manifest CSVs);
2. encoder features, cached: clean for every utterance, ``K`` augmented views
   for the training corpora;
3. LOSO on IEMOCAP, 5 folds, without and with CREMA-D in training (each fold's head
   trained ``cfg.seeds`` times on the same features), with a paired test of the difference;
4. the production model (all IEMOCAP + CREMA-D, 5 % validation, 5 % test);
5. cross-corpus evaluation of the production model on RAVDESS;
6. ``results.json``, ``report.md``, PNG plots and per-utterance predictions.

Each fold's outcome is stored in its folder (``record.json``); a re-run with the
same config and split reuses it, so an interrupted ``reproduce`` resumes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.core.io import write_json, write_text
from edgeser.data.labels import LABELS
from edgeser.data.manifest import four_class, read_manifest, validate_manifest, write_manifest
from edgeser.data.recipes import prepare
from edgeser.evaluation.confidence import Calibration
from edgeser.evaluation.metrics import variance_change
from edgeser.evaluation.records import write_predictions
from edgeser.evaluation.report import write_report
from edgeser.evaluation.uncertainty import SCALARS, EvalSet
from edgeser.experiments.pipeline import (
    compute_features,
    cross_corpus,
    paired_settings,
    predictions_interval,
    run_info,
    run_seeds,
    run_split_cached,
    summarise_runs,
)
from edgeser.models.registry import FeatureEncoder, make_encoder
from edgeser.split.protocols import loso_splits, production_split
from edgeser.split.validate import combine_manifests
from edgeser.training.folder import load_trained

log = logging.getLogger(__name__)

#: The figures of the paper's CREMA-D claims, tested paired (B = with CREMA-D − A = without).
CREMAD_CLAIMS = (*SCALARS, "f1:neutral", "recall:sad")


def load_corpus(kind: str, source: str | Path, out_dir: Path, **kw: Any) -> pd.DataFrame:
    """A four-class manifest from a corpus root (prepared now) or a manifest CSV."""
    src = Path(source)
    if src.is_file() and src.suffix.lower() == ".csv":
        df = four_class(read_manifest(src))
    else:
        if not src.exists():
            raise EdgeserError(f"{kind} root not found: {src}")
        df = prepare(kind, src, **kw)
    if df.empty:
        raise EdgeserError(f"{kind}: the manifest is empty")
    validate_manifest(df)
    write_manifest(df, out_dir / "manifests" / f"{kind}.csv")
    return df


def reproduce(
    cfg: TrainConfig,
    *,
    iemocap: str | Path,
    cremad: str | Path | None,
    ravdess: str | Path | None,
    out: str | Path,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    encoder: FeatureEncoder | None = None,
    folds: int | None = None,
    synthetic: bool = False,
) -> dict[str, Any]:
    """Run the paper's protocol; returns the ``results.json`` content. ``synthetic``: the
    corpora are edgeser's synthetic ones (recorded, and said in the report)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ie = load_corpus("iemocap", iemocap, out)
    cr = load_corpus("cremad", cremad, out) if cremad else None
    rv = load_corpus("ravdess", ravdess, out) if ravdess else None
    if encoder is None:
        encoder = make_encoder(cfg)
    frame = combine_manifests(ie, cr, rv)
    train_ids = set(ie["utt_id"]) | (set(cr["utt_id"]) if cr is not None else set())
    feats = compute_features(
        cfg,
        encoder,
        frame,
        train_ids,
        Path(cache_dir) if cache_dir else out / "cache",
        progress=progress,
    )
    timings["features"] = feats.seconds
    info = run_info(cfg, encoder)
    write_text(out / "config.yaml", _yaml(cfg.to_dict()))

    # LOSO, two settings
    t0 = time.perf_counter()
    loso: dict[str, Any] = {}
    settings = [("iemocap", None)] + ([("iemocap+cremad", cr)] if cr is not None else [])
    sets: dict[str, list[EvalSet]] = {}
    for name, extra in settings:
        splits = loso_splits(ie, extra, val_speakers=cfg.val_speakers)
        if folds is not None:
            splits = splits[:folds]
        runs = run_seeds(cfg, encoder, frame, feats, splits, out / "loso" / name, progress)
        loso[name], sets[name] = summarise_runs(cfg, runs, frame)
        write_predictions(
            out / "loso" / name / "predictions.csv", {f.name: f.predictions for f in runs[0]}
        )
    timings["loso_training"] = time.perf_counter() - t0
    results: dict[str, Any] = {**info, "loso": loso}
    if "iemocap+cremad" in loso:
        results["variance_change"] = variance_change(
            loso["iemocap"]["std"], loso["iemocap+cremad"]["std"]
        )
        results["delta"] = {
            m: loso["iemocap+cremad"]["mean"][m] - loso["iemocap"]["mean"][m]
            for m in ("wa", "ua", "macro_f1")
        }
        # the paper's claims, each with its paired test (every seed, the same folds)
        results["paired"] = {
            "cremad": paired_settings(
                cfg,
                ("iemocap", sets["iemocap"]),
                ("iemocap+cremad", sets["iemocap+cremad"]),
                metrics=CREMAD_CLAIMS,
            )
        }

    # production model + cross-corpus
    t0 = time.perf_counter()
    prod_split = production_split(
        ie, cr, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    prod_dir = out / "production"
    prod = run_split_cached(
        cfg.run_config(cfg.seed), encoder, frame, feats, prod_split, prod_dir, progress
    )
    results["production"] = {k: v for k, v in prod.record().items() if k != "history"} | {
        "speaker_dependent": True,
        "training_corpora": ["iemocap"] + (["cremad"] if cr is not None else []),
        "ci95": predictions_interval(cfg, prod.predictions, frame),
    }
    if rv is not None:
        trained = load_trained(prod_dir, encoder)
        analysis, predictions = cross_corpus(
            cfg, trained.model, feats, frame, rv, Calibration.of_record(trained.meta)
        )
        results["cross_corpus"] = {
            "ravdess": {
                **analysis,
                "model": "production",
                "ci95": predictions_interval(cfg, predictions, frame),
            }
        }
        write_predictions(out / "cross_corpus_ravdess.csv", {"ravdess": predictions})
    timings["production_and_cross_corpus"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    results["timings_seconds"] = {k: round(v, 2) for k, v in timings.items()}
    if synthetic:
        results["synthetic_data"] = True
    results["data"] = {
        name: {
            "n": len(d),
            "speakers": int(d["speaker"].nunique()),
            "classes": {c: int((d["label"] == c).sum()) for c in LABELS},
            "hours": round(float(d["duration"].sum()) / 3600, 3),
        }
        for name, d in (("iemocap", ie), ("cremad", cr), ("ravdess", rv))
        if d is not None
    }
    write_json(out / "results.json", results)

    write_report(out, results)
    return results


def _yaml(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
