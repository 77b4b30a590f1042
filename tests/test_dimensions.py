"""Arousal, valence and dominance beside the classes: metrics, the joint loss, training,
results and report, export and runtime (``--dimensions``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.evaluation.dimensions import (
    DIMENSIONS,
    ccc,
    describe_unrated,
    dimension_metrics,
    dimension_targets,
)
from edgeser.models.head import EmotionHead, HeadConfig
from edgeser.models.ssl import random_encoder, tiny_config
from edgeser.testing import make_cremad_tree, make_iemocap_tree, make_ravdess_tree
from edgeser.training.losses import ccc_loss

IEMO_LABELS = ["neu", "ang", "sad", "hap", "exc"]
#: Ratings (V, A, D) per IEMOCAP label, varied per utterance below.
VAD = {
    "neu": (3.0, 2.4, 2.6),
    "ang": (1.8, 3.8, 3.9),
    "sad": (1.9, 2.1, 2.2),
    "hap": (4.0, 3.2, 3.0),
    "exc": (4.1, 3.7, 3.3),
}


# --------------------------------------------------------------------------- metrics


def test_ccc_is_one_for_agreement_and_drops_for_offset_and_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    assert ccc(x, x) == pytest.approx(1.0)
    shifted, scaled = ccc(x, x + 1.0), ccc(x, 0.3 * x)
    assert shifted < 0.7 and scaled < 0.7  # Pearson's r would be 1 for both
    assert np.corrcoef(x, x + 1.0)[0, 1] == pytest.approx(1.0)
    assert ccc(x - x.mean(), x.mean() - x) == pytest.approx(-1.0)
    assert ccc(np.ones(5), np.ones(5)) == 1.0 and ccc(np.ones(5), x[:5]) == 0.0
    # the formula, by hand: 2 cov / (var x + var y + (mean x - mean y)^2)
    y = 0.5 * x + rng.normal(size=200) + 0.2
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    assert ccc(x, y) == pytest.approx(2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2))


def test_ccc_loss_is_one_minus_ccc_on_rated_rows_only():
    rng = np.random.default_rng(1)
    pred = rng.random((12, 3)).astype(np.float32)
    target = rng.random((12, 3)).astype(np.float32)
    target[[2, 7]] = np.nan  # utterances without ratings
    keep = np.isfinite(target).all(axis=1)
    want = np.mean([1 - ccc(target[keep, j], pred[keep, j]) for j in range(3)])
    got = ccc_loss(torch.from_numpy(pred), torch.from_numpy(target))
    assert float(got) == pytest.approx(want, abs=1e-5)
    one = np.full((4, 3), np.nan, np.float32)
    one[0] = 0.5
    assert ccc_loss(torch.zeros(4, 3), torch.from_numpy(one)) is None  # < 2 rated rows
    # gradients flow into the predictions only through the rated rows
    p = torch.from_numpy(pred).requires_grad_(True)
    ccc_loss(p, torch.from_numpy(target)).backward()
    assert torch.all(p.grad[[2, 7]] == 0) and torch.any(p.grad[keep] != 0)


def test_targets_are_rescaled_ratings_and_nan_without_them():
    frame = pd.DataFrame(
        {
            "utt_id": ["a", "b", "c"],
            "valence": [1.0, 5.0, np.nan],
            "arousal": [3.0, 2.0, np.nan],
            "dominance": [5.0, 1.0, np.nan],
        }
    )
    t = dimension_targets(frame, ["b", "a", "c"])
    assert DIMENSIONS == ("arousal", "valence", "dominance")
    np.testing.assert_allclose(t[0], [0.25, 1.0, 0.0])
    np.testing.assert_allclose(t[1], [0.5, 0.0, 1.0])
    assert np.isnan(t[2]).all()
    no_columns = dimension_targets(frame[["utt_id"]], ["a"])
    assert np.isnan(no_columns).all()
    m = dimension_metrics(t, np.zeros_like(t))
    assert m["n"] == 2 and set(DIMENSIONS) <= set(m)
    assert m["arousal"]["mae"] == pytest.approx(0.375)
    assert dimension_metrics(t[2:], t[2:]) == {"n": 0}


def test_unrated_corpus_is_described_per_class_and_intensity():
    frame = pd.DataFrame(
        {
            "label": ["angry", "happy", "neutral", "sad"] * 2,
            "intensity": ["normal"] * 4 + ["strong"] * 4,
        }
    )
    # arousal separates high from low perfectly; valence cannot tell happy from angry
    pred = np.array([[0.9, 0.3, 0.5], [0.8, 0.3, 0.5], [0.2, 0.5, 0.5], [0.1, 0.2, 0.5]] * 2)
    d = describe_unrated(pred, frame)
    assert d["arousal_auc"] == 1.0 and d["valence_auc_happy_vs_angry"] == 0.5
    assert d["by_class"]["angry"]["arousal"] == pytest.approx(0.9)
    assert d["by_class"]["angry"]["n"] == 2 and list(d["by_class"]) == [
        "angry",
        "happy",
        "neutral",
        "sad",
    ]
    assert set(d["by_intensity"]) == {"normal", "strong"}
    assert d["by_class_and_intensity"]["sad/strong"]["valence"] == pytest.approx(0.2)


# --------------------------------------------------------------------------- model


def test_head_without_dimensions_is_unchanged_and_with_them_outputs_in_unit_range():
    cfg = HeadConfig(num_layers=3, hidden_size=16)
    torch.manual_seed(0)
    plain = EmotionHead(cfg)
    torch.manual_seed(0)
    both = EmotionHead(HeadConfig(num_layers=3, hidden_size=16, num_dimensions=3))
    assert set(plain.state_dict()) < set(both.state_dict())
    assert not any(k.startswith("regressor") for k in plain.state_dict())
    pooled = torch.randn(3, 5, 16)
    plain.eval(), both.eval()
    torch.testing.assert_close(plain.forward_pooled(pooled), both.forward_pooled(pooled))
    dims = both.dimensions(both.embed_pooled(pooled))
    assert dims.shape == (5, 3) and bool(((dims > 0) & (dims < 1)).all())
    with pytest.raises(ValueError, match="no dimensional output"):
        plain.dimensions(plain.embed_pooled(pooled))


def test_training_learns_the_dimensions_and_unrated_rows_only_train_classes(tmp_path):
    from edgeser.training.trainer import FeatureSet, SERModel, fit, predict_outputs

    rng = np.random.default_rng(0)
    n, d = 240, 16
    x = rng.normal(size=(n, 3, 2 * d)).astype(np.float32)  # [N, L, 2D] pooled features
    y = rng.integers(0, 4, n)
    x[np.arange(n), :, y] += 2.0  # classes: one feature each
    w = rng.normal(size=(3, d))
    dims = 1 / (1 + np.exp(-(x[:, :, :d].mean(1) @ w.T) / 2))  # ratings: from the features
    dims = dims.astype(np.float32)
    dims[::3] = np.nan  # a third of the utterances without ratings (CREMA-D-like)
    cfg = TrainConfig(
        encoder="random", dimensions=True, epochs=30, aug_views=0, batch_size=16, head_hidden=32
    )
    train = FeatureSet(
        "pooled", [f"u{i}" for i in range(200)], y[:200], list(x[:200]), dims=dims[:200]
    )
    test = FeatureSet(
        "pooled", [f"t{i}" for i in range(40)], y[200:], list(x[200:]), dims=dims[200:]
    )
    head = EmotionHead(HeadConfig(num_layers=3, hidden_size=d, hidden=32, num_dimensions=3))
    result = fit(cfg, SERModel(head), train, None, tmp_path / "fit", progress=False)
    probs, pred = predict_outputs(result.model, test, cfg)
    assert (probs.argmax(1) == test.labels).mean() > 0.8
    m = dimension_metrics(test.dims, pred)
    assert m["n"] == 27
    assert min(m[k]["ccc"] for k in DIMENSIONS) > 0.5, m
    # a model with a dimensional output refuses data without targets
    no_dims = FeatureSet("pooled", train.ids, train.labels, train.clean)
    with pytest.raises(EdgeserError, match="no dimensional targets"):
        fit(cfg, SERModel(head), no_dims, None, tmp_path / "fit2", progress=False)


def test_dimensions_need_an_ssl_head_model():
    with pytest.raises(EdgeserError, match="--dimensions needs a model with an SSL-encoder"):
        TrainConfig(model="light-sernet", dimensions=True)


# --------------------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A tiny reproduce with --dimensions (rated IEMOCAP, unrated CREMA-D and RAVDESS)."""
    from edgeser.experiments.reproduce import reproduce

    root = tmp_path_factory.mktemp("dims")
    utts, ratings = [], {}
    for s in range(1, 6):
        for spk in "FM":
            for i in range(6):
                uid, lab = f"Ses0{s}{spk}_impro01_{spk}{i:03d}", IEMO_LABELS[i % 5]
                utts.append((uid, lab))
                v, a, d = VAD[lab]
                ratings[uid] = (v, a + 0.1 * (i % 3), d)
    cremad = [f"10{a:02d}_DFA_{e}_XX" for a in range(1, 5) for e in ("ANG", "HAP", "NEU", "SAD")]
    ravdess = [
        f"03-01-0{e}-0{k}-01-01-0{a}"
        for a in (1, 2)
        for e in (1, 3, 4, 5)
        for k in (1, 2)
        if not (e == 1 and k == 2)
    ]
    corpora = {
        "iemocap": make_iemocap_tree(root / "ie", utts, duration=0.3, ratings=ratings),
        "cremad": make_cremad_tree(root / "cr", cremad, duration=0.3),
        "ravdess": make_ravdess_tree(root / "rv", ravdess, duration=0.3),
    }
    cfg = TrainConfig(
        encoder="random", dimensions=True, epochs=2, aug_views=1, batch_size=8, head_hidden=16
    )
    encoder = random_encoder(tiny_config(), seed=0)
    out = root / "run"
    res = reproduce(
        cfg,
        iemocap=corpora["iemocap"],
        cremad=corpora["cremad"],
        ravdess=corpora["ravdess"],
        out=out,
        encoder=encoder,
        progress=False,
        synthetic=True,
    )
    return {"out": out, "res": res, "encoder": encoder, "root": root}


