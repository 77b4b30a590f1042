"""The registries that carry behaviour: model families, each stage's table keyed by the
feature kind, export variants, the corpus registry; and the trained folder's readers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.data import recipes, synth
from edgeser.data.corpora import CORPORA, corpus, prepare_names, synth_names
from edgeser.exporting.exporter import VARIANTS
from edgeser.exporting.recipes import EXPORT_VARIANTS, RECIPES
from edgeser.features.extract import MAKERS
from edgeser.features.kinds import CACHED_KINDS, FeatureKind, feature_kind
from edgeser.models.registry import (
    FAMILIES,
    MODELS,
    encoder_source,
    model_family,
    normalization,
    signal_front_end,
)
from edgeser.testing import tone, write_wav
from edgeser.training.checkpoint import load_best, save_best
from edgeser.training.folder import peek_meta, training_corpora
from edgeser.training.strategies import STRATEGIES, collate, train_strategy


def test_every_kind_has_its_behaviour_in_every_stage():
    assert set(STRATEGIES) == set(FeatureKind)
    assert set(RECIPES) == {k.value for k in FeatureKind}
    assert set(MAKERS) == set(CACHED_KINDS)  # wave is loaded, not made by the cache
    for spec in MODELS.values():
        family = spec.model_family
        assert family is FAMILIES[spec.family]
        assert family.features is None or FeatureKind(family.features) in CACHED_KINDS


def test_families_resolve_encoder_normalisation_and_signal():
    ls = TrainConfig(model="light-sernet")
    eg = TrainConfig(model="egemaps")
    assert (encoder_source(ls), encoder_source(eg)) == ("mfcc", "egemaps")
    assert encoder_source(TrainConfig(model="pepino", encoder="random")) == ("random:wav2vec2-base")
    assert feature_kind(ls) is FeatureKind.MFCC and feature_kind(eg) is FeatureKind.FUNCTIONALS
    assert normalization(ls) == "speaker"
    with pytest.raises(EdgeserError, match="applies to SSL-encoder models and egemaps"):
        normalization(TrainConfig(model="light-sernet", feature_norm="global"))
    front = signal_front_end(eg)
    assert front.preemphasis == 0.0 and front.normalize is False
    assert signal_front_end(TrainConfig()) == TrainConfig().front_end
    assert [f.name for f in FAMILIES.values() if f.dimensions] == ["ssl"]
    with pytest.raises(EdgeserError, match="unknown model family"):
        model_family("rnn")


def test_strategies_batch_and_normalise_by_kind():
    import numpy as np

    frames = [np.ones((2, t, 3), np.float16) for t in (4, 2)]
    batch = collate("frames", frames, "attention")
    assert batch["frames"].shape == (2, 2, 4, 3) and batch["mask"].sum().item() == 6
    assert collate(FeatureKind.MFCC, [np.zeros((5, 40), np.float32)] * 3, "mean")["mfcc"].shape == (
        3,
        5,
        40,
    )
    assert train_strategy("mfcc").speaker_batchnorm and train_strategy("mfcc").speaker_stats is None
    assert train_strategy("functionals").fit_once is not None
    assert train_strategy("wave").augments_online and not FeatureKind.WAVE.cached
    assert FeatureKind.CONV.trains_encoder and not FeatureKind.WAVE.trains_encoder


def test_export_variants_are_one_registry():
    assert list(VARIANTS) == list(EXPORT_VARIANTS) == ["int8-fast", "float16", "float16-compute"]
    for name, variant in EXPORT_VARIANTS.items():
        assert VARIANTS[name] == (variant.file, variant.description)
    assert [n for n, v in EXPORT_VARIANTS.items() if not v.from_flat] == ["float16-compute"]
    assert RECIPES["functionals"].graph is None and "openSMILE" in RECIPES["functionals"].refusal


def test_corpus_registry_is_the_one_list(tmp_path: Path):
    assert recipes.CORPORA == prepare_names() == ("iemocap", "cremad", "ravdess", "csv")
    assert synth.CORPORA == synth_names() == ("iemocap", "cremad", "ravdess")
    assert corpus("CREMA-D") is CORPORA["cremad"] and corpus("timit") is None
    with pytest.raises(ValueError, match="unknown corpus 'timit'"):
        recipes.prepare("timit", tmp_path)
    with pytest.raises(ValueError, match=r"expected one of iemocap, cremad, ravdess$"):
        synth.synthesize_corpus("csv", tmp_path)
    wav = write_wav(tmp_path / "a.wav", tone(0.2))
    (tmp_path / "list.csv").write_text(f"path,label,speaker\n{wav},neutral,s1\n")
    df = recipes.prepare("csv", tmp_path / "list.csv", name="mine", ravdess_calm="neutral")
    assert df["corpus"].tolist() == ["mine"]  # only the csv recipe's option is passed
    assert recipes.prepare("csv", tmp_path / "list.csv")["corpus"].tolist() == ["custom"]


def test_registries_are_light_to_import():
    code = (
        "import sys, edgeser.data.corpora, edgeser.exporting.recipes, edgeser.models.families\n"
        "heavy = {'torch', 'pandas', 'transformers', 'sklearn'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_best_weights_and_folder_readers(tmp_path: Path):
    assert load_best(tmp_path) is None
    save_best(tmp_path, {"w": torch.arange(3.0)})
    assert torch.equal(load_best(tmp_path)["w"], torch.arange(3.0))
    (tmp_path / "model.json").write_text("{broken")
    assert peek_meta(tmp_path) is None
    (tmp_path / "model.json").write_text(json.dumps({"feature_kind": "pooled"}))
    assert peek_meta(tmp_path) == {"feature_kind": "pooled"}
    assert training_corpora(tmp_path, {}) is None
    (tmp_path / "train.json").write_text(json.dumps({"corpora": ["ravdess"]}))
    assert training_corpora(tmp_path, {}) == ["ravdess"]
    assert training_corpora(tmp_path, {"corpora": ["iemocap"]}) == ["iemocap"]
