"""The 8-bit model: every large weight stored as int8, fast where it is safe to be.

Measured on this CPU (see ``bench/README.md``): quantising the *activations* of the
convolutional feature extractor breaks fidelity (pooled-embedding cosine ~0.9), while the
positional convolution and the transformer linears quantise harmlessly. The int8 model is
therefore mixed:

- **static QDQ** (uint8 activations, per-channel int8 weights, calibrated on speech-like
  audio) for the positional convolution and every transformer linear (q, k, v, out, fc1,
  fc2 of each layer): onnxruntime runs these as integer kernels;
- **weight-only int8** for everything else that is large (the feature-extractor
  convolutions, the first-conv matmul, the projection, the head): an int8 initializer with
  per-channel scales and a ``DequantizeLinear`` feeding the float operator, so the file
  is small but the arithmetic, and the fidelity, stay float32.

The optional ``"fast"`` scheme (export variant ``int8-fast``) also quantises the
activations of the feature-extractor convolutions 2-7: about 4x faster than float32, but
less faithful (see ``bench/README.md``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edgeser.core.errors import EdgeserError

logger = logging.getLogger(__name__)

__all__ = ["SCHEMES", "quantize_int8", "split_nodes", "weight_only_int8"]

_STATIC_PREFIXES = ("/pos_conv/", "/layers.")
_STATIC_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def split_nodes(model: object, scheme: str = "mixed") -> tuple[list[str], list[str]]:
    """Names of nodes for static QDQ and for weight-only int8 in an exported graph.

    ``"mixed"``: static QDQ for the positional conv and transformer linears only;
    ``"fast"``: also for the feature-extractor convolutions after the first layer.
    """
    import onnx

    assert isinstance(model, onnx.ModelProto)
    inits = {i.name for i in model.graph.initializer}
    static: list[str] = []
    weight_only: list[str] = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Conv", "Gemm"):
            continue
        if len(node.input) < 2 or not (node.input[1] in inits or node.input[0] in inits):
            continue  # activation x activation (attention scores)
        name = node.name
        is_linear = name.startswith("/layers.") and any(
            f"/{lin}/" in name for lin in _STATIC_LINEARS
        )
        fast_conv = scheme == "fast" and name.startswith("/convs.")
        if name.startswith("/pos_conv/") or is_linear or fast_conv:
            static.append(name)
        else:
            weight_only.append(name)
    return static, weight_only


def _weight_axis(op_type: str, transposed_b: bool, position: int) -> int:
    """Output-channel axis of a weight: Conv ``[out, in, k]``; MatMul B ``[in, out]``,
    MatMul A (a weight on the left, ``W @ x``) ``[out, in]``."""
    if op_type == "Conv" or position == 0:
        return 0
    if op_type == "Gemm":
        return 0 if transposed_b else 1
    return 1


def weight_only_int8(model: object, node_names: Iterable[str], min_elements: int = 1024) -> int:
    """Store the weight of each named node as int8 + per-channel scale + ``DequantizeLinear``.

    Symmetric per-output-channel quantisation (zero point 0, range ±127). Modifies
    ``model`` in place; returns the number of weights converted. Weights smaller than
    ``min_elements`` stay float.
    """
    import onnx
    from onnx import helper, numpy_helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    wanted = set(node_names)
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    new_nodes = []
    converted = 0
    for node in graph.node:
        if node.name not in wanted:
            continue
        position = 1 if node.input[1] in inits else 0
        wname = node.input[position]
        init = inits.get(wname)
        if init is None or users.get(wname, 0) != 1:
            continue
        w = numpy_helper.to_array(init).astype(np.float32)
        if w.size < min_elements:
            continue
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        axis = _weight_axis(node.op_type, trans_b, position)
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.max(np.abs(w), axis=reduce)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = wname.replace(":", "_")
        graph.initializer.remove(init)
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{base}_int8"),
            numpy_helper.from_array(scale, f"{base}_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{base}_zero"),
        ])
        new_nodes.append(helper.make_node(
            "DequantizeLinear", [f"{base}_int8", f"{base}_scale", f"{base}_zero"], [wname],
            name=f"{base}_DequantizeLinear", axis=axis,
        ))
        converted += 1
    for i, node in enumerate(new_nodes):
        graph.node.insert(i, node)
    return converted


class _Reader(CalibrationDataReader):
    """A ``CalibrationDataReader`` over single-utterance batches."""

    def __init__(self, waves: Sequence[np.ndarray]) -> None:
        self._items = [
            {"waveform": np.asarray(w, np.float32)[None, :],
             "lengths": np.array([len(w)], np.int64)}
            for w in waves
        ]
        self._it = iter(self._items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)


SCHEMES: tuple[str, ...] = ("mixed", "fast")
_FAST_CALIBRATION_SAMPLES = 32_000


def quantize_int8(
    float_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[np.ndarray],
    *,
    scheme: str = "mixed",
) -> Path:
    """Write the int8 model of ``float_path`` to ``out_path``.

    ``calibration`` holds 16 kHz waveforms as the runtime will feed them (trimmed, not
    pre-emphasised: the graph does that); the result is deterministic for the same input.
    ``scheme="mixed"`` (default, see the module docstring) keeps the feature-extractor
    arithmetic in float32; ``"fast"`` also runs the feature-extractor convolutions after
    the first on uint8 activations (about 4x faster than float32, less faithful),
    calibrated with the 99.99th percentile on 2 s crops of the calibration audio.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration:
        raise EdgeserError("int8 export needs at least one calibration waveform")
    if scheme not in SCHEMES:
        raise EdgeserError(f"int8 scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    model = onnx.load(str(float_path))
    static, weight_only = split_nodes(model, scheme)
    method, options = CalibrationMethod.MinMax, {}
    if scheme == "fast":  # histograms need equal shapes: tile/crop to one length
        calibration = [np.resize(np.asarray(w, np.float32), _FAST_CALIBRATION_SAMPLES)
                       for w in calibration]
        method, options = CalibrationMethod.Percentile, {"CalibPercentile": 99.99}
    if not static:
        raise EdgeserError(f"{float_path}: no transformer linears found to quantise")
    reader = _Reader(calibration)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="edgeser-q-", dir=out_path.parent) as tmp:
        qdq = Path(tmp) / "qdq.onnx"
        quantize_static(
            str(float_path),
            str(qdq),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Conv"],
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=static,
            calibrate_method=method,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, **options},
        )
        model = onnx.load(str(qdq))
    n = weight_only_int8(model, weight_only)
    logger.info("int8 (%s): %d nodes static QDQ, %d weight-only int8", scheme, len(static), n)
    onnx.save(model, str(out_path))
    return out_path
