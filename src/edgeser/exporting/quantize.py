"""The 8-bit model: every large weight stored as int8, integer arithmetic where it is cheap
in fidelity and dear in time.

Measured on this project's 2-core CPU with the full DistilHuBERT graph (onnxruntime
profiler, 1 s input): about two thirds of the float32 time is the feature-extractor
convolutions and a fifth the transformer linears. The default scheme ``"mixed"``:

- **static QDQ** (uint8 activations, per-channel 7-bit int8 weights, MinMax-calibrated on
  speech-like audio) for every transformer linear (q, k, v, out, fc1, fc2, run as
  ``MatMulIntegerToFloat``: float outputs, no requantisation) and for the two
  feature-extractor convolutions after the matmul-shaped layer 1 (``/stack/convs.0`` and
  ``/stack/convs.1``, run as ``QLinearConv`` with pre-packed 7-bit weights): the two most
  expensive operators of the graph (1.26 and 0.63 G multiply-adds per second of audio),
  and on real speech their activations are among the least sensitive;
- **weight-only int8** for everything else that is large (the other extractor
  convolutions, the projection, the positional convolution, the head): int8 initializers
  with per-channel scales widened by ``DequantizeLinear`` nodes, which onnxruntime's
  optimizer keeps (it leaves them to its QDQ fusions), so the weights stay 8-bit in the
  session and in the ``.ort`` file while the arithmetic, and the fidelity, stay float32
  (onnxruntime runs the projection as ``MatMulNBits``, 8-bit weights dequantised on the
  fly). A ``Cast`` + ``Mul`` pair, used before, was constant-folded into float32 weights
  at load: a 50 MB ``.ort`` file and ~35 MB more session memory.

**The same answers on every CPU.** x86 CPUs without VNNI (AVX2, AVX-512 without VNNI)
run uint8 x int8 products through ``vpmaddubsw``, which adds pairs of products in 16-bit
registers and saturates when ``a_i w_i + a_j w_j`` leaves the int16 range; VNNI CPUs, ARM
and onnxruntime-web's WASM kernels compute exactly. With uint8 activations (codes 0-255)
no pair can saturate only if every int8 weight feeding an integer operator lies in
``[-64, 64]`` (``255 * (64 + 64) = 32640 <= 32767``): the statically quantised weights are
therefore 7-bit (onnxruntime's ``reduce_range``,
:data:`edgeser.exporting.saturation.STATIC_WEIGHT_QMAX`), and every int8 file the exporter
writes is checked with :func:`edgeser.exporting.saturation.saturation_report` (the operators as
onnxruntime fuses them at load) before it is kept. The weight-only int8 weights keep the
full range: they are widened to float32 when their node runs and never meet an integer
kernel.

Three measures keep it close to float32 and fast:

- **GPTQ rounding** of the int8 weights (except the grouped positional convolution): each
  weight matrix is rounded column by column, the rounding error compensated on the columns
  not yet rounded through the inverse Hessian of the layer's calibration inputs (Frantar
  et al. 2022). Same format and speed as round-to-nearest; on 120 real RAVDESS files the
  mean |Δp| to float32 drops from 0.0039 to 0.0031 and the largest from 0.030 to 0.020;
- the GELU after each convolution is fused into one ``com.microsoft`` ``Gelu`` node before
  quantisation (otherwise the quantiser's ``DequantizeLinear`` copies block onnxruntime's
  own GELU fusion and the decomposed Erf GELU runs on every large tensor);
- the uint8 range of a quantised convolution output that only feeds a GELU is cut at -3
  (GELU(-3) = -0.004), so the codes go to the values GELU keeps.

Measured (``bench/README.md``, 1 / 3 / 10 s): 23.9 MB; 1.33x / 1.23x / 1.24x faster than
the same graph with ``/convs.1`` weight-only (whose weights, widened on every run, cannot
be pre-packed) and 2.0-2.8x faster than PyTorch float32;
100 % argmax agreement with float32 on the 120 ``ravdess-mini`` files (mean |Δp| 0.0043),
98.9 % on the 280 of ``ravdess-dev`` (3 flips, all where float32's own top-two margin is
below 0.022).

The optional ``"fast"`` scheme (export variant ``int8-fast``) also runs the next
extractor convolution (``/convs.2``) and the positional convolution on uint8
activations: faster again, more error.
(Quantising every extractor convolution is faster still but doubles the error again and
flips predictions with clear margins on real speech.)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edgeser.core.errors import EdgeserError
from edgeser.exporting.gptq import gptq_int8
from edgeser.exporting.onnx_utils import WEIGHT_ONLY, constant_value, consumers_by_value
from edgeser.exporting.saturation import require_no_saturation
from edgeser.runtime.session import pad_batch

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEMES",
    "clip_gelu_inputs",
    "fuse_gelu",
    "quantize_int8",
    "split_nodes",
    "static_qdq",
    "weight_only_int8",
]

_STATIC_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
#: Scheme -> (indices of ``/convs.{i}/Conv`` with uint8 activations, positional conv too).
_SCHEME_CONVS: dict[str, tuple[frozenset[int], bool]] = {
    "mixed": (frozenset({0, 1}), False),
    "fast": (frozenset({0, 1, 2}), True),
}
SCHEMES: tuple[str, ...] = tuple(_SCHEME_CONVS)
_GELU_CLIP = 3.0  # GELU(-3) = -0.004: quantised GELU inputs need no codes below


class CalibrationReader(CalibrationDataReader):
    """A ``CalibrationDataReader`` feeding the exported graph one waveform at a time."""

    def __init__(self, waves: Sequence[np.ndarray]) -> None:
        self._items = [pad_batch([np.asarray(w, np.float32).reshape(-1)]) for w in waves]
        self._it = iter(self._items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)


def fuse_gelu(model: object) -> int:
    """Replace each exact-GELU pattern ``x * 0.5 * (1 + erf(x / sqrt 2))`` (as
    ``torch.onnx`` writes it: Div, Erf, Add, Mul, Mul) by one ``com.microsoft`` ``Gelu``
    node, in place; returns the number fused."""
    import onnx
    from onnx import helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    users = consumers_by_value(graph)

    def only(name: str, op: str):
        nodes = users.get(name, [])
        return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op else None

    def scalar(name: str, value: float, tol: float) -> bool:
        c = constant_value(model, name)
        return c is not None and c.size == 1 and abs(float(c.reshape(())) - value) <= tol

    fused: list[tuple[object, list]] = []
    for div in graph.node:
        if div.op_type != "Div" or not scalar(div.input[1], 2.0**0.5, 1e-3):
            continue
        x = div.input[0]
        erf = only(div.output[0], "Erf")
        add = erf and only(erf.output[0], "Add")
        if add is None or not any(scalar(i, 1.0, 1e-6) for i in add.input):
            continue
        mul1 = only(add.output[0], "Mul")
        if mul1 is None or x not in mul1.input:
            continue
        mul2 = only(mul1.output[0], "Mul")
        if mul2 is None or not any(scalar(i, 0.5, 1e-6) for i in mul2.input):
            continue
        gelu = helper.make_node(
            "Gelu", [x], [mul2.output[0]], name=f"{div.name}_Gelu", domain="com.microsoft"
        )
        fused.append((gelu, [div, erf, add, mul1, mul2]))
    if not fused:
        return 0
    typed = {v.name for v in graph.value_info}
    dropped: set[str] = set()
    for gelu, old in fused:
        graph.node.insert(list(graph.node).index(old[0]), gelu)
        for node in old:
            graph.node.remove(node)
            dropped.update(node.input)
        if gelu.output[0] not in typed:  # the quantiser needs to know the type
            graph.value_info.append(
                helper.make_tensor_value_info(gelu.output[0], onnx.TensorProto.FLOAT, None)
            )
    used = {name for node in graph.node for name in node.input}
    used.update(o.name for o in graph.output)
    for node in [n for n in graph.node if n.op_type == "Constant"]:
        if node.output[0] in dropped and node.output[0] not in used:
            graph.node.remove(node)  # the constants of the old pattern
    for init in [i for i in graph.initializer if i.name in dropped and i.name not in used]:
        graph.initializer.remove(init)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(fused)


def split_nodes(model: object, scheme: str = "mixed") -> tuple[list[str], list[str]]:
    """Names of nodes for static QDQ and for weight-only int8 in an exported graph
    (see the module docstring for what each scheme quantises)."""
    import onnx

    assert isinstance(model, onnx.ModelProto)
    if scheme not in _SCHEME_CONVS:
        raise EdgeserError(f"int8 scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    convs, pos = _SCHEME_CONVS[scheme]
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
        is_conv = any(name in (f"/stack/convs.{i}/Conv", f"/convs.{i}/Conv") for i in convs)
        if is_linear or is_conv or (pos and name.startswith("/pos_conv/")):
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
    """Store the weight of each named node as int8 + per-channel scale, widened by a
    ``DequantizeLinear`` node named ``<weight>_WeightOnly`` (:data:`WEIGHT_ONLY`).

    onnxruntime keeps ``DequantizeLinear`` nodes out of constant folding (its QDQ fusions
    look for them), so the weight stays 8-bit in the session and in the ``.ort`` file and
    is widened when the node runs (a ``Cast`` + ``Mul`` pair was folded into a float32
    initializer at load: twice the session memory and a 50 MB ``.ort``). The node computes
    in float32, as before. Symmetric per-output-channel quantisation (range ±127). Modifies
    ``model`` in place; returns the number of weights converted. Weights smaller than
    ``min_elements`` stay float.
    """
    import onnx
    from onnx import helper, numpy_helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    wanted = set(node_names)
    inits = {i.name: i for i in graph.initializer}
    users = consumers_by_value(graph)
    order = {id(n): i for i, n in enumerate(graph.node)}

    def first_user(name: str, node: object) -> object:
        """The weight's first consumer in graph order (its other users, such as the first
        GroupNorm's statistics beside the first convolution, read the same widened copy)."""
        return min(users.get(name, [node]), key=lambda n: order.get(id(n), 0))

    new_nodes = []
    converted = 0
    done: set[str] = set()
    for node in graph.node:
        if node.name not in wanted:
            continue
        position = 1 if node.input[1] in inits else 0
        wname = node.input[position]
        init = inits.get(wname)
        if init is None or wname in done:
            continue  # not an initializer, or widened already for an earlier user
        w = numpy_helper.to_array(init).astype(np.float32)
        if w.size < min_elements:
            continue
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        axis = _weight_axis(node.op_type, trans_b, position)
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.max(np.abs(w), axis=reduce, keepdims=True)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        base = wname.replace(":", "_")
        graph.initializer.remove(init)
        graph.initializer.extend(
            [  # symmetric: no zero point (0 of the weight's type)
                numpy_helper.from_array(q, f"{base}_int8"),
                numpy_helper.from_array(scale.reshape(-1), f"{base}_scale"),
            ]
        )
        new_nodes.append(
            (
                helper.make_node(
                    "DequantizeLinear",
                    [f"{base}_int8", f"{base}_scale"],
                    [wname],
                    name=f"{base}{WEIGHT_ONLY}",
                    axis=axis,
                ),
                first_user(wname, node),
            )
        )
        done.add(wname)
        converted += 1
    for dq, consumer in new_nodes:  # each right before its node: widened weights live briefly
        graph.node.insert(list(graph.node).index(consumer), dq)
    return converted


