"""ONNX export: graph contract, parity with PyTorch, padded batches, the 8-bit model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeser.cli.export import add_export
from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.exporting.exporter import export_model, reference_probabilities
from edgeser.models.ssl import Encoder, random_encoder, tiny_config
from edgeser.runtime.model import OnnxEmotionModel
from edgeser.runtime.session import onnx_session, pad_batch
from edgeser.testing import tone, write_wav
from edgeser.training.folder import build_model, save_model

SR = 16_000
TOL = 1e-4


def _save(
    out: Path,
    encoder: Encoder,
    *,
    pooling: str = "mean",
    sharpen: float = 8.0,
    dimensions: bool = False,
) -> Path:
    """A trained-model folder with a deterministic head whose outputs are far from uniform
    (``dimensions``: with the dimensional output, spread over [0, 1] as well)."""
    cfg = TrainConfig(encoder="random", precision="fp32", pooling=pooling, dimensions=dimensions)
    model = build_model(cfg, encoder, "frames" if pooling == "attention" else "pooled")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.head.layer_logits.copy_(torch.randn(model.head.layer_logits.shape, generator=gen))
        last = model.head.classifier[-1]
        last.weight.mul_(sharpen)
        if dimensions:
            model.head.regressor[-1].weight.mul_(sharpen)
    save_model(
        out, model, cfg, encoder, model.kind, {"name": "production", "metrics": {"accuracy": 0.5}}
    )
    return out


def _waves() -> list[np.ndarray]:
    return [tone(0.3, seed=1), tone(1.0, freq=180.0, seed=2), tone(2.7, freq=260.0, seed=3)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("export_tiny")
    encoder = random_encoder(tiny_config(), seed=0)
    model_dir = _save(root / "production", encoder)
    paths = export_model(model_dir, root / "onnx", encoder=encoder)
    from edgeser.training.folder import load_trained

    model, _, _, _ = load_trained(model_dir, encoder)
    return {
        "encoder": encoder,
        "head": model.head,
        "paths": paths,
        "model_dir": model_dir,
        "root": root,
    }


def test_export_writes_the_files_and_model_json(tiny):
    paths = tiny["paths"]
    assert set(paths) == {"float32", "int8", "int8_ort", "required_operators", "json"}
    doc = json.loads(paths["json"].read_text())
    assert doc["format"] == "edgeser-onnx" and doc["format_version"] == 1
    assert doc["labels"] == ["angry", "happy", "neutral", "sad"]
    assert doc["sample_rate"] == 16000 and doc["min_samples"] == 20
    assert doc["inputs"] == {"waveform": "float32 [batch, samples]", "lengths": "int64 [batch]"}
    assert doc["outputs"] == {"probabilities": "float32 [batch, classes]"}
    pre = doc["preprocessing"]
    assert pre["outside_graph"]["trim"] == {"top_db": 20.0, "frame_length": 2048, "hop_length": 512}
    assert pre["inside_graph"] == {"preemphasis": 0.97, "peak_normalize": True}
    assert doc["files"] == {
        "float32": "model.onnx",
        "int8": "model.int8.onnx",
        "int8_ort": "model.int8.ort",
        "required_operators": "required_operators.config",
    }
    assert doc["sizes_bytes"]["int8"] < doc["sizes_bytes"]["float32"]
    assert doc["encoder"]["source"] == "random" and doc["metrics"] == {"accuracy": 0.5}
    assert doc["training"]["config"]["pooling"] == "mean"
    session = onnx_session(paths["float32"])
    assert [i.name for i in session.get_inputs()] == ["waveform", "lengths"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    for kind in ("float32", "int8", "int8_ort"):  # the graph names its labels
        meta = onnx_session(paths[kind]).get_modelmeta().custom_metadata_map
        assert json.loads(meta["edgeser.labels"]) == doc["labels"]
        assert json.loads(meta["edgeser.dimensions"]) == []


def test_float32_onnx_matches_pytorch_on_several_lengths(tiny):
    waves = _waves()
    ref = reference_probabilities(tiny["encoder"], tiny["head"], waves)
    assert ref.max() > 0.5  # a head far from uniform, so the comparison means something
    session = onnx_session(tiny["paths"]["float32"])
    for w, r in zip(waves, ref, strict=True):
        got = session.run(None, pad_batch([w]))[0][0]
        assert np.abs(got - r).max() <= TOL
        assert got.sum() == pytest.approx(1.0, abs=1e-5)


def test_padded_batch_rows_equal_items_alone(tiny):
    waves = [*_waves(), np.zeros(0, np.float32), tone(0.004, seed=5)]  # 0.004 s = 64 samples
    session = onnx_session(tiny["paths"]["float32"])
    batch = session.run(None, pad_batch(waves))[0]
    alone = np.concatenate([session.run(None, pad_batch([w]))[0] for w in waves])
    assert np.abs(batch - alone).max() <= TOL
    # junk in the padding must not leak in either
    feed = pad_batch(waves)
    for i, w in enumerate(waves):
        feed["waveform"][i, len(w) :] = 0.5
    assert np.abs(session.run(None, feed)[0] - alone).max() <= TOL


def test_short_and_silent_inputs(tiny):
    session = onnx_session(tiny["paths"]["float32"])
    short = tone(0.001, seed=7)[:12]  # below the receptive field (20 samples for tiny)
    silent = np.zeros(SR, np.float32)
    ref = reference_probabilities(tiny["encoder"], tiny["head"], [short, silent])
    for w, r in zip([short, silent], ref, strict=True):
        got = session.run(None, pad_batch([w]))[0][0]
        assert np.isfinite(got).all()
        assert np.abs(got - r).max() <= TOL


def test_frame_count_in_closed_form_equals_layer_by_layer():
    """The graph counts output frames as (samples - receptive) // hop + 1 (three operators
    instead of three per layer): the same as the convolutions, layer by layer."""
    from edgeser.exporting.graph import conv_frames

    spec = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2  # DistilHuBERT: receptive 400, hop 320
    n = torch.arange(400, 50_000, 3)
    m = n.clone()
    for kernel, stride in spec:
        m = torch.div(m - kernel, stride, rounding_mode="floor") + 1
    assert torch.equal(conv_frames(n, spec), m)
    assert conv_frames(torch.tensor(400), spec) == 1 and conv_frames(torch.tensor(719), spec) == 1
    assert conv_frames(torch.tensor(720), spec) == 2


def test_int8_tiny_model_runs_and_is_close(tiny):
    f32 = onnx_session(tiny["paths"]["float32"])
    q = onnx_session(tiny["paths"]["int8"])
    feed = pad_batch(_waves())
    a, b = f32.run(None, feed)[0], q.run(None, feed)[0]
    assert np.isfinite(b).all() and np.abs(a - b).max() < 0.1


def test_attention_pooling_exports(tmp_path):
    encoder = random_encoder(tiny_config(), seed=0)
    model_dir = _save(tmp_path / "m", encoder, pooling="attention")
    paths = export_model(model_dir, tmp_path / "onnx", int8=False, encoder=encoder)
    assert "int8" not in paths
    from edgeser.training.folder import load_trained

    head = load_trained(model_dir, encoder)[0].head
    waves = _waves()
    ref = reference_probabilities(encoder, head, waves)
    got = onnx_session(paths["float32"]).run(None, pad_batch(waves))[0]
    assert np.abs(got - ref).max() <= TOL


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(EdgeserError, match="not an edgeser model folder"):
        export_model(tmp_path, tmp_path / "out")
    with pytest.raises(EdgeserError, match="not a folder"):
        export_model(tmp_path / "missing", tmp_path / "out")
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    w2v = Wav2Vec2Model(Wav2Vec2Config(**tiny_config().to_dict()))
    encoder = Encoder(w2v, source="random", is_random=True)
    model_dir = _save(tmp_path / "w2v", encoder)
    with pytest.raises(EdgeserError, match="HuBERT/DistilHuBERT"):
        export_model(model_dir, tmp_path / "out", encoder=encoder)


def test_cli_parser_and_handler(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="edgeser")
    add_export(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "export",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--no-int8",
            "--calibration",
            "a.wav",
            "b.wav",
        ]
    )
    assert args.int8 is False and args.calibration == [Path("a.wav"), Path("b.wav")]
    with pytest.raises(EdgeserError):
        args.func(args)


# --------------------------------------------------------------- full-size DistilHuBERT


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("export_full")
    encoder = random_encoder(seed=0)
    # with the dimensional output, so the shared full-size export checks both outputs
    model_dir = _save(root / "production", encoder, sharpen=30.0, dimensions=True)
    paths = export_model(model_dir, root / "onnx", encoder=encoder)
    from edgeser.training.folder import load_trained

    head = load_trained(model_dir, encoder)[0].head
    return {"encoder": encoder, "head": head, "paths": paths, "model_dir": model_dir}


@pytest.mark.slow
def test_full_size_parity_and_int8_size(full):
    waves = [tone(1.0, seed=3), tone(0.3, freq=300.0, seed=4)]
    ref = reference_probabilities(full["encoder"], full["head"], waves)
    got = onnx_session(full["paths"]["float32"]).run(None, pad_batch(waves))[0]
    assert np.abs(got - ref).max() <= TOL
    assert full["paths"]["int8"].stat().st_size <= 24_000_000
    assert full["paths"]["float32"].stat().st_size > 90_000_000


@pytest.mark.slow
def test_full_size_ort_file_stays_8_bit_and_answers_as_the_onnx(full):
    """The ORT format file is what a phone loads: no weight widened (a Cast + Mul pair was
    folded into float32 and made it 50 MB), the operators of onnxruntime's reduced build
    listed, and the same numbers as model.int8.onnx through the runtime."""
    ort_file = full["paths"]["int8_ort"]
    assert ort_file.stat().st_size <= full["paths"]["int8"].stat().st_size + 300_000
    config = full["paths"]["required_operators"].read_text(encoding="utf-8")
    assert "# - model.int8.ort" in config
    ops = {
        op
        for line in config.splitlines()
        if not line.startswith("#")
        for op in line.split(";")[2].split(",")
    }
    assert {"Loop", "MatMulIntegerToFloat", "QLinearConv", "DequantizeLinear"} <= ops
    waves = [tone(1.3, seed=5), tone(11.0, freq=170.0, seed=6)]
    a, b = OnnxEmotionModel(full["paths"]["int8"]), OnnxEmotionModel(ort_file)
    np.testing.assert_allclose(a.run(waves), b.run(waves), atol=1e-5)


@pytest.mark.slow
def test_full_size_int8_is_faithful_on_real_speech(full, ravdess_mini):
    from edgeser.audio.frontend import trim_silence
    from edgeser.audio.io import load_audio

    files = sorted(ravdess_mini.rglob("*.wav"))
    assert files
    waves = [trim_silence(load_audio(f, SR), SR) for f in files]
    f32 = onnx_session(full["paths"]["float32"], threads=2)
    q = onnx_session(full["paths"]["int8"], threads=2)
    order = np.argsort([len(w) for w in waves])  # batch similar lengths together
    a = np.zeros((len(waves), 4), np.float32)
    b = np.zeros_like(a)
    da = np.zeros((len(waves), 3), np.float32)
    db = np.zeros_like(da)
    for start in range(0, len(order), 8):
        idx = order[start : start + 8]
        feed = pad_batch([waves[i] for i in idx])
        (a[idx], da[idx]), (b[idx], db[idx]) = f32.run(None, feed), q.run(None, feed)
    agree = float(np.mean(a.argmax(1) == b.argmax(1)))
    mean_delta = float(np.abs(a - b).mean())
    assert agree >= 0.99, (agree, mean_delta)
    assert mean_delta <= 0.02, (agree, mean_delta)
    # the dimensional output: spread over its range, and as faithful as the probabilities
    assert da.std(axis=0).min() > 0.05, da.std(axis=0)
    assert float(np.abs(da - db).mean()) <= 0.02, np.abs(da - db).mean(axis=0)


@pytest.mark.slow
def test_full_size_int8_cannot_saturate_any_cpu(full):
    """Every integer operator of the fused default 8-bit graph (the 12 transformer linears
    and the second and third extractor convolutions) has 7-bit weights: no uint8 x int8 pair sum can
    leave the int16 range of x86's non-VNNI kernels, whatever the input."""
    from edgeser.exporting.saturation import INT16_MAX, STATIC_WEIGHT_QMAX, saturation_report

    ops = saturation_report(full["paths"]["int8"])
    kinds = sorted({op.op_type for op in ops})
    assert kinds == ["MatMulIntegerToFloat", "QLinearConv"] and len(ops) == 14
    for op in ops:
        assert op.activation == "uint8" and op.weight_dtype == "int8", op
        assert op.weight_max <= STATIC_WEIGHT_QMAX and op.pair_sum <= INT16_MAX, op
        assert op.safe
    assert max(op.pair_sum for op in ops) == 255 * 2 * STATIC_WEIGHT_QMAX == 32640