def test_results_carry_dimensional_metrics_per_fold_pooled_and_cross_corpus(run):
    disk = json.loads((run["out"] / "results.json").read_text(encoding="utf-8"))
    for setting in disk["loso"].values():
        for f in setting["folds"]:
            assert f["dimensions"]["n"] == f["n_test"]  # every IEMOCAP test utterance is rated
            assert set(DIMENSIONS) <= set(f["dimensions"])
            assert {"wa", "ua", "macro_f1"} <= set(f["metrics"])  # the fixed keys stay
        d = setting["dimensions"]
        assert d["folds"] == 5 and set(d["mean"]) == set(DIMENSIONS) == set(d["std"])
        assert d["pooled"]["n"] == sum(f["n_test"] for f in setting["folds"])
        folds = [f["dimensions"]["arousal"]["mae"] for f in setting["folds"]]
        assert d["mean"]["arousal"]["mae"] == pytest.approx(np.mean(folds))
    cc = disk["cross_corpus"]["ravdess"]["dimensions"]
    assert set(cc["by_class"]) == {"angry", "happy", "neutral", "sad"}
    assert set(cc["by_intensity"]) == {"normal", "strong"}
    assert "metrics" not in cc  # RAVDESS has no ratings
    assert 0 <= cc["arousal_auc"] <= 1 and 0 <= cc["valence_auc_happy_vs_angry"] <= 1
    assert disk["production"]["dimensions"]["n"] == disk["production"]["n_test"]
    preds = pd.read_csv(run["out"] / "loso" / "iemocap" / "predictions.csv")
    assert {"pred_arousal", "pred_valence", "pred_dominance", "arousal"} <= set(preds.columns)
    assert preds["pred_arousal"].between(0, 1).all()
    rv = pd.read_csv(run["out"] / "cross_corpus_ravdess.csv")
    assert rv["arousal"].isna().all() and rv["pred_valence"].notna().all()