def clip_gelu_inputs(model: object, static: Iterable[str], low: float = -_GELU_CLIP) -> int:
    """Narrow the uint8 range of each quantised output of the ``static`` nodes that only
    feeds GELU to ``[max(rmin, low), rmax]`` (in place); returns how many."""
    import onnx
    from onnx import numpy_helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users = consumers_by_value(graph)
    outputs = {o for n in graph.node if n.name in set(static) for o in n.output}
    changed = 0
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] not in outputs:
            continue
        dqs = users.get(q.output[0], [])
        after = [u for dq in dqs for u in users.get(dq.output[0], [])]
        if (
            not dqs
            or any(d.op_type != "DequantizeLinear" for d in dqs)
            or not after
            or any(u.op_type != "Gelu" for u in after)
        ):
            continue
        if len(q.input) < 3 or q.input[1] not in inits or q.input[2] not in inits:
            continue
        scale = float(numpy_helper.to_array(inits[q.input[1]]))
        zero = numpy_helper.to_array(inits[q.input[2]])
        if zero.dtype != np.uint8 or any(d.input[1:3] != q.input[1:3] for d in dqs):
            continue
        rmin, rmax = -float(zero) * scale, (255.0 - float(zero)) * scale
        if rmin >= low or rmax <= 0:
            continue
        new_scale = np.float32((rmax - low) / 255.0)
        new_zero = np.uint8(np.clip(np.rint(-low / new_scale), 0, 255))
        inits[q.input[1]].CopyFrom(numpy_helper.from_array(np.array(new_scale), q.input[1]))
        inits[q.input[2]].CopyFrom(numpy_helper.from_array(np.array(new_zero), q.input[2]))
        changed += 1
    return changed


