"""The Python API (``edgeser.api``): its docstring examples run as doctests, and each function
does what its command does: ``load`` + ``predict`` say what ``edgeser predict --json``
prints, ``stream`` what ``edgeser stream`` prints; ``train``, ``export`` and ``evaluate`` write
what the commands write and return it read back.

The module's example (train, export, load, predict, stream, evaluate on a tiny synthetic
IEMOCAP manifest with LIGHT-SERNET, one epoch) runs once; the other tests use its objects.
"""

from __future__ import annotations

import doctest
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import edgeser
import edgeser.api
from edgeser.cli import main
from edgeser.core.errors import EdgeserError
from edgeser.runtime import Analysis, EmotionModel, SegmenterConfig
from edgeser.testing import tone, write_tiny_manifests

SR = 16_000
#: A config that trains LIGHT-SERNET in seconds (the fields as ``edgeser train`` takes them).
TINY = {
    "model": "light-sernet",
    "mfcc_seconds": 1.0,
    "feature_norm": "none",
    "epochs": 1,
    "aug_views": 0,
    "batch_size": 8,
    "precision": "fp32",
    "bootstrap": 100,
    "seed": 0,
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Manifests, audio (a 1 s tone, a stereo 44.1 kHz FLAC, a call with three speech
    stretches, a 12 s input past the model's window) and the runtime tests' dummy model."""
    pytest.importorskip("torch")
    from edgeser.exporting.calibration import speech_like
    from edgeser.testing import make_dummy_model

    root = tmp_path_factory.mktemp("api")
    manifests = write_tiny_manifests(root / "corpora", duration=0.3)
    rng = np.random.default_rng(0)
    silence = np.zeros(SR // 2, np.float32)
    call = np.concatenate([silence, speech_like(1.5, rng), silence, silence, speech_like(1.0, rng)])
    call = np.concatenate([call, silence])
    sf.write(root / "call.wav", call, SR, subtype="PCM_16")
    sf.write(root / "clip.wav", tone(1.0, freq=150), SR)
    sf.write(root / "stereo.flac", tone(1.5, sample_rate=44_100, freq=300, channels=2), 44_100)
    sf.write(root / "long.wav", np.tile(call, 3)[: 12 * SR], SR, subtype="PCM_16")
    make_dummy_model(root / "dummy")
    return {
        "root": root,
        **manifests,
        "call": root / "call.wav",
        "clip": root / "clip.wav",
        "stereo": root / "stereo.flac",
        "long": root / "long.wav",
        "dummy": root / "dummy",
    }


def _doctests() -> dict[str, doctest.DocTest]:
    return {
        t.name.removeprefix("edgeser.api").lstrip(".") or "module": t
        for t in doctest.DocTestFinder().find(edgeser.api)
        if t.examples
    }


@pytest.fixture(scope="module")
def example(files: dict[str, Path]) -> dict[str, Any]:
    """The module docstring's example, run (its names, and the doctest's outcome)."""
    globs = {
        "manifest": files["iemocap"],
        "ravdess": files["ravdess"],
        "tiny": TINY,
        "clip": files["clip"],
        "call": files["call"],
        "model_dir": files["dummy"],
        "tmp": files["root"] / "doc",
        "json": json,
        "soundfile": sf,
    }
    test = _doctests()["module"]
    test.globs = dict(globs)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=out.write, clear_globs=False)
    return {**test.globs, "_failed": result.failed, "_report": out.getvalue()}


# --------------------------------------------------------------------------- doctests
def test_the_module_example_runs(example: dict[str, Any]) -> None:
    assert example["_failed"] == 0, example["_report"]


@pytest.mark.parametrize("name", ["load", "train", "evaluate", "export"])
def test_docstring_examples(name: str, example: dict[str, Any]) -> None:
    test = _doctests()[name]
    test.globs = {k: v for k, v in example.items() if not k.startswith("_")}
    out = io.StringIO()
    result = doctest.DocTestRunner(optionflags=FLAGS).run(test, out=out.write)
    assert result.attempted > 0 and result.failed == 0, out.getvalue()


# --------------------------------------------------------------------------- the CLI's output
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert main(["-q", *map(str, argv)]) == 0
    return capsys.readouterr().out.splitlines()


def _as_printed(path: Path, r: Analysis) -> dict[str, Any]:
    obj = {
        "path": str(path),
        "label": r.label,
        "probabilities": {k: round(v, 6) for k, v in r.probabilities.items()},
    }
    if r.dimensions is not None:
        obj["dimensions"] = {k: round(v, 6) for k, v in r.dimensions.items()}
    return {
        **obj,
        "status": r.status,
        "segments": r.segments,
        "speech_seconds": round(r.speech_seconds, 3),
    }


@pytest.mark.parametrize("which", ["dummy", "exported"])
def test_predict_says_what_predict_json_prints(
    which: str, files: dict[str, Path], example: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    folder = files["dummy"] if which == "dummy" else example["exported"].folder
    audio = [files["clip"], files["stereo"], files["call"], files["long"]]
    printed = [json.loads(line) for line in _cli(["predict", folder, *audio, "--json"], capsys)]
    model = edgeser.load(folder)
    assert [_as_printed(p, model.predict(p)) for p in audio] == printed
    assert printed[-1]["segments"] > 1  # the long input went by speech segments
    batch = model.predict_batch(audio, batch_size=2)
    for got, want in zip(batch, printed, strict=True):
        assert got.label == want["label"] and got.status == want["status"]
        got_p, want_p = list(got.probabilities.values()), list(want["probabilities"].values())
        assert np.allclose(got_p, want_p, atol=1e-6)


def test_an_array_is_predicted_as_the_file_holding_it(
    files: dict[str, Path], tmp_path: Path
) -> None:
    model = edgeser.load(files["dummy"])
    wave = tone(1.5, sample_rate=44_100, freq=300, channels=2)
    sf.write(tmp_path / "f.wav", wave, 44_100, subtype="FLOAT")
    assert model.predict(wave, sample_rate=44_100) == model.predict(tmp_path / "f.wav")
    items = [wave, tone(0.4, sample_rate=44_100, freq=500), tone(11.0, sample_rate=44_100)]
    batch = model.predict_batch(items, sample_rate=44_100, batch_size=2)
    for got, item in zip(batch, items, strict=True):
        want = model.predict(item, sample_rate=44_100)
        assert (got.label, got.status, got.segments) == (want.label, want.status, want.segments)
        assert np.allclose(list(got.probabilities.values()), list(want.probabilities.values()))


def test_stream_says_what_edgeser_stream_prints(
    files: dict[str, Path],
    example: dict[str, Any],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = example["exported"].folder
    model = edgeser.load(folder)
    printed = _cli(["stream", folder, files["call"], "--json"], capsys)
    assert len(printed) == 3
    assert [s.to_json() for s in model.stream(files["call"])] == printed
    # blocks from memory: what `edgeser stream MODEL -` prints for the same PCM
    pcm = sf.read(files["call"], dtype="int16")[0].astype("<i2").tobytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm)))
    piped = _cli(["stream", folder, "-", "--json"], capsys)
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    blocks = (samples[i : i + 8000] for i in range(0, samples.size, 8000))
    assert [s.to_json() for s in model.stream(blocks, sample_rate=SR)] == piped == printed
    # 44.1 kHz blocks are resampled as a 44.1 kHz file is read (half-second blocks)
    x = tone(3.0, sample_rate=44_100, freq=200)
    x = np.concatenate([np.zeros(44_100, np.float32), x, np.zeros(44_100, np.float32)])
    sf.write(files["root"] / "tone44.wav", x, 44_100, subtype="FLOAT")
    step = 22_050
    from_blocks = model.stream(
        (x[i : i + step] for i in range(0, x.size, step)), sample_rate=44_100, vad="webrtc"
    )
    from_file = model.stream(files["root"] / "tone44.wav", vad="webrtc")
    assert [s.to_line() for s in from_blocks] == [s.to_line() for s in from_file] != []
    strict = SegmenterConfig(min_speech=5.0)
    assert list(model.stream(files["call"], config=strict)) == []


def test_from_bytes_is_the_model_without_its_files(
    files: dict[str, Path], example: dict[str, Any]
) -> None:
    exported = example["exported"]
    card = exported.card
    for kind in ("float32", "int8_ort"):
        on_disk = edgeser.load(exported.folder, variant=kind)
        in_memory = EmotionModel.from_bytes(exported.paths[kind].read_bytes(), card, name=kind)
        assert in_memory.labels == on_disk.labels and str(in_memory.path) == kind
        for audio in (files["clip"], files["call"]):
            assert in_memory.predict(audio) == on_disk.predict(audio)
    with pytest.raises(EdgeserError, match=r"^m\.onnx is not an edgeser model: model\.json"):
        EmotionModel.from_bytes(
            exported.paths["float32"].read_bytes(), {"labels": []}, name="m.onnx"
        )
    with pytest.raises(EdgeserError, match="not a loadable ONNX file"):
        EmotionModel.from_bytes(b"not a model", card)


# ------------------------------------------------------------------- train, export, evaluate
def test_train_export_evaluate_return_what_they_wrote(example: dict[str, Any]) -> None:
    trained, exported, evaluation = example["trained"], example["exported"], example["evaluation"]
    assert isinstance(trained, edgeser.TrainedModel)
    assert (trained.folder / "model.safetensors").is_file()
    record = json.loads((trained.folder / "train.json").read_text(encoding="utf-8"))
    assert trained.metrics == record["metrics"] and trained.config.to_dict() == record["config"]
    assert trained == edgeser.TrainedModel.read(trained.folder)
    assert all(p.is_file() for p in exported.paths.values())
    assert exported.card == json.loads(exported.paths["json"].read_text(encoding="utf-8"))
    results = json.loads(evaluation.results_json.read_text(encoding="utf-8"))
    assert evaluation.results == results
    assert evaluation.metrics == results["loso"]["iemocap"]["pooled"]
    assert evaluation.intervals == results["loso"]["iemocap"]["ci95"]
    assert [f["name"] for f in evaluation.folds] == ["fold1", "fold2"]
    assert evaluation.report_md.is_file() and evaluation.predictions_csv.is_file()
    assert repr(
        trained
    ) == f"TrainedModel({str(trained.folder)!r}, light-sernet, validation UA " + (
        f"{trained.metrics['ua']:.3f})"
    )
    assert repr(evaluation).startswith("Evaluation(") and "2 folds, UA" in repr(evaluation)
    assert "'model.int8.ort'" in repr(exported)


def test_evaluate_a_trained_model_as_the_command_does(
    files: dict[str, Path], example: dict[str, Any], tmp_path: Path
) -> None:
    trained = example["trained"]
    frame = pd.read_csv(files["ravdess"])
    api = edgeser.evaluate(frame, trained=trained, out=tmp_path / "api")
    assert (tmp_path / "api" / "manifest.csv").is_file()  # the DataFrame, written as a manifest
    argv = ["-q", "evaluate", "--trained", trained.folder, "--corpus", files["ravdess"]]
    assert main([*map(str, argv), "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "results.json").read_text(encoding="utf-8"))
    assert api.results["cross_corpus"] == cli["cross_corpus"]
    assert api.metrics == cli["cross_corpus"]["ravdess"]["metrics"]


def test_bad_arguments_are_one_line_errors(
    files: dict[str, Path], example: dict[str, Any], tmp_path: Path
) -> None:
    manifest, trained = files["iemocap"], example["trained"]
    cases = [
        (lambda: edgeser.train(manifest, out=tmp_path, epochs="two"), "config key epochs: bad"),
        (lambda: edgeser.train(manifest, out=tmp_path, loss="hinge"), "loss must be one of"),
        (lambda: edgeser.train([], out=tmp_path), "no manifest given"),
        (lambda: edgeser.train(pd.DataFrame({"x": [1]}), out=tmp_path), "missing columns"),
        (lambda: edgeser.evaluate(manifest, "loso", trained=trained, out=tmp_path), "either"),
        (lambda: edgeser.evaluate(manifest, trained=trained, out=tmp_path, epochs=3), "epochs"),
        (lambda: edgeser.evaluate(manifest, trained=tmp_path / "no", out=tmp_path), "no such"),
        (lambda: edgeser.load(files["dummy"] / "model.onnx", variant="int8"), "of a model folder"),
        (lambda: edgeser.load(files["dummy"], threads=0), "threads must be >= 1"),
        (lambda: edgeser.load(files["dummy"], vad="energy"), "unknown VAD"),
        (lambda: edgeser.load(files["dummy"]).predict(tone(1.0)), "needs its sample_rate"),
        (lambda: edgeser.load(files["dummy"]).predict(files["clip"], 8000), "goes with an array"),
        (lambda: edgeser.load(files["dummy"]).predict(3), "not int"),
        (lambda: edgeser.load(files["dummy"]).stream(3), "not int"),
        (lambda: edgeser.load(files["dummy"]).stream(b"\0\0"), "not bytes"),
        (lambda: edgeser.load(files["dummy"]).stream([tone(1.0)]), "needs its sample_rate"),
    ]
    for call, message in cases:
        with pytest.raises(EdgeserError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_load_predict_and_stream_need_no_torch(files: dict[str, Path]) -> None:
    """The runtime install has numpy, soundfile, soxr and onnxruntime only."""
    code = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'onnx', 'pandas', 'scipy', 'sklearn',\n"
        "             'matplotlib', 'yaml', 'librosa', 'silero_vad', 'pyarrow'):\n"
        "    sys.modules[name] = None  # any import of them raises ImportError\n"
        "import edgeser\n"
        "model = edgeser.load(sys.argv[1])\n"
        "print(model.predict(sys.argv[2]).label in model.labels)\n"
        "print(len(list(model.stream(sys.argv[3]))))\n"
    )
    argv = [files["dummy"], files["clip"], files["call"]]
    run = subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "3"]


def test_config_from_a_file_a_config_or_values(tmp_path: Path) -> None:
    from edgeser.api import _config
    from edgeser.config import TrainConfig

    (tmp_path / "c.yaml").write_text("epochs: 3\nlr: 0.01\n", encoding="utf-8")
    from_file = _config(tmp_path / "c.yaml", {"epochs": "4"})  # a string as --epochs 4
    assert (from_file.epochs, from_file.lr) == (4, 0.01)
    base = TrainConfig(model="light-sernet", epochs=7)
    derived = _config(base, {"batch_size": 2})
    assert (derived.model, derived.epochs, derived.batch_size) == ("light-sernet", 7, 2)
    assert derived.lr == base.lr  # the model's own default, not the paper's
    assert _config({"epochs": 5}, {"seed": 1}).epochs == 5
    assert _config(None, {"dimensions": "true"}).dimensions is True
    with pytest.raises(EdgeserError, match="unknown config keys: front"):
        _config({"front": 1}, {})
