"""The 8-bit and float16 models: graph rewrites, GPTQ rounding, schemes (tiny models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.exporting.calibration import speech_like
from edgeser.exporting.exporter import build_export_graph, export_flat
from edgeser.exporting.gptq import gptq_round
from edgeser.exporting.halfprec import convert_float16, store_float16
from edgeser.exporting.quantize import (
    SCHEMES,
    clip_gelu_inputs,
    fuse_gelu,
    quantize_int8,
    split_nodes,
    weight_only_int8,
)
from edgeser.models.ssl import random_encoder, tiny_config
from edgeser.runtime.session import onnx_session, pad_batch
from edgeser.testing import tone
from edgeser.training.folder import build_model, save_model

# four conv layers, so the schemes differ: convs.0-2 after the matmul-shaped first layer
_CONFIG = {"conv_dim": (32, 32, 32, 32), "conv_kernel": (10, 3, 3, 2), "conv_stride": (5, 2, 2, 2)}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quantize_tiny")
    encoder = random_encoder(tiny_config(**_CONFIG), seed=0)
    cfg = TrainConfig(encoder="random", precision="fp32")
    model = build_model(cfg, encoder, "pooled")
    with torch.no_grad():
        model.head.classifier[-1].weight.mul_(8.0)
    save_model(root / "production", model, cfg, encoder, "pooled", {"name": "production"})
    graph, _, _ = build_export_graph(root / "production", encoder)
    flat = root / "flat.onnx"  # what the exporter quantises (then loops)
    export_flat(graph, flat)
    return flat


def _cal() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [speech_like(s, rng) for s in (0.6, 1.0, 0.8)]


def _waves() -> list[np.ndarray]:
    return [
        tone(0.4, seed=1),
        tone(1.1, freq=180.0, seed=2),
        speech_like(0.9, np.random.default_rng(5)),
    ]


def _run(path: Path | bytes, waves: list[np.ndarray]) -> np.ndarray:
    if isinstance(path, bytes):
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    else:
        session = onnx_session(path)
    return session.run(None, pad_batch(waves))[0]


def test_fuse_gelu_is_exact_and_leaves_no_orphans(fp32):
    model = onnx.load(str(fp32))
    n = fuse_gelu(model)
    assert n >= 4  # conv layers 1-4, positional conv, feed-forward
    ops = [node.op_type for node in model.graph.node]
    assert "Erf" not in ops and ops.count("Gelu") == n
    used = {i for node in model.graph.node for i in node.input}
    assert all(node.output[0] in used for node in model.graph.node if node.op_type == "Constant")
    waves = _waves()
    assert np.abs(_run(model.SerializeToString(), waves) - _run(fp32, waves)).max() < 1e-5
    assert fuse_gelu(model) == 0  # idempotent


def test_split_nodes_per_scheme(fp32):
    model = onnx.load(str(fp32))
    static, weight_only = split_nodes(model, "mixed")
    assert {"/stack/convs.0/Conv", "/stack/convs.1/Conv"} <= set(static)
    assert "/stack/convs.2/Conv" in weight_only
    assert any(n.startswith("/pos_conv/") for n in weight_only)
    assert any("/fc1/" in n for n in static) and "/stack/MatMul" in weight_only
    fast, _ = split_nodes(model, "fast")
    assert {"/stack/convs.0/Conv", "/stack/convs.1/Conv", "/stack/convs.2/Conv"} <= set(fast)
    assert any(n.startswith("/pos_conv/") for n in fast)
    assert set(SCHEMES) == {"mixed", "fast"}
    with pytest.raises(EdgeserError, match="scheme"):
        split_nodes(model, "int4")


def test_weight_only_int8_stays_8_bit_in_the_session(fp32, tmp_path):
    """The weight-only int8 weights are widened by DequantizeLinear nodes, which
    onnxruntime's optimizer keeps (a Cast + Mul pair was folded into float32 initializers:
    a 50 MB .ort file and twice the session memory)."""
    import onnxruntime as ort

    from edgeser.exporting.onnx_utils import WEIGHT_ONLY

    model = onnx.load(str(fp32))
    _, weight_only = split_nodes(model, "mixed")
    n = weight_only_int8(model, weight_only, min_elements=64)
    assert n >= 3
    dqs = [node for node in model.graph.node if node.op_type == "DequantizeLinear"]
    assert len(dqs) == n and all(node.name.endswith(WEIGHT_ONLY) for node in dqs)
    assert not any(
        node.op_type == "Cast" and node.input[0].endswith("_int8") for node in model.graph.node
    )
    int8 = {
        i.name: numpy_helper.to_array(i)
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and i.name.endswith("_int8")
    }
    assert len(int8) == n and all(np.abs(w).max() <= 127 for w in int8.values())
    waves = _waves()
    a, b = _run(fp32, waves), _run(model.SerializeToString(), waves)
    assert np.abs(a - b).max() < 0.05
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    eight_bit = sum(
        numpy_helper.to_array(i).nbytes
        for i in optimized.graph.initializer
        if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    )
    assert eight_bit >= sum(w.nbytes for w in int8.values())  # none widened


def test_gptq_round_beats_round_to_nearest():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 48))
    base = rng.standard_normal((48, 6))
    x = base @ rng.standard_normal((6, 400)) + 0.05 * rng.standard_normal((48, 400))
    scale = np.abs(w).max(1) / 127
    rtn = np.clip(np.rint(w / scale[:, None]), -127, 127)
    q = gptq_round(w, scale, x @ x.T)
    assert q.dtype == np.int8 and q.shape == w.shape and np.abs(q.astype(int)).max() <= 127

    def err(qq: np.ndarray) -> float:
        return float(np.linalg.norm((w - qq * scale[:, None]) @ x))

    assert err(q.astype(float)) < 0.7 * err(rtn)
    # a diagonal Hessian has nothing to compensate with: GPTQ is round-to-nearest
    np.testing.assert_array_equal(gptq_round(w, scale, np.diag(np.full(48, 2.0))), rtn)
    # 7-bit weights (the integer operators' range): error compensation never leaves it
    q7 = gptq_round(w, 2 * scale, x @ x.T, qmax=64)
    assert np.abs(q7.astype(int)).max() == 64


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantize_int8_schemes_run_and_stay_close(fp32, tmp_path, scheme):
    out = quantize_int8(fp32, tmp_path / f"{scheme}.onnx", _cal(), scheme=scheme)
    model = onnx.load(str(out))
    ops = [node.op_type for node in model.graph.node]
    assert "Gelu" in ops and "Erf" not in ops and "QuantizeLinear" in ops
    static, _ = split_nodes(onnx.load(str(fp32)), scheme)
    n_convs = sum(n.startswith("/stack/convs.") for n in static)
    assert n_convs == (2 if scheme == "mixed" else 3)
    # every quantised conv output feeding a GELU has its uint8 range cut at -3
    consumers = {i: n for n in model.graph.node for i in n.input}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    clipped = 0
    for q in model.graph.node:
        if q.op_type == "QuantizeLinear" and q.input[0].startswith("/stack/convs."):
            dq = consumers[q.output[0]]
            if consumers[dq.output[0]].op_type == "Gelu":
                scale = float(inits[q.input[1]])
                assert -float(inits[q.input[2]]) * scale >= -3.0 - scale / 2  # zero point rounded
                clipped += 1
    assert clipped == n_convs
    # the integer operators' weights are 7-bit, the weight-only ones keep 8 bits
    int8 = {
        i.name: numpy_helper.to_array(i)
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.INT8
    }
    static_w = [v for k, v in int8.items() if k.endswith("_quantized")]
    other_w = [v for k, v in int8.items() if not k.endswith("_quantized") and v.size >= 1024]
    assert static_w and max(int(np.abs(v.astype(int)).max()) for v in static_w) <= 64
    assert other_w and max(int(np.abs(v.astype(int)).max()) for v in other_w) == 127
    waves = _waves()
    a, b = _run(fp32, waves), _run(out, waves)
    assert np.isfinite(b).all() and np.abs(a - b).max() < 0.1
    assert out.stat().st_size < fp32.stat().st_size


def test_quantize_int8_gptq_changes_only_rounding(fp32, tmp_path):
    cal = _cal()
    rtn = onnx.load(str(quantize_int8(fp32, tmp_path / "rtn.onnx", cal, gptq=False)))
    gq = onnx.load(str(quantize_int8(fp32, tmp_path / "gptq.onnx", cal)))
    a = {i.name: numpy_helper.to_array(i) for i in rtn.graph.initializer}
    b = {i.name: numpy_helper.to_array(i) for i in gq.graph.initializer}
    assert a.keys() == b.keys()
    int8 = [k for k, v in a.items() if v.dtype == np.int8 and v.size >= 64]
    changed = [k for k in int8 if not np.array_equal(a[k], b[k])]
    assert changed  # GPTQ re-rounded some weights...
    for k in changed:  # ...by at most a few steps, same scales
        assert np.abs(a[k].astype(int) - b[k].astype(int)).max() <= 8
    for k, v in a.items():
        if v.dtype != np.int8:
            np.testing.assert_array_equal(v, b[k])
    # deterministic
    again = onnx.load(str(quantize_int8(fp32, tmp_path / "again.onnx", cal)))
    assert all(np.array_equal(numpy_helper.to_array(i), b[i.name]) for i in again.graph.initializer)


def test_clip_gelu_inputs_ignores_other_outputs(fp32, tmp_path):
    model = onnx.load(str(quantize_int8(fp32, tmp_path / "m.onnx", _cal(), scheme="fast")))
    assert clip_gelu_inputs(model, ["/layers.0/fc1/MatMul"]) == 0  # float output, no Q
    static, _ = split_nodes(model, "fast")
    assert clip_gelu_inputs(model, static) == 0  # already cut


def test_quantize_int8_bad_input(fp32, tmp_path):
    with pytest.raises(EdgeserError, match="calibration"):
        quantize_int8(fp32, tmp_path / "x.onnx", [])
    with pytest.raises(EdgeserError, match="scheme"):
        quantize_int8(fp32, tmp_path / "x.onnx", _cal(), scheme="int4")


# ---------------------------------------------------------------------- float16


@pytest.mark.parametrize("mode", ["storage", "compute"])
def test_convert_float16_runs_and_is_faithful(fp32, tmp_path, mode):
    out = tmp_path / f"model.{mode}.onnx"
    convert_float16(fp32, out, mode=mode)
    waves = _waves()
    a, b = _run(fp32, waves), _run(out, waves)
    assert b.dtype == np.float32 and b.shape == a.shape
    np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
    assert np.abs(a - b).max() < 5e-3
    session = onnx_session(out)
    assert [i.name for i in session.get_inputs()] == ["waveform", "lengths"]


def test_store_float16_halves_the_weights(fp32, tmp_path):
    model = onnx.load(str(fp32))
    n = store_float16(model, min_elements=256)
    assert n > 0
    halves = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) == n
    out = tmp_path / "half.onnx"
    onnx.save(model, str(out))
    assert out.stat().st_size < 0.7 * fp32.stat().st_size
    with pytest.raises(EdgeserError, match="mode"):
        convert_float16(fp32, tmp_path / "x.onnx", mode="bfloat16")
    big = onnx.load(str(fp32))
    init = next(
        i
        for i in big.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and numpy_helper.to_array(i).size >= 1024
    )
    init.CopyFrom(
        numpy_helper.from_array(
            np.full(numpy_helper.to_array(init).shape, 1e6, np.float32), init.name
        )
    )
    with pytest.raises(EdgeserError, match="float16 range"):
        store_float16(big)