@pytest.mark.slow
@pytest.mark.parametrize(
    "node", ["/layers.0/q_proj/MatMul", "/layers.1/fc1/MatMul", "/stack/convs.0/Conv"]
)
def test_full_size_int8_ops_are_exact_on_worst_case_input(full, node):
    """onnxruntime on this CPU against exact integer arithmetic, on the input that drives
    every pair of products as far as the weights allow (255 where a weight is positive)."""
    from edgeser.exporting.saturation import worst_case_probe

    got, exact = worst_case_probe(full["paths"]["int8"], node)
    assert got.shape == exact.shape
    if node.endswith("Conv"):  # uint8 output codes; requantisation may round one apart
        assert np.abs(got - exact).max() <= 1
        assert exact.max() > exact.min()  # not a trivially clipped output
    else:  # float outputs
        np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())


def test_saturation_report_flags_full_range_weights(tiny, tmp_path):
    """The check itself: a graph with 8-bit weights is refused, and the probe's exact
    arithmetic agrees with onnxruntime on a safe graph."""
    import onnx
    from onnx import numpy_helper

    from edgeser.exporting.saturation import require_no_saturation, saturation_report

    path = tiny["paths"]["int8"]
    assert all(op.safe for op in saturation_report(path))
    model = onnx.load(str(path))
    widened = 0
    for init in model.graph.initializer:  # int8 weights behind DequantizeLinear, doubled
        if init.name.endswith("_quantized"):
            w = numpy_helper.to_array(init).astype(np.int16)
            init.CopyFrom(
                numpy_helper.from_array(np.clip(2 * w, -127, 127).astype(np.int8), init.name)
            )
            widened += 1
    assert widened
    bad = tmp_path / "full-range.onnx"
    onnx.save(model, str(bad))
    assert not all(op.safe for op in saturation_report(bad))
    with pytest.raises(EdgeserError, match="can saturate"):
        require_no_saturation(bad)


