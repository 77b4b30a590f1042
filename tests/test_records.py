"""The typed records between stages: a fold's outcome and its JSON forms (the fold cache
``record.json`` and ``results.json``'s entry), predictions and their CSV, calibration,
and the feature container."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from edgeser.config import TrainConfig
from edgeser.core.io import write_json
from edgeser.data.labels import DIMENSIONS, LABELS
from edgeser.evaluation.confidence import Calibration, apply_temperature
from edgeser.evaluation.records import FoldResult, Predictions, write_predictions
from edgeser.features.container import Features

_CAL = {"ece": 0.1, "brier": 0.5, "nll": 1.2, "n": 3}

#: A fold's ``record.json`` as the fold cache has always written it: the fold's entry of
#: ``results.json`` in this key order, then ``_pred`` and ``_key``.
OLD_RECORD = {
    "name": "fold1",
    "test_session": "Ses01",
    "train_speakers": ["iemocap:Ses02F", "iemocap:Ses02M"],
    "val_speakers": ["iemocap:Ses03F"],
    "test_speakers": ["iemocap:Ses01F"],
    "n_train": 20,
    "n_val": 4,
    "n_test": 3,
    "split_sha256": "0123456789abcdef",
    "best_epoch": 2,
    "train_seconds": 1.234,
    "history": [{"epoch": 1, "loss": 1.3}, {"epoch": 2, "loss": 1.1}],
    "metrics": {"wa": 0.5, "ua": 0.5, "macro_f1": 0.4},
    "calibration": {
        "method": "temperature",
        "temperature": 1.5,
        "low_confidence_below": 0.4,
        "n_val": 4,
        "val": {"before": _CAL, "after": _CAL},
        "test": {"before": _CAL, "after": _CAL},
    },
    "dimensions": {"arousal": {"ccc": 0.1}, "n": 2},
    "_pred": {
        "ids": ["a", "b", "c"],
        "y_true": [0, 1, 3],
        "y_pred": [0, 2, 3],
        "probs": [[0.7, 0.1, 0.1, 0.1], [0.2, 0.2, 0.5, 0.1], [0.1, 0.1, 0.1, 0.7]],
        "probs_raw": [[0.6, 0.2, 0.1, 0.1], [0.3, 0.2, 0.4, 0.1], [0.2, 0.1, 0.1, 0.6]],
        "dims": [[0.5, 0.4, 0.3], [0.1, 0.2, 0.3], [0.9, 0.8, 0.7]],
        "dims_true": [[0.5, 0.5, 0.5], [None, None, None], [1.0, 0.75, 0.25]],
    },
    "_key": "fedcba9876543210",
}


def test_a_fold_cache_entry_reads_back_to_the_same_bytes(tmp_path: Path) -> None:
    fold = FoldResult.from_json(OLD_RECORD)
    assert fold.name == "fold1" and fold.predictions.y_pred == [0, 2, 3]
    assert fold.calibration is not None and fold.calibration.temperature == 1.5
    assert fold.calibration.test == OLD_RECORD["calibration"]["test"]
    doc = fold.to_json(OLD_RECORD["_key"])
    assert list(doc) == list(OLD_RECORD) and doc == OLD_RECORD
    write_json(tmp_path / "old.json", OLD_RECORD)
    write_json(tmp_path / "new.json", doc)
    assert (tmp_path / "new.json").read_bytes() == (tmp_path / "old.json").read_bytes()
    record = fold.record()  # results.json's entry: no predictions, no key
    assert list(record) == [k for k in OLD_RECORD if not k.startswith("_")]
    # without calibration and dimensions the keys are absent, not null
    plain = {k: v for k, v in OLD_RECORD.items() if k not in ("calibration", "dimensions")}
    plain["_pred"] = {k: v for k, v in OLD_RECORD["_pred"].items() if not k.startswith("dims")}
    fold = FoldResult.from_json(plain)
    assert fold.calibration is None and fold.dimensions is None
    assert fold.predictions.dims is None
    assert json.dumps(fold.to_json(plain["_key"])) == json.dumps(plain)


def test_the_fold_cache_reuses_a_matching_record_and_reruns_an_unreadable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeser.experiments import pipeline
    from edgeser.split.protocols import Split

    cfg = TrainConfig(encoder="random")
    encoder = SimpleNamespace(identity="enc")
    split = Split("fold1", ["x"], [], ["a", "b", "c"])
    runs = []

    def run_split(*args, **kw):
        runs.append(args)
        return FoldResult.from_json(OLD_RECORD)

    monkeypatch.setattr(pipeline, "run_split", run_split)
    fold = pipeline.run_split_cached(
        cfg, encoder, pd.DataFrame(), Features("pooled"), split, tmp_path, False
    )
    assert len(runs) == 1
    written = json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))
    key = written["_key"]
    assert written == {**OLD_RECORD, "_key": key}
    again = pipeline.run_split_cached(
        cfg, encoder, pd.DataFrame(), Features("pooled"), split, tmp_path, False
    )
    assert len(runs) == 1 and again == fold  # reused
    broken = {k: v for k, v in written.items() if k != "metrics"}
    write_json(tmp_path / "record.json", broken)
    pipeline.run_split_cached(
        cfg, encoder, pd.DataFrame(), Features("pooled"), split, tmp_path, False
    )
    assert len(runs) == 2  # a record that does not read is computed again


def test_predictions_csv(tmp_path: Path) -> None:
    fold = FoldResult.from_json(OLD_RECORD)
    plain = Predictions(["d"], [2], [1], [[0.1, 0.6, 0.2, 0.1]], [[0.1, 0.6, 0.2, 0.1]])
    with_dims = tmp_path / "dims.csv"
    write_predictions(with_dims, {"fold1": fold.predictions})
    df = pd.read_csv(with_dims)
    assert list(df.columns) == [
        "fold",
        "utt_id",
        "label",
        "predicted",
        *(f"p_{c}" for c in LABELS),
        *(f"pred_{d}" for d in DIMENSIONS),
        *DIMENSIONS,
    ]
    assert list(df["label"]) == [LABELS[0], LABELS[1], LABELS[3]]
    assert list(df["predicted"]) == [LABELS[0], LABELS[2], LABELS[3]]
    assert np.isnan(df.loc[1, "arousal"]) and df.loc[2, "dominance"] == 0.25
    path = tmp_path / "two.csv"
    write_predictions(path, {"fold1": Predictions.from_json(OLD_RECORD["_pred"]), "ravdess": plain})
    assert list(pd.read_csv(path)["fold"]) == ["fold1"] * 3 + ["ravdess"]
    write_predictions(path, {"ravdess": plain})
    assert path.read_text(encoding="utf-8").splitlines() == [
        "fold,utt_id,label,predicted," + ",".join(f"p_{c}" for c in LABELS),
        f"ravdess,d,{LABELS[2]},{LABELS[1]},0.1,0.6,0.2,0.1",
    ]


def test_calibration_record() -> None:
    cal = Calibration.from_json(OLD_RECORD["calibration"])
    assert list(cal.to_json()) == list(OLD_RECORD["calibration"])
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.4, 0.1]])
    out = cal.apply(probs)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, apply_temperature(probs, 1.5), rtol=1e-6)
    untested = Calibration(
        temperature=1.5, low_confidence_below=0.4, n_val=4, val={"before": _CAL, "after": _CAL}
    )
    assert "test" not in untested.to_json()
    tested = untested.tested(probs, out, [0, 2])
    assert set(tested.test or ()) == {"before", "after"} and tested.temperature == 1.5
    # a trained folder's training record: its calibration (no "test"), or none
    assert Calibration.of_record({"calibration": untested.to_json()}) == untested
    assert Calibration.of_record({"metrics": {}}) is None


def test_features_standardized_by_group() -> None:
    rng = np.random.default_rng(0)
    clean = {u: rng.normal(size=3).astype(np.float32) for u in "abcd"}
    views = {"a": [clean["a"] + 1], "c": [clean["c"] * 2]}
    feats = Features("functionals", clean, views, seconds=2.0)
    got, got_views = feats.arrays(["c", "a"], with_views=True)
    assert got[0] is clean["c"] and got_views == [views["c"], views["a"]]
    assert feats.arrays(["a"], with_views=False)[1] == []

    def stats(arrays):
        x = np.stack(arrays)
        return x.mean(0), np.ones(3, np.float32)

    out = feats.standardized([["a", "b"], ["c"]], stats, lambda a, m, s: (a - m) / s)
    assert set(out.clean) == {"a", "b", "c"} and set(out.views) == {"a", "c"}  # d: no group
    assert out.kind == "functionals" and out.seconds == 2.0
    np.testing.assert_allclose(out.clean["a"] + out.clean["b"], 0.0, atol=1e-6)
    np.testing.assert_allclose(out.views["a"][0], clean["a"] + 1 - (clean["a"] + clean["b"]) / 2)
    np.testing.assert_allclose(out.clean["c"], 0.0)