# ------------------------------------------------------------------------- driver


def static_qdq(
    float_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[np.ndarray],
    nodes: Sequence[str],
    op_types: Sequence[str],
    extra_options: dict[str, object] | None = None,
    *,
    weights: str = "int7",
) -> None:
    """Static QDQ quantisation of the named ``nodes`` only, in this project's convention:
    uint8 asymmetric activations calibrated with MinMax on ``calibration`` (S8S8 is a slow
    path on x86) and per-channel weights that no CPU's kernels can saturate (see the
    module docstring): ``weights="int7"`` (default) symmetric int8 in ``[-64, 64]``
    (``reduce_range``; fast uint8 x int8 kernels), ``"uint8"`` asymmetric uint8 (the full
    8-bit resolution on uint8 x uint8 kernels, which add in exact 16-bit products:
    slower, for small networks where the resolution matters more than the speed)."""
    if weights not in ("int7", "uint8"):
        raise EdgeserError(f"weights must be 'int7' or 'uint8', got {weights!r}")
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    quantize_static(
        str(float_path),
        str(out_path),
        CalibrationReader(calibration),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(op_types),
        per_channel=True,
        reduce_range=weights == "int7",
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8 if weights == "int7" else QuantType.QUInt8,
        nodes_to_quantize=list(nodes),
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={
            "ActivationSymmetric": False,
            "WeightSymmetric": weights == "int7",
            **(extra_options or {}),
        },
    )


