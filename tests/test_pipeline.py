"""Protocols, feature cache, training/resume and the reproduce chain on tiny data."""

from __future__ import annotations

import functools
import json
import operator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgeser.config import TrainConfig, load_config
from edgeser.core.errors import EdgeserError, SplitError
from edgeser.data.labels import LABELS
from edgeser.data.recipes import prepare_cremad, prepare_iemocap, prepare_ravdess
from edgeser.features import FeatureStore, Item, extract
from edgeser.models.ssl import random_encoder, tiny_config
from edgeser.split.protocols import group_sessions, loso_splits, production_split
from edgeser.testing import make_cremad_tree, make_iemocap_tree, make_ravdess_tree

IEMO_LABELS = ["neu", "ang", "sad", "hap", "exc"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    utts = [
        (f"Ses0{s}{'FM'[i % 2]}_impro01_{spk}{i:03d}", IEMO_LABELS[i % 5])
        for s in range(1, 6)
        for spk in "FM"
        for i in range(6)
    ]
    cremad = [f"10{a:02d}_DFA_{e}_XX" for a in range(1, 5) for e in ("ANG", "HAP", "NEU", "SAD")]
    ravdess = [f"03-01-0{e}-01-01-01-0{a}" for a in (1, 2) for e in (1, 3, 4, 5)]
    return {
        "iemocap": make_iemocap_tree(root / "ie", utts, duration=0.3),
        "cremad": make_cremad_tree(root / "cr", cremad, duration=0.3),
        "ravdess": make_ravdess_tree(root / "rv", ravdess, duration=0.3),
    }


@pytest.fixture(scope="module")
def encoder():
    return random_encoder(tiny_config(), seed=0)


def test_loso_splits_are_speaker_disjoint_and_keep_cremad_in_training(corpora):
    ie = prepare_iemocap(corpora["iemocap"])
    cr = prepare_cremad(corpora["cremad"])
    splits = loso_splits(ie, cr, val_speakers=1)
    assert [s.test_session for s in splits] == [f"iemocap:Ses0{k}" for k in range(1, 6)]
    spk = dict(zip(pd.concat([ie, cr])["utt_id"], pd.concat([ie, cr])["speaker"], strict=True))
    cr_ids = set(cr["utt_id"])
    val_speakers = []
    for s in splits:
        parts = {k: {spk[u] for u in v} for k, v in s.parts().items()}
        assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
        assert not (parts["val"] & parts["test"])
        assert parts["test"] == {f"iemocap:Ses0{s.name[-1]}F", f"iemocap:Ses0{s.name[-1]}M"}
        assert cr_ids <= set(s.train) and not (cr_ids & (set(s.val) | set(s.test)))
        assert len(parts["val"]) == 1
        val_speakers += sorted(parts["val"])
    assert len(set(val_speakers)) == 5  # rotates over speakers


def test_split_validator_refuses_leaks(corpora):
    ie = prepare_iemocap(corpora["iemocap"])
    s = loso_splits(ie)[0]
    from edgeser.split.validate import validate_split

    with pytest.raises(SplitError, match="speaker leakage"):
        validate_split(ie, {"train": s.train[1:], "test": [*s.test, s.train[0]]})
    cr = prepare_cremad(corpora["cremad"])
    both = pd.concat([ie, cr], ignore_index=True)
    with pytest.raises(SplitError, match="contains corpus cremad"):
        validate_split(
            both,
            {"train": s.train, "test": [*s.test, cr["utt_id"].iloc[0]]},
            corpus_only={"test": ["iemocap"]},
        )
    with pytest.raises(SplitError, match="at least two sessions"):
        loso_splits(ie[ie["session"] == "iemocap:Ses01"])


def test_group_sessions_and_production_split(corpora):
    rv = prepare_ravdess(corpora["ravdess"])
    assert group_sessions(rv, 2) == [["ravdess:01"], ["ravdess:02"]]
    ie = prepare_iemocap(corpora["iemocap"])
    folds = group_sessions(ie, 2)
    assert sorted(functools.reduce(operator.iadd, folds, [])) == sorted(ie["session"].unique())
    cr = prepare_cremad(corpora["cremad"])
    p = production_split(ie, cr, val_fraction=0.1, test_fraction=0.1, seed=0)
    assert set(cr["utt_id"]) <= set(p.train)
    assert not set(p.test) & set(cr["utt_id"])
    assert len(p.train) + len(p.val) + len(p.test) == len(ie) + len(cr)
    assert set(ie.set_index("utt_id").loc[p.test, "label"]) == set(LABELS)
    assert p == production_split(ie, cr, val_fraction=0.1, test_fraction=0.1, seed=0)


def test_feature_cache_hits_rebuilds_corrupt_and_detects_stale(corpora, encoder, tmp_path):
    rv = prepare_ravdess(corpora["ravdess"])
    store = FeatureStore(tmp_path, encoder.identity, kind="pooled")
    first = extract(rv, encoder, store, views=(0, 1), progress=False)
    assert len(first) == 2 * len(rv)
    arr = first[(rv["utt_id"].iloc[0], 0)]
    assert arr.shape == (encoder.num_hidden_states, 2 * encoder.hidden_size)
    assert not np.allclose(arr, first[(rv["utt_id"].iloc[0], 1)])  # a view differs from clean
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert len(files) == 2 * len(rv)
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    again = extract(rv, encoder, store, views=(0, 1), progress=False)
    assert all(np.array_equal(again[k], first[k]) for k in first)
    assert all(f.stat().st_mtime_ns == mtimes[f] for f in files)  # nothing re-encoded
    files[0].write_bytes(b"\x00garbage")
    item = next(
        Item(u, p, v)
        for u, p in zip(rv["utt_id"], rv["path"], strict=True)
        for v in (0, 1)
        if store.path(store.key(Item(u, p, v))) == files[0]
    )
    assert store.get(item) is None and not files[0].exists()  # corrupt entry removed
    rebuilt = extract(rv, encoder, store, views=(0, 1), progress=False)
    np.testing.assert_allclose(
        rebuilt[(item.utt_id, item.view)], first[(item.utt_id, item.view)], rtol=1e-5, atol=1e-6
    )
    # a changed audio file is a cache miss (the key holds its size and mtime)
    import os

    first_path = rv["path"].iloc[0]
    old_key = store.key(Item(rv["utt_id"].iloc[0], first_path, 0))
    st = os.stat(first_path)
    os.utime(first_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert store.key(Item(rv["utt_id"].iloc[0], first_path, 0)) != old_key
    assert store.get(Item(rv["utt_id"].iloc[0], first_path, 0)) is None
    other = FeatureStore(
        tmp_path, encoder.identity, kind="pooled", augment=store.augment.__class__(gain_p=1.0)
    )
    assert other.key(Item("x", "/nope", 1)) != store.key(Item("x", "/nope", 1))
    assert other.key(Item("x", "/nope", 0)) == store.key(Item("x", "/nope", 0))


def test_views_that_draw_no_transform_reuse_the_clean_features(corpora, encoder, tmp_path):
    from edgeser.audio.augment import AugmentConfig

    rv = prepare_ravdess(corpora["ravdess"])
    calls: list[int] = []

    class Counting:
        identity = encoder.identity

        def encode(self, waves):
            calls.append(len(waves))
            return encoder.encode(waves)

    none = AugmentConfig(gain_p=0.0, noise_p=0.0, pitch_p=0.0, polarity_p=0.0)
    store = FeatureStore(tmp_path / "a", encoder.identity, kind="pooled", augment=none)
    out = extract(rv, Counting(), store, views=(0, 1, 2), progress=False)
    assert sum(calls) == len(rv)  # only the clean versions were encoded
    for u in rv["utt_id"]:
        assert np.array_equal(out[(u, 1)], out[(u, 0)]) and np.array_equal(out[(u, 2)], out[(u, 0)])
    assert len(list((tmp_path / "a").rglob("*.safetensors"))) == 3 * len(rv)  # all cached
    calls.clear()
    polarity = AugmentConfig(gain_p=0.0, noise_p=0.0, pitch_p=0.0, polarity_p=1.0)
    store = FeatureStore(tmp_path / "b", encoder.identity, kind="pooled", augment=polarity)
    extract(rv, Counting(), store, views=(0, 1), progress=False)
    assert sum(calls) == 2 * len(rv)  # a view that changed the audio is encoded


def test_config_overrides_and_validation(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 3\naugment:\n  gain_p: 0.2\nlr: 0.01\n", encoding="utf-8")
    cfg = load_config(f, {"epochs": 2, "seed": 5})
    assert (cfg.epochs, cfg.seed, cfg.augment.gain_p, cfg.lr) == (2, 5, 0.2, 0.01)
    assert TrainConfig().batch_size == 16 and TrainConfig().epochs == 25
    assert TrainConfig().focal_gamma == 2.0 and TrainConfig().label_smoothing == 0.1
    f.write_text("epoch: 3\n", encoding="utf-8")
    with pytest.raises(EdgeserError, match="unknown config keys: epoch"):
        load_config(f, {})
    with pytest.raises(EdgeserError, match="loss must be one of"):
        TrainConfig(loss="hinge")


def _tiny_cfg(**kw) -> TrainConfig:
    base = dict(encoder="random", epochs=3, aug_views=1, precision="fp32", head_hidden=16)
    return TrainConfig(**{**base, **kw})


def test_reproduce_writes_the_results_contract_and_resumes(corpora, encoder, tmp_path):
    from edgeser.experiments.reproduce import reproduce

    out = tmp_path / "run"
    res = reproduce(
        _tiny_cfg(),
        iemocap=corpora["iemocap"],
        cremad=corpora["cremad"],
        ravdess=corpora["ravdess"],
        out=out,
        encoder=encoder,
        progress=False,
    )
    disk = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(disk["loso"]) == {"iemocap", "iemocap+cremad"}
    for setting in disk["loso"].values():
        assert len(setting["folds"]) == 5
        for f in setting["folds"]:
            assert {
                "test_session",
                "train_speakers",
                "val_speakers",
                "test_speakers",
                "n_train",
                "n_val",
                "n_test",
                "metrics",
            } <= set(f)
            assert not set(f["test_speakers"]) & set(f["train_speakers"])
            m = f["metrics"]
            assert m["labels"] == list(LABELS) and len(m["confusion"]) == 4
            assert sum(map(sum, m["confusion"])) == f["n_test"]
            assert 0 <= m["wa"] <= 1 and 0 <= m["ua"] <= 1 and 0 <= m["macro_f1"] <= 1
        assert {"wa", "ua", "macro_f1"} <= set(setting["mean"]) <= set(setting["std"]) | {"n"}
    cremad_folds = disk["loso"]["iemocap+cremad"]["folds"]
    assert all(any(s.startswith("cremad:") for s in f["train_speakers"]) for f in cremad_folds)
    assert all(
        not any(s.startswith("cremad:") for s in f["val_speakers"] + f["test_speakers"])
        for f in cremad_folds
    )
    assert "metrics" in disk["production"] and disk["production"]["speaker_dependent"]
    cc = disk["cross_corpus"]["ravdess"]
    assert cc["n"] == 8 and "intensity" in cc["by"] and "happy_as_angry" in cc["high_arousal"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "RANDOM ENCODER" in report and "speaker-dependent" in report
    from test_evaluate import check_report_matches_results

    check_report_matches_results(report, disk)  # every table cell is results.json's
    from test_uncertainty import check_cremad_claims

    check_cremad_claims(disk, report, folds=5)  # the paired tests and their wording
    assert (out / "plots" / "confusion_ravdess.png").stat().st_size > 1000
    assert (out / "production" / "model.safetensors").is_file()
    # calibration: a temperature per fold from its validation speakers, ECE/Brier/NLL on the
    # test fold before and after, the labels untouched, and the report's table and diagram
    for name, setting in disk["loso"].items():
        cal = setting["calibration"]
        assert len(cal["temperature"]) == 5 and all(t > 0 for t in cal["temperature"])
        for f in setting["folds"]:
            c = f["calibration"]
            assert c["val"]["after"]["nll"] <= c["val"]["before"]["nll"] + 1e-9, name
            assert set(c["test"]["before"]) == {"ece", "brier", "nll", "n"}
            assert 0 <= c["low_confidence_below"] <= 1
        assert sum(b["n"] for b in cal["pooled"]["reliability_after"]) == sum(
            f["n_test"] for f in setting["folds"]
        )
    assert "calibration" in disk["cross_corpus"]["ravdess"]
    assert "## Calibration" in report and (out / "plots" / "reliability.png").is_file()
    assert res["loso"]["iemocap"]["mean"]["ua"] == disk["loso"]["iemocap"]["mean"]["ua"]
    # a second run reuses every finished fold and every cached feature
    fold_model = out / "loso" / "iemocap" / "fold1" / "model.safetensors"
    stamp = fold_model.stat().st_mtime_ns
    again = reproduce(
        _tiny_cfg(),
        iemocap=corpora["iemocap"],
        cremad=corpora["cremad"],
        ravdess=corpora["ravdess"],
        out=out,
        encoder=encoder,
        progress=False,
    )
    assert fold_model.stat().st_mtime_ns == stamp
    assert again["loso"]["iemocap"]["mean"] == res["loso"]["iemocap"]["mean"]


def test_training_is_deterministic_and_resumes_after_interruption(corpora, encoder, tmp_path):
    from edgeser.data.manifest import write_manifest
    from edgeser.experiments.runs import train_on_manifests

    man = tmp_path / "ie.csv"
    write_manifest(prepare_iemocap(corpora["iemocap"]), man)
    cache = tmp_path / "cache"
    full = train_on_manifests(
        _tiny_cfg(epochs=4), [man], tmp_path / "a", cache_dir=cache, progress=False, encoder=encoder
    )
    # interrupted after 2 epochs, then resumed to 4
    train_on_manifests(
        _tiny_cfg(epochs=2), [man], tmp_path / "b", cache_dir=cache, progress=False, encoder=encoder
    )
    assert len(json.loads((tmp_path / "b" / "state.json").read_text())["history"]) == 2
    resumed = train_on_manifests(
        _tiny_cfg(epochs=4), [man], tmp_path / "b", cache_dir=cache, progress=False, encoder=encoder
    )
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]
    for a, b in zip(full["history"], resumed["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    from safetensors.torch import load_file

    wa, wb = (
        load_file(str(tmp_path / "a" / "model.safetensors")),
        load_file(str(tmp_path / "b" / "model.safetensors")),
    )
    assert all(np.allclose(wa[k].numpy(), wb[k].numpy(), atol=1e-6) for k in wa)


def test_training_refuses_a_class_without_examples(corpora, encoder, tmp_path):
    from edgeser.data.manifest import write_manifest
    from edgeser.experiments.runs import train_on_manifests

    ie = prepare_iemocap(corpora["iemocap"])
    man = tmp_path / "nosad.csv"
    write_manifest(ie[ie["label"] != "sad"], man)
    with pytest.raises(EdgeserError, match="class sad has no training examples"):
        train_on_manifests(_tiny_cfg(), [man], tmp_path / "x", progress=False, encoder=encoder)


def test_evaluate_model_and_loso_on_any_corpus(corpora, encoder, tmp_path):
    from edgeser.data.manifest import write_manifest
    from edgeser.experiments.runs import evaluate_loso, evaluate_model, train_on_manifests

    ie, rv = tmp_path / "ie.csv", tmp_path / "rv.csv"
    write_manifest(prepare_iemocap(corpora["iemocap"]), ie)
    write_manifest(prepare_ravdess(corpora["ravdess"]), rv)
    train_on_manifests(_tiny_cfg(), [ie], tmp_path / "m", progress=False, encoder=encoder)
    res = evaluate_model(tmp_path / "m", rv, tmp_path / "ev", progress=False, encoder=encoder)
    assert sum(map(sum, res["metrics"]["confusion"])) == 8
    out = evaluate_loso(
        _tiny_cfg(val_speakers=0), ie, tmp_path / "lo", folds=2, progress=False, encoder=encoder
    )
    assert len(out["loso"]["iemocap"]["folds"]) == 2
    with pytest.raises(EdgeserError, match="not the one the model was trained with"):
        evaluate_model(
            tmp_path / "m",
            rv,
            tmp_path / "ev2",
            progress=False,
            encoder=random_encoder(tiny_config(), seed=1),
        )


@pytest.mark.parametrize(
    "overrides",
    [{"train": "encoder"}, {"aug_mode": "online"}, {"pooling": "attention"}],
    ids=["fine-tune-encoder", "online-augmentation", "attention-frames"],
)
def test_other_training_modes(corpora, encoder, tmp_path, overrides):
    import torch

    from edgeser.data.manifest import write_manifest
    from edgeser.experiments.runs import evaluate_model, train_on_manifests

    ie, rv = tmp_path / "ie.csv", tmp_path / "rv.csv"
    write_manifest(prepare_iemocap(corpora["iemocap"]), ie)
    write_manifest(prepare_ravdess(corpora["ravdess"]), rv)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rec = train_on_manifests(
        _tiny_cfg(epochs=2, **overrides), [ie], tmp_path / "m", progress=False, encoder=encoder
    )
    assert len(rec["history"]) == 2 and np.isfinite(rec["history"][-1]["train_loss"])
    # the shared encoder is untouched (fine-tuning works on a copy)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    has_encoder = any(k.startswith("encoder.") for k in weights)
    assert has_encoder == (overrides.get("train") == "encoder")
    res = evaluate_model(tmp_path / "m", rv, tmp_path / "ev", progress=False, encoder=encoder)
    assert sum(map(sum, res["metrics"]["confusion"])) == 8