def test_extra_variants_and_unknown_variant(tmp_path):
    encoder = random_encoder(tiny_config(), seed=0)
    model_dir = _save(tmp_path / "m", encoder)
    cal = write_wav(tmp_path / "cal.wav", tone(0.5, seed=9))  # one short file: fast
    paths = export_model(
        model_dir,
        tmp_path / "onnx",
        int8=False,
        encoder=encoder,
        extra_variants=("int8-fast", "float16", "float16-compute"),
        calibration=[cal],
    )
    doc = json.loads(paths["json"].read_text())
    assert doc["files"] == {
        "float32": "model.onnx",
        "int8-fast": "model.int8-fast.onnx",
        "float16": "model.float16.onnx",
        "float16-compute": "model.float16-compute.onnx",
    }
    assert doc["export"]["calibration"] == [str(cal)]
    feed = pad_batch(_waves())
    ref = onnx_session(paths["float32"]).run(None, feed)[0]
    fast = onnx_session(paths["int8-fast"]).run(None, feed)[0]
    assert np.isfinite(fast).all() and fast.shape == (3, 4)
    for half in ("float16", "float16-compute"):  # same interface, float32 in and out
        got = onnx_session(paths[half]).run(None, feed)[0]
        assert got.dtype == np.float32 and np.abs(got - ref).max() < 5e-3
    assert doc["sizes_bytes"]["float16"] < 0.7 * doc["sizes_bytes"]["float32"]  # tiny: small
    # weights (< 1024 elements) stay float32
    with pytest.raises(EdgeserError, match="unknown export variant"):
        export_model(model_dir, tmp_path / "o2", encoder=encoder, extra_variants=("fp64",))


