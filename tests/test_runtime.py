"""The light runtime: exported-model loading and prediction, VAD, streaming, CLI.

The model is a tiny dummy in the exported contract (``edgeser.testing.make_dummy_model``). VAD
tests on synthetic tones use WebRTC VAD (Silero does not fire on pure tones, by design);
Silero is tested on real RAVDESS speech (skipped without the sample) against the
silero-vad package's own ``get_speech_timestamps``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeser.cli.runtime import add_predict, add_stream
from edgeser.core.errors import AudioError, EdgeserError
from edgeser.runtime import (
    OnnxEmotionModel,
    SegmenterConfig,
    SpeechSegmenter,
    WebRtcVAD,
    file_blocks,
    find_silero_onnx,
    make_vad,
    pcm_blocks,
    speech_segments,
    stream_predictions,
)
from edgeser.testing import tone

SR = 16_000


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from edgeser.testing import make_dummy_model

    out = tmp_path_factory.mktemp("model")
    make_dummy_model(out)
    return out


@pytest.fixture(scope="module")
def model(model_dir: Path) -> OnnxEmotionModel:
    return OnnxEmotionModel(model_dir / "model.onnx")


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.float32)


def _synthetic_speech() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """silence 1.5 s / tone 2 s / silence 2 s / tone 1 s / silence 1 s, and the truth."""
    x = np.concatenate(
        [
            _silence(1.5),
            tone(2.0, freq=150, seed=1),
            _silence(2.0),
            tone(1.0, freq=260, seed=2),
            _silence(1.0),
        ]
    )
    return x, [(1.5, 3.5), (5.5, 6.5)]


def _blocks(x: np.ndarray, size: int = 8000) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """What ``edgeser.cli.main`` does with these sub-commands (parse, run, error line)."""
    parser = argparse.ArgumentParser(prog="edgeser")
    sub = parser.add_subparsers(dest="command", required=True)
    add_predict(sub)
    add_stream(sub)
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
    except EdgeserError as e:
        print(f"edgeser: error: {e}", file=sys.stderr)
        code = 2
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- light imports
def test_runtime_imports_no_heavy_modules(model_dir: Path) -> None:
    code = f"""
import sys
import numpy as np
import edgeser.runtime, edgeser.runtime.output, edgeser.runtime.model
import edgeser.runtime.stream, edgeser.runtime.vad
from edgeser.runtime import OnnxEmotionModel, make_vad, speech_segments
m = OnnxEmotionModel({str(model_dir / "model.int8.onnx")!r})
m.predict_waveform(np.ones(8000, dtype=np.float32) * 0.1, 16000)
for kind in ("silero", "webrtc"):
    list(speech_segments([np.zeros(16000, dtype=np.float32)], make_vad(kind)))
heavy = [k for k in ("torch", "pandas", "transformers", "librosa", "silero_vad", "scipy")
         if k in sys.modules]
print(",".join(heavy))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"heavy modules imported: {res.stdout}"


# --------------------------------------------------------------------------- model
def test_model_loads_both_files_and_folder(model_dir: Path) -> None:
    for target in (model_dir / "model.onnx", model_dir / "model.int8.onnx", model_dir):
        m = OnnxEmotionModel(target, threads=1)
        assert m.labels == ["neutral", "happy", "sad", "angry"]
        assert m.min_samples == 400


def test_predict_waveform_probabilities(model: OnnxEmotionModel) -> None:
    label, probs = model.predict_waveform(tone(1.0, freq=200), SR)
    assert list(probs) == model.labels
    assert label == max(probs, key=probs.get)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    # distinct inputs, distinct outputs (the dummy is not constant)
    labels = {
        model.predict_waveform(tone(d, freq=f), SR)[0]
        for d, f in [(1, 100), (3, 150), (1, 800), (0.01, 100)]
    }
    assert len(labels) >= 2