def quantize_int8(
    float_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[np.ndarray],
    *,
    scheme: str = "mixed",
    gptq: bool = True,
) -> Path:
    """Write the int8 model of ``float_path`` to ``out_path``.

    ``calibration`` holds 16 kHz waveforms as the runtime will feed them (trimmed, not
    pre-emphasised: the graph does that); the result is deterministic for the same input.
    ``scheme``: ``"mixed"`` (default) or ``"fast"``, see the module docstring; ``gptq``:
    GPTQ rounding of the int8 weights (otherwise round-to-nearest).
    """
    import onnx

    if not calibration:
        raise EdgeserError("int8 export needs at least one calibration waveform")
    if scheme not in SCHEMES:
        raise EdgeserError(f"int8 scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    model = onnx.load(str(float_path))
    n_gelu = fuse_gelu(model)
    static, weight_only = split_nodes(model, scheme)
    if not static:
        raise EdgeserError(f"{float_path}: no transformer linears found to quantise")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="edgeser-q-", dir=out_path.parent) as tmp:
        fused = Path(tmp) / "fused.onnx"
        onnx.save(model, str(fused))
        qdq = Path(tmp) / "qdq.onnx"
        # float outputs for the linears: MatMulIntegerToFloat, no requantisation
        static_qdq(
            fused,
            qdq,
            calibration,
            static,
            ["MatMul", "Conv"],
            {"OpTypesToExcludeOutputQuantization": ["MatMul"]},
        )
        model = onnx.load(str(qdq))
        n_wo = weight_only_int8(model, weight_only)
        n_clip = clip_gelu_inputs(model, static)
        n_gptq = gptq_int8(fused, model, calibration) if gptq else 0
    logger.info(
        "int8 (%s): %d nodes static QDQ, %d weight-only int8, %d GELU fused, "
        "%d GELU inputs clipped, %d weights GPTQ-rounded",
        scheme,
        len(static),
        n_wo,
        n_gelu,
        n_clip,
        n_gptq,
    )
    onnx.save(model, str(out_path))
    require_no_saturation(out_path)
    return out_path