@pytest.mark.slow
def test_cli_handler_exports_a_run_folder(full, tmp_path, capsys):
    """The real CLI path: the encoder is rebuilt from model.json (source 'random', seed 0)."""
    parser = argparse.ArgumentParser(prog="edgeser")
    add_export(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["export", str(full["model_dir"]), "--out", str(tmp_path / "o"), "--no-int8"]
    )
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("exported") and "model.onnx" in line and "\n" not in line
    assert (tmp_path / "o" / "model.json").is_file()
    assert not (tmp_path / "o" / "model.int8.onnx").exists()


def test_fine_tuned_encoder_weights_are_exported(tmp_path):
    """train=encoder runs carry their own encoder copy: the export must use its weights."""
    encoder = random_encoder(tiny_config(), seed=0)
    cfg = TrainConfig(encoder="random", precision="fp32", train="encoder")
    model = build_model(cfg, encoder, "conv")
    with torch.no_grad():
        for p in model.encoder.model.encoder.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
        model.head.classifier[-1].weight.mul_(8.0)
    save_model(tmp_path / "m", model, cfg, encoder, "conv", {"name": "production"})
    paths = export_model(tmp_path / "m", tmp_path / "onnx", int8=False, encoder=encoder)
    waves = _waves()
    tuned = reference_probabilities(model.encoder, model.head, waves)
    frozen = reference_probabilities(encoder, model.head, waves)
    got = onnx_session(paths["float32"]).run(None, pad_batch(waves))[0]
    assert np.abs(got - tuned).max() <= TOL
    assert np.abs(got - frozen).max() > 10 * TOL