def test_predict_batch_matches_single_items(model: OnnxEmotionModel) -> None:
    waves = [
        tone(d, freq=f, seed=i)
        for i, (d, f) in enumerate([(1.0, 150), (0.5, 300), (2.0, 220), (0.01, 100), (3.0, 900)])
    ]
    batch = model.predict_batch(waves, SR, batch_size=3)
    for w, (label, probs) in zip(waves, batch, strict=True):
        ref_label, ref = model.predict_waveform(w, SR)
        assert label == ref_label
        assert max(abs(probs[k] - ref[k]) for k in ref) < 1e-5


def test_prepare_downmix_resample_trim_pad(model: OnnxEmotionModel) -> None:
    x = tone(1.0, sample_rate=44_100, freq=220, channels=2, silence=0.5)
    y = model.prepare(x, 44_100)
    assert y.ndim == 1 and y.dtype == np.float32
    # 0.5 s of silence on each side trimmed (to librosa's frame resolution, 2048/512)
    assert SR <= len(y) < 1.2 * SR
    # shorter than min_samples: still classified (padded to 400 samples)
    label, _ = model.predict_waveform(tone(0.005), SR)
    assert label in model.labels


@pytest.mark.parametrize(
    "wave,rate,match",
    [
        (np.zeros(0, dtype=np.float32), SR, "no samples"),
        (np.array([0.1, np.nan] * 500, dtype=np.float32), SR, "NaN"),
        (np.ones(1000, dtype=np.float32), 0, "cannot resample"),
        (np.ones(1000, dtype=np.float32), 100_000_000, "cannot resample"),
    ],
)
def test_predict_waveform_bad_input(
    model: OnnxEmotionModel, wave: np.ndarray, rate: int, match: str
) -> None:
    with pytest.raises(AudioError, match=match):
        model.predict_waveform(wave, rate)


def _copy_model(model_dir: Path, dst: Path) -> Path:
    shutil.copytree(model_dir, dst)
    return dst


def test_not_an_edgeser_model(model_dir: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    # no model.json
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(model_dir / "model.onnx", lone / "model.onnx")
    with pytest.raises(EdgeserError, match=r"is not an edgeser model: no model\.json"):
        OnnxEmotionModel(lone / "model.onnx")
    # model.json of another format / invalid JSON / wrong labels
    for text, match in [
        ('{"format": "other"}', "format"),
        ("{not json", "not valid JSON"),
        ('{"format": "edgeser-onnx", "format_version": 1, "labels": []}', "labels"),
    ]:
        (lone / "model.json").write_text(text)
        with pytest.raises(EdgeserError, match=match):
            OnnxEmotionModel(lone / "model.onnx")
    # a file that is not ONNX
    bad = _copy_model(model_dir, tmp_path / "garbage")
    (bad / "model.onnx").write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(EdgeserError, match="not a loadable ONNX file"):
        OnnxEmotionModel(bad / "model.onnx")
    # an ONNX graph that does not follow the contract
    wrong = _copy_model(model_dir, tmp_path / "wrong")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "n"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), wrong / "model.onnx"
    )
    with pytest.raises(EdgeserError, match="graph inputs"):
        OnnxEmotionModel(wrong / "model.onnx")
    # label count that does not match the graph
    card = json.loads((model_dir / "model.json").read_text())
    card["labels"] = ["a", "b", "c"]
    (wrong / "model.json").write_text(json.dumps(card))
    with pytest.raises(EdgeserError, match="3 labels"):
        OnnxEmotionModel(wrong / "model.int8.onnx")
    with pytest.raises(EdgeserError, match="no such model file"):
        OnnxEmotionModel(tmp_path / "missing.onnx")


