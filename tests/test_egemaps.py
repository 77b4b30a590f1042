"""The eGeMAPS baseline (openSMILE functionals + logistic regression) and the per-model
training defaults (LIGHT-SERNET's authors' recipe)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from edgeser.config import PAPER_DEFAULTS, TrainConfig, load_config
from edgeser.core.errors import EdgeserError
from edgeser.testing import write_tiny_manifests


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_manifests(tmp_path_factory.mktemp("corpora"), duration=0.6)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One feature cache for the module's runs: openSMILE computes each file once."""
    return tmp_path_factory.mktemp("cache")


class _Counting:
    """An encoder wrapper that counts the waveforms it was asked to encode."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        for name in ("identity", "source", "is_random", "precision", "num_features"):
            setattr(self, name, getattr(inner, name))

    def encode(self, waves):
        self.calls += len(waves)
        return self.inner.encode(waves)


def test_egemaps_features_are_88_functionals_and_cached(manifests, tmp_path):
    from edgeser.experiments.pipeline import compute_features
    from edgeser.models.egemaps import EGeMAPSFrontEnd
    from edgeser.models.registry import FeatureEncoder, make_encoder

    front = make_encoder(TrainConfig(model="egemaps"))
    assert isinstance(front, EGeMAPSFrontEnd) and isinstance(front, FeatureEncoder)
    assert len(front.feature_names) == 88 and front.feature_names[0].startswith("F0semitone")
    # openSMILE's own reading of a 16 kHz tone: its pitch is the tone's (220 Hz)
    t = np.arange(16000) / 16000
    (f,) = front.encode([(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)])
    f0_semitones = float(f[0])  # F0semitoneFrom27.5Hz_sma3nz_amean
    assert abs(27.5 * 2 ** (f0_semitones / 12) - 220) < 5
    df = pd.read_csv(manifests["iemocap"])
    cfg = TrainConfig(model="egemaps")
    counting = _Counting(front)
    feats = compute_features(cfg, counting, df, set(), tmp_path / "cache", progress=False)
    assert counting.calls == len(df)
    arr = feats.clean[df["utt_id"][0]]
    assert arr.shape == (88,) and arr.dtype == np.float32 and np.isfinite(arr).all()
    again = compute_features(cfg, counting, df, set(), tmp_path / "cache", progress=False)
    assert counting.calls == len(df)  # every utterance came from the cache
    np.testing.assert_array_equal(again.clean[df["utt_id"][0]], arr)
    assert [p.name for p in (tmp_path / "cache" / front.identity).iterdir()] == ["functionals"]
    # global standardisation is the model's; per-speaker standardisation of the features
    spk = compute_features(TrainConfig(model="egemaps", feature_norm="speaker"), front, df,
                           set(), tmp_path / "cache", progress=False)
    for _, ids in df.groupby("speaker")["utt_id"]:
        rows = np.stack([spk.clean[u] for u in ids])
        np.testing.assert_allclose(rows.mean(0), 0.0, atol=1e-4)
        varying = np.stack([feats.clean[u] for u in ids]).std(0) > 0.05  # var >> eps
        np.testing.assert_allclose(rows.std(0)[varying], 1.0, atol=1e-3)


def test_egemaps_loso_evaluate_trained_and_no_export(manifests, cache, tmp_path, capsys):
    from safetensors.torch import load_file

    from edgeser.cli import main

    out = tmp_path / "ev"
    assert main(["-q", "evaluate", "--protocol", "loso", "--corpus", str(manifests["iemocap"]),
                 "--folds", "3", "--model", "egemaps", "--out", str(out),
                 "--cache-dir", str(cache)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == "egemaps" and res["encoder"]["source"] == "egemaps"
    assert res["config"]["aug_views"] == 0 and res["config"]["feature_norm"] == "auto"
    setting = res["loso"]["iemocap"]
    assert len(setting["folds"]) == 3 and {"mean", "std", "pooled"} <= set(setting)
    for fold in setting["folds"]:
        assert set(fold["train_speakers"]).isdisjoint(fold["test_speakers"])
        assert 0.0 <= fold["metrics"]["ua"] <= 1.0
        # C chosen on the validation speaker among the grid
        assert len(fold["history"]) == 6 and fold["best_epoch"] in range(6)
    fold1 = out / "loso" / "fold1"
    weights = load_file(str(fold1 / "model.safetensors"))
    assert weights["head.linear.weight"].shape == (4, 88)
    assert not torch.all(weights["head.mean"] == 0)  # global standardisation stored
    assert not any(fold1.glob("*.pkl"))
    # the saved folder predicts again, through the same cache
    assert main(["-q", "evaluate", "--trained", str(fold1), "--corpus",
                 str(manifests["ravdess"]), "--out", str(tmp_path / "x"),
                 "--cache-dir", str(cache)]) == 0
    cross = json.loads((tmp_path / "x" / "results.json").read_text())["cross_corpus"]
    assert sum(map(sum, cross["ravdess"]["metrics"]["confusion"])) == 8
    capsys.readouterr()
    assert main(["export", str(fold1), "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not exportable to ONNX" in err and "openSMILE" in err
    assert not (tmp_path / "onnx" / "model.onnx").exists()


def test_egemaps_speaker_normalised_and_compare_row(manifests, cache, tmp_path):
    from edgeser.experiments.compare import compare

    doc = compare(["egemaps"], manifests["iemocap"], tmp_path / "cmp",
                  base=TrainConfig(feature_norm="speaker", val_speakers=0), folds=2,
                  latency_runs=1, latency_seconds=0.5, progress=False, cache_dir=cache)
    (row,) = doc["models"]
    assert row["parameters"] == 88 * 4 + 4 and row["pareto"]
    assert "not exportable to ONNX" in row["export_error"] and row["pytorch_ms"] > 0
    cfg = json.loads((tmp_path / "cmp" / "egemaps" / "results.json").read_text())["config"]
    assert cfg["feature_norm"] == "speaker" and cfg["val_speakers"] == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| ★ egemaps | 356 |" in table and "egemaps: " in table.split("Not exported")[1]


def test_unset_settings_take_each_models_defaults(tmp_path):
    from edgeser.models.registry import LIGHT_SERNET_DEFAULTS

    paper = TrainConfig()
    assert {k: getattr(paper, k) for k in PAPER_DEFAULTS} == PAPER_DEFAULTS
    ls = TrainConfig(model="light-sernet")
    assert {k: getattr(ls, k) for k in LIGHT_SERNET_DEFAULTS} == LIGHT_SERNET_DEFAULTS
    assert TrainConfig(model="egemaps").aug_views == 0
    # set values survive a change of model, unset ones follow the model
    mine = TrainConfig(epochs=3, lr=5e-4)
    other = mine.for_model("light-sernet")
    assert (other.epochs, other.lr, other.batch_size, other.optimizer) == (3, 5e-4, 32, "adam")
    assert other.for_model("distilhubert").batch_size == 16
    # the saved (resolved) config rebuilds the same run
    assert TrainConfig.from_dict(ls.to_dict()) == ls
    yaml = tmp_path / "c.yaml"
    yaml.write_text("epochs: 7\naugment:\n  noise_p: 0.1\n")
    cfg = load_config(yaml, {"model": "light-sernet", "batch_size": 8})
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.augment.noise_p) == (7, 8, 1e-4, 0.1)
    with pytest.raises(EdgeserError, match="lr must be positive"):
        TrainConfig(lr=0)


def test_light_sernet_schedule_and_l2_are_the_authors():
    from edgeser.models.lightsernet import MFCCFrontEnd
    from edgeser.train.folder import build_model
    from edgeser.train.trainer import _optimizer

    cfg = TrainConfig(model="light-sernet")
    # callbacks.py: constant until epoch 50, then x exp(-0.15) at every epoch % 20 == 0
    lrs = [cfg.learning_rate(e) for e in range(300)]
    assert lrs[59] == 1e-4 and lrs[60] == pytest.approx(1e-4 * np.exp(-0.15))
    assert lrs[299] == pytest.approx(1e-4 * np.exp(-0.15 * 12))
    assert len(set(lrs)) == 13
    assert TrainConfig().learning_rate(24) == 1e-3  # the paper's head: constant
    model = build_model(cfg, MFCCFrontEnd(), "mfcc")
    opt = _optimizer(cfg, model)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    assert len(decayed) == 1 and decayed[0]["weight_decay"] == pytest.approx(2e-6)
    shapes = sorted(tuple(p.shape) for p in decayed[0]["params"])
    assert len(shapes) == 5 and (320, 160, 1, 1) in shapes  # the five body convolutions
    assert model.head.dropout.p == 0.3
    assert build_model(TrainConfig(model="light-sernet", dropout=0.1), MFCCFrontEnd(),
                       "mfcc").head.dropout.p == 0.1


def test_egemaps_reproduce_writes_the_usual_results(manifests, cache, tmp_path):
    from edgeser.experiments.reproduce import reproduce

    res = reproduce(TrainConfig(model="egemaps"), iemocap=manifests["iemocap"], cremad=None,
                    ravdess=manifests["ravdess"], out=tmp_path / "rep", folds=2,
                    progress=False, cache_dir=cache)
    assert res["model"] == "egemaps" and len(res["loso"]["iemocap"]["folds"]) == 2
    assert {"wa", "ua", "macro_f1"} <= set(res["loso"]["iemocap"]["mean"])
    assert res["cross_corpus"]["ravdess"]["n"] == 8 and "production" in res
    assert "Model: `egemaps`" in (tmp_path / "rep" / "report.md").read_text()