def test_report_shows_the_dimensional_numbers_and_plots(run):
    disk = json.loads((run["out"] / "results.json").read_text(encoding="utf-8"))
    report = (run["out"] / "report.md").read_text(encoding="utf-8")
    assert "## Dimensions: arousal, valence, dominance" in report
    assert "These corpora are synthetic" in report
    d = disk["loso"]["iemocap"]["dimensions"]
    m, sd = d["mean"]["valence"], d["std"]["valence"]
    row = (
        f"| iemocap | valence | {m['ccc']:.3f} ± {sd['ccc']:.3f} | {m['pearson']:.3f} ± "
        f"{sd['pearson']:.3f} | {m['mae']:.3f} ± {sd['mae']:.3f} | "
        f"{d['pooled']['valence']['ccc']:.3f} |"
    )
    assert row in report
    cc = disk["cross_corpus"]["ravdess"]["dimensions"]
    assert f"AUC {cc['arousal_auc']:.3f}" in report
    for png in ("valence_arousal_loso_iemocap.png", "valence_arousal_ravdess.png"):
        assert (run["out"] / "plots" / png).stat().st_size > 1000


def test_export_has_both_outputs_and_the_runtime_prints_them(run, tmp_path, capsys):
    from edgeser.exporting import export_model
    from edgeser.runtime.model import OnnxEmotionModel
    from edgeser.runtime.output import format_prediction
    from edgeser.runtime.session import onnx_session
    from edgeser.testing import tone, write_wav
    from edgeser.training.folder import load_trained

    paths = export_model(run["out"] / "production", tmp_path / "onnx", encoder=run["encoder"])
    doc = json.loads(paths["json"].read_text())
    assert doc["outputs"] == {
        "probabilities": "float32 [batch, classes]",
        "dimensions": "float32 [batch, 3]",
    }
    assert doc["dimensions"]["names"] == list(DIMENSIONS)
    session = onnx_session(paths["float32"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "dimensions"]
    wav = tmp_path / "x.wav"
    write_wav(wav, tone(1.2, seed=4))
    trained = load_trained(run["out"] / "production", run["encoder"])
    from edgeser.exporting.exporter import build_export_graph

    graph, _, _ = build_export_graph(run["out"] / "production", run["encoder"])
    for kind in ("float32", "int8"):
        model = OnnxEmotionModel(paths[kind])
        assert model.dimension_names == list(DIMENSIONS)
        a = model.analyse_file(wav)
        assert set(a.dimensions) == set(DIMENSIONS)
        assert all(0 <= v <= 1 for v in a.dimensions.values())
        wave = model.prepare(*_read(wav))
        with torch.no_grad():
            from edgeser.runtime.session import pad_batch

            feed = pad_batch([wave], model.min_samples)
            _, ref = graph(torch.from_numpy(feed["waveform"]), torch.from_numpy(feed["lengths"]))
        tol = 1e-4 if kind == "float32" else 0.02
        np.testing.assert_allclose([a.dimensions[k] for k in DIMENSIONS], ref[0].numpy(), atol=tol)
        label, probs = model.predict_file(wav)  # the two-value form still works
        assert label == a.label and probs == a.probabilities
    assert trained.model.has_dimensions
    line = json.loads(format_prediction("x.wav", a, True))
    assert set(line) == {
        "path",
        "label",
        "probabilities",
        "dimensions",
        "status",
        "segments",
        "speech_seconds",
    }


def _read(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32")
    return data, sr


def test_cli_flag_and_stream_json(run, tmp_path, capsys):
    from edgeser.cli import main
    from edgeser.runtime.stream import Segment

    seg = Segment(
        0.0, 1.0, "angry", 0.8, {"angry": 0.8}, {"arousal": 0.7, "valence": 0.2, "dominance": 0.6}
    )
    obj = json.loads(seg.to_json())
    assert obj["dimensions"] == {"arousal": 0.7, "valence": 0.2, "dominance": 0.6}
    assert seg.to_line().endswith("arousal=0.70 valence=0.20 dominance=0.60")
    assert "dimensions" not in json.loads(Segment(0.0, 1.0, "sad", 0.5).to_json())
    # --dimensions alone is the flag; with light-sernet it is one clear error
    code = main(
        [
            "train",
            str(tmp_path / "none.csv"),
            "--out",
            str(tmp_path / "t"),
            "--model",
            "light-sernet",
            "--dimensions",
        ]
    )
    assert code == 2
    assert "--dimensions needs a model with an SSL-encoder head" in capsys.readouterr().err


def test_train_and_evaluate_commands_with_dimensions(run, tmp_path):
    from edgeser.experiments.runs import evaluate_model, train_on_manifests

    manifests = run["out"] / "manifests"
    cfg = TrainConfig(
        encoder="random", dimensions=True, epochs=2, aug_views=0, batch_size=8, head_hidden=16
    )
    rec = train_on_manifests(
        cfg,
        [manifests / "iemocap.csv", manifests / "cremad.csv"],
        tmp_path / "model",
        encoder=run["encoder"],
        progress=False,
    )
    assert rec["dimensions"]["n"] == rec["n_val"] and set(DIMENSIONS) <= set(rec["dimensions"])
    analysis = evaluate_model(
        tmp_path / "model",
        manifests / "ravdess.csv",
        tmp_path / "eval",
        encoder=run["encoder"],
        progress=False,
    )
    assert set(analysis["dimensions"]["by_intensity"]) == {"normal", "strong"}
    with pytest.raises(EdgeserError, match="no training utterance has arousal"):
        train_on_manifests(
            cfg, [manifests / "cremad.csv"], tmp_path / "m2", encoder=run["encoder"], progress=False
        )