# --------------------------------------------------------------------------- predict CLI
def test_predict_cli_text_and_json(
    model_dir: Path, model: OnnxEmotionModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = tmp_path / "a.wav"
    b = tmp_path / "b.flac"
    sf.write(a, tone(1.0, freq=150), SR)
    stereo = tone(1.5, sample_rate=44_100, freq=300, channels=2)
    sf.write(b, stereo, 44_100)
    code, out, err = _run_cli(["predict", str(model_dir / "model.onnx"), str(a), str(b)], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 2
    path, label, scores, status = lines[0].split("\t")
    assert path == str(a) and label in model.labels and status.startswith("status=")
    assert [s.split("=")[0] for s in scores.split()] == model.labels
    # stereo 44.1 kHz FLAC: same as downmix + resample by hand
    _, ref = model.predict_waveform(stereo, 44_100)
    got = dict(s.split("=") for s in lines[1].split("\t")[2].split())
    assert all(abs(float(got[k]) - ref[k]) < 1e-3 for k in ref)

    code, out, _ = _run_cli(
        ["predict", str(model_dir / "model.int8.onnx"), str(a), str(b), "--json"], capsys
    )
    assert code == 0
    objs = [json.loads(line) for line in out.splitlines()]
    assert [o["path"] for o in objs] == [str(a), str(b)]
    assert set(objs[0]) == {
        "path",
        "label",
        "probabilities",
        "status",
        "segments",
        "speech_seconds",
    }
    assert list(objs[1]["probabilities"]) == model.labels


def test_predict_cli_runs_without_torch(model_dir: Path, tmp_path: Path) -> None:
    """The runtime install has no torch or transformers: ``edgeser predict`` and ``stream``
    (the one CLI, which also builds the training commands' parsers) must not import them,
    and ``stream`` gets Silero VAD without the silero-vad package."""
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(1.0, freq=150), SR)
    code = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'onnx', 'onnxruntime.quantization', 'pandas',\n"
        "             'scipy', 'sklearn', 'matplotlib', 'yaml', 'librosa', 'silero_vad'):\n"
        "    sys.modules[name] = None  # any import of them raises ImportError\n"
        "from edgeser.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    model = str(model_dir / "model.int8.onnx")
    for args in (["predict", model, str(wav)], ["stream", model, str(wav), "--json"]):
        run = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert "WebRTC" not in run.stderr  # stream: Silero, from the file edgeser ships
    assert subprocess.run(
        [sys.executable, "-c", code, "predict", model, str(wav)], capture_output=True, text=True
    ).stdout.startswith(str(wav))


def test_predict_cli_bad_inputs(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, tone(1.0), SR)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR)
    text = tmp_path / "text.wav"
    text.write_text("not audio at all\n" * 20)
    absurd = tmp_path / "absurd.wav"
    sf.write(absurd, tone(0.1), 100_000_000)
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, tone(0.1), 100)
    bad = [empty, text, absurd, tiny, tmp_path / "missing.wav"]
    code, out, err = _run_cli(
        ["predict", str(model_dir / "model.onnx"), str(good), *map(str, bad)], capsys
    )
    assert code == 2
    assert out.splitlines()[0].startswith(f"{good}\t")  # the good file is still classified
    errors = err.splitlines()
    assert len(errors) == len(bad)
    assert all(e.startswith("edgeser: error: ") for e in errors)
    for path, e in zip(bad, errors, strict=True):
        assert str(path) in e
    assert "no audio" in errors[0] and "unreadable" in errors[1]
    assert "cannot resample" in errors[2] and "cannot resample" in errors[3]

    # a model that is not an edgeser model: one error line, exit 2
    not_model = tmp_path / "x.onnx"
    not_model.write_bytes(b"\x00" * 100)
    code, out, err = _run_cli(["predict", str(not_model), str(good)], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"edgeser: error: {not_model} is not an edgeser model: no model.json beside it"
    ]


# --------------------------------------------------------------------------- segmenter
def _segments_from_probs(
    probs: list[float], frame: int = 512, **cfg: float
) -> list[tuple[int, int]]:
    seg = SpeechSegmenter(frame, SegmenterConfig(**cfg))
    out = [s for p in probs if (s := seg.push(p)) is not None]
    last = seg.finish(len(probs) * frame)
    return [*out, last] if last else out