def test_a_folder_cannot_make_export_load_a_file_outside_it(tmp_path, caplog):
    """model.json records the encoder's source; a path outside the folder (a pickle, for an
    s3prl checkpoint) is loaded only when the user names it."""
    import logging

    from transformers import HubertModel

    from edgeser.models.ssl import load_encoder, recorded_source

    torch.manual_seed(0)
    outside = tmp_path / "somewhere" / "tiny-hubert"
    HubertModel(tiny_config()).save_pretrained(outside)
    encoder = load_encoder(str(outside), precision="fp32")
    model_dir = _save(tmp_path / "given", encoder)
    assert json.loads((model_dir / "model.json").read_text())["encoder"]["source"] == str(outside)
    with pytest.raises(EdgeserError, match=r"a path outside the folder; .*pass --encoder"):
        export_model(model_dir, tmp_path / "out", int8=False)
    from edgeser.experiments.runs import evaluate_model
    from edgeser.testing import write_tiny_manifests

    corpus = write_tiny_manifests(tmp_path / "corpus", 0.5)["ravdess"]
    with pytest.raises(EdgeserError, match="outside the folder"):
        evaluate_model(model_dir, corpus, tmp_path / "eval")
    assert not (tmp_path / "out").exists()
    with caplog.at_level(logging.INFO, logger="edgeser.training.folder"):
        paths = export_model(model_dir, tmp_path / "out", int8=False, encoder_source=str(outside))
    assert paths["float32"].is_file()
    assert f"encoder: {outside} (as named on the command line)" in caplog.text
    # inside the folder (relative or absolute, links resolved) is the folder's own
    inside = model_dir / "encoder"
    HubertModel(tiny_config()).save_pretrained(inside)
    assert recorded_source("encoder", model_dir) == str(inside.resolve())
    assert recorded_source(str(inside), model_dir) == str(inside.resolve())
    (model_dir / "link").symlink_to(outside)
    for bad in (
        "link",
        "../somewhere/tiny-hubert",
        "/etc/passwd",
        "/data/x.ckpt",
        "model.ckpt",
        "",
        "not a source",
    ):
        with pytest.raises(EdgeserError, match="pass --encoder"):
            recorded_source(bad, model_dir)
    for ok in ("random", "random:hubert-base", "distilhubert", "ntu-spml/distilhubert"):
        assert recorded_source(ok, model_dir) == ok


def test_the_calibration_temperature_is_applied_inside_the_graph(tmp_path):
    """A trained folder's temperature (fitted on its validation speakers) divides the
    logits inside the exported graph; model.json states it and the low_confidence
    threshold, and the runtime says low_confidence below it."""
    from edgeser.evaluation.confidence import apply_temperature
    from edgeser.training.checkpoint import load_weights, save_weights

    encoder = random_encoder(tiny_config(), seed=0)
    plain = _save(tmp_path / "plain", encoder, sharpen=3.0)
    warm = _save(tmp_path / "warm", encoder, sharpen=3.0)
    tensors, meta = load_weights(warm)
    meta["calibration"] = {
        "method": "temperature",
        "temperature": 2.5,
        "n_val": 7,
        "low_confidence_below": 0.99,
        "val": {},
    }
    save_weights(warm / "model.safetensors", tensors, meta)
    a = export_model(plain, tmp_path / "a", int8=False, encoder=encoder)
    b = export_model(warm, tmp_path / "b", int8=False, encoder=encoder)
    card = json.loads(b["json"].read_text())
    assert card["calibration"]["temperature"] == 2.5
    assert card["calibration"]["low_confidence_below"] == 0.99
    assert json.loads(a["json"].read_text())["calibration"]["method"] == "none"
    waves = _waves()
    raw = onnx_session(a["float32"]).run(None, pad_batch(waves))[0]
    cooled = onnx_session(b["float32"]).run(None, pad_batch(waves))[0]
    np.testing.assert_allclose(cooled, apply_temperature(raw, 2.5), atol=1e-5)
    wav = write_wav(tmp_path / "x.wav", tone(1.0, seed=2))
    assert OnnxEmotionModel(b["float32"], vad="webrtc").analyse_file(wav).status == "low_confidence"
    assert OnnxEmotionModel(a["float32"], vad="webrtc").analyse_file(wav).status == "ok"