def test_segmenter_hysteresis_and_padding() -> None:
    # 20 silent frames, 30 speech frames, 1 dip below neg_threshold, 10 speech, silence
    probs = [0.0] * 20 + [0.9] * 30 + [0.2] + [0.9] * 10 + [0.0] * 20
    segs = _segments_from_probs(probs)
    pad = round(0.03 * SR)
    assert segs == [(20 * 512 - pad, 61 * 512 + pad)]  # the short dip does not split
    # ambiguous frames (between neg_threshold and threshold) keep a segment open
    probs = [0.0] * 5 + [0.9] * 20 + [0.4] * 20 + [0.0] * 10
    assert _segments_from_probs(probs) == [(5 * 512 - pad, 45 * 512 + pad)]
    # too short: dropped
    assert _segments_from_probs([0.0] * 5 + [0.9] * 5 + [0.0] * 10) == []


def test_segmenter_cuts_long_speech_contiguously() -> None:
    n = round(25 * SR / 512)
    segs = _segments_from_probs([0.9] * n + [0.0] * 10, max_segment=10.0)
    assert len(segs) == 3
    for (_, b), (c, _) in itertools.pairwise(segs):
        assert b == c  # contiguous
    assert all(b - a <= 10 * SR for a, b in segs)
    assert segs[0][0] == 0


def test_segmenter_rejects_bad_settings() -> None:
    for cfg in [
        dict(threshold=1.5),
        dict(min_silence=-1),
        dict(max_segment=0),
        dict(max_segment=0.1, min_speech=0.25),
    ]:
        with pytest.raises(EdgeserError):
            SegmenterConfig(**cfg).validate()


# --------------------------------------------------------------------------- VAD
def test_webrtc_segments_synthetic_speech() -> None:
    x, truth = _synthetic_speech()
    segs = [(a / SR, b / SR) for a, b, _ in speech_segments(_blocks(x), WebRtcVAD(2))]
    assert len(segs) == len(truth)
    for (a, b), (ta, tb) in zip(segs, truth, strict=True):
        assert abs(a - ta) < 0.1 and abs(b - tb) < 0.2


def test_segment_audio_is_the_input_slice() -> None:
    x, _ = _synthetic_speech()
    for a, b, audio in speech_segments(_blocks(x, 3000), WebRtcVAD(2)):
        np.testing.assert_array_equal(audio, x[a:b])


def test_block_size_does_not_change_segments() -> None:
    x, _ = _synthetic_speech()
    ref = [(a, b) for a, b, _ in speech_segments(_blocks(x, 8000), WebRtcVAD(2))]
    for size in (1, 479, 512, 16000, len(x)):
        got = [(a, b) for a, b, _ in speech_segments(_blocks(x, size), WebRtcVAD(2))]
        assert got == ref


def test_silero_ships_inside_edgeser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Silero's ONNX file comes with edgeser (MIT notice beside it), so the torch-free
    runtime has it without the silero-vad package; it is the package's 16 kHz branch."""
    import hashlib

    import onnxruntime as ort

    import edgeser.runtime.vad as vad_mod
    from edgeser.exporting.silero import silero_16k

    path = find_silero_onnx()
    assert path == vad_mod.BUNDLED_SILERO and path.is_file()
    notice = (path.parent / "LICENSE.silero-vad").read_text(encoding="utf-8")
    assert "MIT License" in notice and "Silero Team" in notice
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in notice  # the notice names the file it covers
    package = vad_mod.package_silero_onnx()
    if package is not None:  # silero-vad installed (the dev extra): derived from its file
        assert hashlib.sha256(package.read_bytes()).hexdigest() in notice
        silero_16k(package, tmp_path / "derived.onnx")
        assert (tmp_path / "derived.onnx").read_bytes() == path.read_bytes()
        ours, theirs = (
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            for p in (path, package)
        )
        rng = np.random.default_rng(0)
        feed = {
            "input": rng.standard_normal((1, 576)).astype(np.float32) * 0.1,
            "state": rng.standard_normal((2, 1, 128)).astype(np.float32),
            "sr": np.array(16000, np.int64),
        }
        for a, b in zip(ours.run(None, feed), theirs.run(None, feed), strict=True):
            np.testing.assert_array_equal(a, b)
    # without the silero-vad package, Silero is still what "silero" gives
    monkeypatch.setattr(vad_mod.importlib.util, "find_spec", lambda name: None)
    assert vad_mod.package_silero_onnx() is None
    assert make_vad("silero").name == "silero"
    assert make_vad("webrtc").name == "webrtc"
    with pytest.raises(EdgeserError, match="unknown VAD"):
        make_vad("energy")


def test_silero_falls_back_to_webrtc(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeser.runtime.vad as vad_mod

    monkeypatch.setattr(vad_mod, "find_silero_onnx", lambda: None)
    assert vad_mod.make_vad("silero").name == "webrtc"


def _ravdess_stream(root: Path) -> tuple[np.ndarray, list[tuple[float, float]]]:
    from edgeser.audio.io import load_audio

    files = sorted((root / "Actor_01").glob("*.wav"))[:3]
    parts, spans, t = [_silence(1.0)], [], 1.0
    for f in files:
        x = load_audio(f)
        parts += [x, _silence(1.5)]
        spans.append((t, t + len(x) / SR))
        t += len(x) / SR + 1.5
    return np.concatenate(parts), spans


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_silero_matches_reference_on_real_speech(ravdess_mini: Path) -> None:
    x, spans = _ravdess_stream(ravdess_mini)
    got = [(a, b) for a, b, _ in speech_segments(_blocks(x, 7000), make_vad("silero"))]
    assert len(got) == len(spans)
    for (a, b), (sa, sb) in zip(got, spans, strict=True):
        assert sa <= a / SR < b / SR <= sb  # each segment inside its utterance
    try:
        import torch
        from silero_vad import get_speech_timestamps, load_silero_vad
    except ImportError:
        return
    ref = get_speech_timestamps(
        torch.from_numpy(x), load_silero_vad(onnx=True), max_speech_duration_s=10
    )
    assert got == [(d["start"], d["end"]) for d in ref]


# --------------------------------------------------------------------------- sources
def test_file_blocks_resamples_like_whole_file(tmp_path: Path) -> None:
    from edgeser.audio.io import load_audio

    x = tone(3.0, sample_rate=44_100, freq=200, channels=2, silence=0.5)
    path = tmp_path / "x.wav"
    sf.write(path, x, 44_100, subtype="FLOAT")
    streamed = np.concatenate(list(file_blocks(path, block_seconds=0.1)))
    whole = load_audio(path)
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-3


def test_pcm_blocks_odd_reads_and_empty() -> None:
    samples = (np.arange(-5000, 5000) * 3).astype("<i2")

    class Trickle(io.RawIOBase):
        """Returns at most 7 bytes per read (pipes deliver arbitrary sizes)."""

        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def read(self, n: int = -1) -> bytes:
            out = self.data[self.pos : self.pos + min(7, n)]
            self.pos += len(out)
            return out

    got = np.concatenate(list(pcm_blocks(Trickle(samples.tobytes()), 0.01)))
    np.testing.assert_array_equal(got, samples.astype(np.float32) / 32768.0)
    with pytest.raises(AudioError, match="no audio"):
        list(pcm_blocks(io.BytesIO(b"")))


def test_file_blocks_bad_files(tmp_path: Path) -> None:
    empty = tmp_path / "e.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="no audio"):
        list(file_blocks(empty))
    junk = tmp_path / "j.wav"
    junk.write_bytes(b"RIFF garbage" * 10)
    with pytest.raises(AudioError, match="unreadable"):
        list(file_blocks(junk))
    absurd = tmp_path / "a.wav"
    sf.write(absurd, np.zeros(100, dtype=np.float32), 1)
    with pytest.raises(AudioError, match="cannot resample"):
        list(file_blocks(absurd))


def test_long_file_is_processed_in_bounded_chunks(model: OnnxEmotionModel, tmp_path: Path) -> None:
    """A 10-minute 8 kHz file: every read asks for one block, memory stays small."""
    rate, minutes = 8_000, 10
    path = tmp_path / "long.wav"
    burst = tone(1.0, sample_rate=rate, freq=180)
    gap = np.zeros(2 * rate, dtype=np.float32)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for _ in range(minutes * 20):  # 3 s per period
            f.write(burst)
            f.write(gap)
    requests: list[int] = []

    def reader(fh: sf.SoundFile, frames: int) -> np.ndarray:
        requests.append(frames)
        return fh.read(frames, dtype="float32", always_2d=True)

    tracemalloc.start()
    try:
        segs = list(
            stream_predictions(
                model, file_blocks(path, block_seconds=0.5, reader=reader), WebRtcVAD(2)
            )
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max(requests) == rate // 2
    assert len(requests) == minutes * 60 * 2 + 1
    whole = minutes * 60 * SR * 4  # the whole input as float32 at 16 kHz: 38 MB
    assert peak < whole / 10, f"peak traced memory {peak / 1e6:.1f} MB"
    assert len(segs) == minutes * 20
    assert segs[-1].start == pytest.approx(minutes * 60 - 3.0, abs=0.1)
    assert all(0.8 < s.end - s.start < 1.3 for s in segs)


# --------------------------------------------------------------------------- stream CLI
def test_stream_cli_file_stdin_json(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, truth = _synthetic_speech()
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    wav = tmp_path / "s.wav"
    sf.write(wav, pcm, SR, subtype="PCM_16")
    model_path = str(model_dir / "model.onnx")

    code, out, err = _run_cli(["stream", model_path, str(wav), "--vad", "webrtc"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(truth)
    for line, (ta, tb) in zip(lines, truth, strict=True):
        start, end, label, conf = line.split()
        assert abs(float(start) - ta) < 0.1 and abs(float(end) - tb) < 0.2
        assert label in {"neutral", "happy", "sad", "angry"} and 0 < float(conf) <= 1

    class Stdin:
        buffer = io.BytesIO(pcm.tobytes())

    monkeypatch.setattr(sys, "stdin", Stdin)
    code, out_stdin, _ = _run_cli(["stream", model_path, "-", "--vad", "webrtc"], capsys)
    assert code == 0 and out_stdin == out  # stdin mode == file mode

    code, out, _ = _run_cli(
        ["stream", model_path, str(wav), "--vad", "webrtc", "--json", "--max-segment", "1.5"],
        capsys,
    )
    objs = [json.loads(line) for line in out.splitlines()]
    assert len(objs) == 3  # the 2 s burst is cut at 1.5 s
    for o in objs:
        assert set(o) == {"start", "end", "label", "confidence", "probabilities", "status"}
        assert o["confidence"] == pytest.approx(o["probabilities"][o["label"]], abs=1e-4)
        assert o["status"] in ("ok", "too_short", "low_confidence")
        assert o["end"] - o["start"] <= 1.5 + 1e-6


def test_stream_cli_errors(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_path = str(model_dir / "model.onnx")
    junk = tmp_path / "junk.wav"
    junk.write_text("nope")
    nan = tmp_path / "nan.wav"  # one NaN sample in float speech: was a phantom segment
    x = _synthetic_speech()[0]
    x[40_000] = np.nan
    sf.write(nan, x, SR, subtype="FLOAT")
    for argv, match in [
        ([model_path, str(nan)], "nan.wav: audio contains NaN or infinite samples (at 2.50 s)"),
        ([model_path, str(junk)], "unreadable audio"),
        ([model_path, str(tmp_path / "missing.wav")], "no such audio file"),
        ([model_path, str(junk), "--threshold", "2"], "--threshold"),
        ([str(junk), str(junk)], "is not an edgeser model"),
    ]:
        code, out, err = _run_cli(["stream", *argv], capsys)
        assert code == 2 and out == ""
        assert err.startswith("edgeser: error: ") and match in err
        assert len(err.strip().splitlines()) == 1

    class Stdin:
        buffer = io.BytesIO(b"")

    monkeypatch.setattr(sys, "stdin", Stdin)
    code, _, err = _run_cli(["stream", model_path, "-"], capsys)
    assert code == 2 and "stdin: no audio" in err
    monkeypatch.setattr(sys, "stdin", None)  # `edgeser stream MODEL - <&-`
    code, _, err = _run_cli(["stream", model_path, "-"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "edgeser: error: stream -: standard input is closed (pipe raw 16 kHz 16-bit mono "
        "PCM into it, or give an audio file)"
    ]


@pytest.mark.parametrize(
    "case,change,match",
    [
        (
            "labels permuted",
            {"labels": ["happy", "neutral", "sad", "angry"]},
            r"model\.json's labels \['happy', 'neutral', 'sad', 'angry'\] are not the graph's "
            r"\['neutral', 'happy', 'sad', 'angry'\]",
        ),
        (
            "hop_length 0",
            {"trim": {"top_db": 20, "frame_length": 2048, "hop_length": 0}},
            'trim "hop_length" must be an integer in 1-frame_length, got 0',
        ),
        ("min_samples 1e11", {"min_samples": 1e11}, '"min_samples" must be an integer'),
        ("min_samples true", {"min_samples": True}, '"min_samples" must be an integer'),
        ("trim yes", {"trim": "yes"}, '"trim" must be null, true, false or an object'),
        ("top_db nan", {"trim": {"top_db": float("nan")}}, '"top_db" must be a number'),
        ("files a list", {"files": ["model.onnx"]}, '"files" must map names'),
        ("dimension names", {"dimensions": {"names": "arousal"}}, '"dimensions" must hold'),
        (
            "window 0 s",
            {"long_input": {"window_seconds": 0}},
            r"\"long_input\" must hold \"window_seconds\", a number in \[1, 60\]",
        ),
        (
            "too_short a string",
            {"status": {"too_short_seconds": "0.25"}},
            r"\"status\" must hold \"too_short_seconds\"",
        ),
        (
            "low_confidence_below 2",
            {"calibration": {"low_confidence_below": 2}},
            r"\"calibration\" must hold \"low_confidence_below\", a number in \[0, 1\]",
        ),
    ],
)
def test_bad_model_cards_are_one_line(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    change: dict,
    match: str,
) -> None:
    """Each was a traceback, or (permuted labels) wrong labels with exit 0."""
    folder = _copy_model(model_dir, tmp_path / "m")
    card = json.loads((folder / "model.json").read_text())
    for key, value in change.items():
        if key == "trim":
            card["preprocessing"]["outside_graph"]["trim"] = value
        else:
            card[key] = value
    (folder / "model.json").write_text(json.dumps(card))
    good = tmp_path / "good.wav"
    sf.write(good, tone(1.0), SR)
    code, out, err = _run_cli(["predict", str(folder / "model.int8.onnx"), str(good)], capsys)
    assert code == 2 and out == "", case
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeser: error: "), case
    assert re.search(match, lines[0]), (case, lines[0])


def test_segments_are_emitted_as_soon_as_they_close(model: OnnxEmotionModel) -> None:
    x, truth = _synthetic_speech()
    blocks = _blocks(x, 1600)  # 0.1 s blocks
    consumed = 0

    def source():
        nonlocal consumed
        for b in blocks:
            consumed += 1
            yield b

    it = stream_predictions(model, source(), WebRtcVAD(2))
    first = next(it)
    assert first.start == pytest.approx(truth[0][0], abs=0.1)
    # closed after min_silence (0.1 s) of silence past the end: well before the input ends
    assert consumed * 0.1 < truth[0][1] + 0.5 < len(x) / SR


# --------------------------------------------------------------------------- long inputs
@pytest.fixture(scope="module")
def tone_model(model_dir: Path) -> OnnxEmotionModel:
    """The dummy model with WebRTC VAD, which takes the synthetic tones for speech (Silero
    does not)."""
    return OnnxEmotionModel(model_dir / "model.onnx", vad="webrtc")


def test_inputs_up_to_the_window_are_one_graph_run(tone_model: OnnxEmotionModel) -> None:
    """Windowing changes nothing up to the window: the same numbers as one graph run."""
    model = tone_model
    x, _ = _synthetic_speech()  # 7.5 s
    assert len(x) / SR <= model.long.window
    a = model.analyse_waveform(x, SR)
    probs, _ = model.run_outputs([model.prepare(x, SR)])
    assert [a.probabilities[c] for c in model.labels] == probs[0].tolist()
    assert a.segments == 1 and a.status == "ok"


def test_a_long_input_is_its_speech_segments_weighted_by_duration(
    tone_model: OnnxEmotionModel, tmp_path: Path
) -> None:
    model = tone_model
    x, _ = _synthetic_speech()
    long = np.concatenate([x, x, x, _silence(4.0)])  # 26.5 s: longer than the window
    a = model.analyse_waveform(long, SR)
    segs = list(
        stream_predictions(
            model, _blocks(long), model.vad(), SegmenterConfig(max_segment=model.long.window)
        )
    )
    assert a.segments == len(segs) == 6 and a.status == "ok"
    weights = np.array([s.end - s.start for s in segs])
    mean = {
        c: float(np.dot(weights, [s.probabilities[c] for s in segs]) / weights.sum())
        for c in model.labels
    }
    assert a.speech_seconds == pytest.approx(weights.sum(), abs=1e-6)
    for c in model.labels:
        assert a.probabilities[c] == pytest.approx(mean[c], abs=1e-6)
    assert a.label == max(mean, key=mean.get)
    # a file gives the same result, read in blocks
    path = tmp_path / "long.wav"
    sf.write(path, long, SR, subtype="FLOAT")
    b = model.analyse_file(path)
    assert b.label == a.label and b.segments == a.segments
    assert all(abs(b.probabilities[c] - a.probabilities[c]) < 1e-5 for c in model.labels)


def test_long_silence_is_a_status_not_a_traceback(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Digital silence is never trimmed away: 3 minutes of it went whole into the graph."""
    path = tmp_path / "silent.wav"
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        for _ in range(180):
            f.write(np.zeros(SR, dtype=np.float32))
    code, out, err = _run_cli(
        ["predict", str(model_dir / "model.int8.onnx"), str(path), "--json"], capsys
    )
    assert code == 0 and err == ""
    obj = json.loads(out)
    assert obj["status"] == "no_speech" and obj["segments"] == 0
    assert obj["label"] in obj["probabilities"]


@pytest.mark.parametrize(
    "case,wave",
    [
        ("one sample", np.array([0.3], np.float32)),
        ("50 ms of clipping", np.sign(np.sin(np.arange(800) / 3.0)).astype(np.float32)),
        ("digital silence", np.zeros(SR, np.float32)),
        ("white noise", np.random.default_rng(0).uniform(-1, 1, SR).astype(np.float32)),
        (
            "-80 dBFS dither",
            1e-4 * np.random.default_rng(1).uniform(-1, 1, 2 * SR).astype(np.float32),
        ),
    ],
)
def test_inputs_that_are_not_speech_say_so(
    model: OnnxEmotionModel, case: str, wave: np.ndarray
) -> None:
    """Each got a confident-looking label and nothing else."""
    a = model.analyse_waveform(wave, SR)
    assert a.status in ("too_short", "no_speech"), case
    assert a.status == ("too_short" if len(wave) < 0.25 * SR else "no_speech"), case
    assert a.label in model.labels


def test_real_speech_is_never_said_to_be_no_speech(
    model: OnnxEmotionModel, ravdess_mini: Path
) -> None:
    files = sorted(ravdess_mini.rglob("*.wav"))
    assert len(files) >= 100
    statuses = [model.analyse_file(f).status for f in files]
    assert statuses.count("ok") == len(files), {s: statuses.count(s) for s in set(statuses)}
