"""The 8-bit model: every large weight stored as int8, integer arithmetic where it is cheap
in fidelity and dear in time.

Measured on this project's 2-core CPU with the full DistilHuBERT graph (onnxruntime
profiler, 1 s input): about two thirds of the float32 time is the feature-extractor
convolutions and a fifth the transformer linears. The default scheme ``"mixed"``:

- **static QDQ** (uint8 activations, per-channel int8 weights, MinMax-calibrated on
  speech-like audio) for every transformer linear (q, k, v, out, fc1, fc2, run as
  ``MatMulIntegerToFloat``: float outputs, no requantisation) and for the first
  feature-extractor convolution after the matmul-shaped layer 1 (``/convs.0``, run as
  ``QLinearConv``): the most expensive operator of the graph, and on real speech its
  activations are among the least sensitive;
- **weight-only int8** for everything else that is large (the other extractor
  convolutions, the first-conv matmul, the projection, the positional convolution, the
  head): int8 initializers with per-channel scales widened by ``Cast`` + ``Mul``, which
  onnxruntime constant-folds when the session is created, so the file is small while the
  arithmetic, and the fidelity, stay float32 and nothing is dequantised per run.

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

Measured (``bench/README.md``): 23.9 MB, 1.5-1.6x faster than float32 ONNX and 2.0x faster
than PyTorch float32 at 1-10 s, 100 % argmax agreement with float32 on real speech.

The optional ``"fast"`` scheme (export variant ``int8-fast``) also runs the next two
extractor convolutions (``/convs.1``, ``/convs.2``) and the positional convolution on
uint8 activations: about 2.5x faster than float32 ONNX, twice the error of ``"mixed"``.
(Quantising every extractor convolution is faster still but doubles the error again and
flips predictions with clear margins on real speech.)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edgeser.core.errors import EdgeserError

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEMES",
    "CalibrationReader",
    "clip_gelu_inputs",
    "fuse_gelu",
    "gptq_int8",
    "gptq_round",
    "quantize_int8",
    "split_nodes",
    "static_qdq",
    "weight_only_int8",
]

_STATIC_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
#: Scheme -> (indices of ``/convs.{i}/Conv`` with uint8 activations, positional conv too).
_SCHEME_CONVS: dict[str, tuple[frozenset[int], bool]] = {
    "mixed": (frozenset({0}), False),
    "fast": (frozenset({0, 1, 2}), True),
}
SCHEMES: tuple[str, ...] = tuple(_SCHEME_CONVS)
_GELU_CLIP = 3.0  # GELU(-3) = -0.004: quantised GELU inputs need no codes below


# ------------------------------------------------------------------ graph helpers


def _constant(model: object, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:  # type: ignore[attr-defined]
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:  # type: ignore[attr-defined]
        if (node.op_type == "Constant" and node.output[0] == name and node.attribute
                and node.attribute[0].name == "value"):
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _consumers(graph: object) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:  # type: ignore[attr-defined]
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def fuse_gelu(model: object) -> int:
    """Replace each exact-GELU pattern ``x * 0.5 * (1 + erf(x / sqrt 2))`` (as
    ``torch.onnx`` writes it: Div, Erf, Add, Mul, Mul) by one ``com.microsoft`` ``Gelu``
    node, in place; returns the number fused."""
    import onnx
    from onnx import helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    users = _consumers(graph)

    def only(name: str, op: str):
        nodes = users.get(name, [])
        return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op else None

    def scalar(name: str, value: float, tol: float) -> bool:
        c = _constant(model, name)
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
        gelu = helper.make_node("Gelu", [x], [mul2.output[0]], name=f"{div.name}_Gelu",
                                domain="com.microsoft")
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
                helper.make_tensor_value_info(gelu.output[0], onnx.TensorProto.FLOAT, None))
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
        is_conv = any(name == f"/convs.{i}/Conv" for i in convs)
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
    """Store the weight of each named node as int8 + per-channel scale, widened in the graph
    by ``Cast`` + ``Mul`` (constant-folded by onnxruntime at session creation: float32
    arithmetic, no per-run dequantisation).

    Symmetric per-output-channel quantisation (range ±127). Modifies ``model`` in place;
    returns the number of weights converted. Weights smaller than ``min_elements`` stay
    float.
    """
    import onnx
    from onnx import helper, numpy_helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    wanted = set(node_names)
    inits = {i.name: i for i in graph.initializer}
    users = _consumers(graph)
    new_nodes = []
    converted = 0
    for node in graph.node:
        if node.name not in wanted:
            continue
        position = 1 if node.input[1] in inits else 0
        wname = node.input[position]
        init = inits.get(wname)
        if init is None or len(users.get(wname, [])) != 1:
            continue
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
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{base}_int8"),
            numpy_helper.from_array(scale, f"{base}_scale"),
        ])
        new_nodes.append(helper.make_node("Cast", [f"{base}_int8"], [f"{base}_int8_float"],
                                          name=f"{base}_Cast", to=onnx.TensorProto.FLOAT))
        new_nodes.append(helper.make_node("Mul", [f"{base}_int8_float", f"{base}_scale"],
                                          [wname], name=f"{base}_Scale"))
        converted += 1
    for i, node in enumerate(new_nodes):
        graph.node.insert(i, node)
    return converted


def clip_gelu_inputs(model: object, static: Iterable[str], low: float = -_GELU_CLIP) -> int:
    """Narrow the uint8 range of each quantised output of the ``static`` nodes that only
    feeds GELU to ``[max(rmin, low), rmax]`` (in place); returns how many."""
    import onnx
    from onnx import numpy_helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users = _consumers(graph)
    outputs = {o for n in graph.node if n.name in set(static) for o in n.output}
    changed = 0
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] not in outputs:
            continue
        dqs = users.get(q.output[0], [])
        after = [u for dq in dqs for u in users.get(dq.output[0], [])]
        if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs) or not after or any(
                u.op_type != "Gelu" for u in after):
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


# ------------------------------------------------------------------------- GPTQ


def gptq_round(weight: np.ndarray, scale: np.ndarray, hessian: np.ndarray, *,
               damp: float = 0.01, block: int = 128) -> np.ndarray:
    """GPTQ rounding of ``weight`` ``[rows, K]`` to int8 with fixed per-row ``scale``.

    ``hessian`` ``[K, K]`` is ``X Xᵀ`` of the layer's inputs (columns = samples). Columns
    are rounded in order; each column's rounding error is spread over the columns not yet
    rounded so as to minimise ``|(W - s·Q) X|`` (Frantar et al. 2022). ``damp`` (fraction
    of the mean diagonal added to it) keeps a rank-deficient Hessian invertible. Returns
    int8 ``[rows, K]`` in ``[-127, 127]``.
    """
    w = np.array(weight, dtype=np.float64)
    h = np.array(hessian, dtype=np.float64)
    k = w.shape[1]
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(k)] += damp * float(np.mean(np.diag(h)))
    try:  # upper Cholesky factor of H⁻¹
        u = np.linalg.cholesky(np.linalg.inv(h)).T
    except np.linalg.LinAlgError:
        return np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int8)
    q = np.zeros_like(w)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb = w[:, b0:b1].copy()
        err = np.zeros_like(wb)
        ub = u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            col = np.clip(np.rint(wb[:, i] / s), -127, 127)
            q[:, b0 + i] = col
            e = (wb[:, i] - col * s) / ub[i, i]
            wb[:, i:] -= np.outer(e, ub[i, i:])
            err[:, i] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return q.astype(np.int8)


def _conv_gram(x: np.ndarray, kernel: int, stride: int, pad: tuple[int, int]) -> np.ndarray:
    """``X Xᵀ`` of the im2col matrix of one 1-D conv input ``[C, T]`` (rows ``c * k + j``,
    the flattening of a ``[out, C, k]`` weight)."""
    if pad[0] or pad[1]:
        x = np.pad(x, ((0, 0), pad))
    channels, length = x.shape
    frames = (length - kernel) // stride + 1
    if frames <= 0:
        return np.zeros((channels * kernel,) * 2)
    cols = np.stack([x[:, j: j + stride * (frames - 1) + 1: stride] for j in range(kernel)],
                    axis=1).reshape(channels * kernel, frames).astype(np.float32)
    return (cols @ cols.T).astype(np.float64)


def gptq_int8(float_path: str | Path, model: object, calibration: Sequence[np.ndarray], *,
              damp: float = 0.01, select: Callable[[str], bool] | None = None) -> int:
    """Re-round the int8 weights of the quantised ``model`` (in place) with
    :func:`gptq_round`, Hessians from the float model at ``float_path`` on ``calibration``.

    Applies to Conv (1-D, ungrouped) and MatMul nodes whose weight in ``model`` is an int8
    initializer behind ``DequantizeLinear`` (static QDQ) or ``Cast`` + ``Mul``
    (:func:`weight_only_int8`); node names are matched between the two graphs. The scales
    are kept. Returns the number of weights re-rounded.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgeser.deploy.export import pad_batch

    assert isinstance(model, onnx.ModelProto)
    fmodel = onnx.load(str(float_path))
    finits = {i.name: i for i in fmodel.graph.initializer}
    qinits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    qnodes = {n.name: n for n in model.graph.node}
    layers = []
    for node in fmodel.graph.node:
        if node.op_type not in ("Conv", "MatMul") or len(node.input) < 2:
            continue
        if select is not None and not select(node.name):
            continue
        pos = 1 if node.input[1] in finits else 0 if node.input[0] in finits else None
        qnode = qnodes.get(node.name)
        if pos is None or qnode is None or len(qnode.input) <= pos:
            continue
        attrs = {a.name: (list(a.ints) if a.ints else a.i) for a in node.attribute}
        if node.op_type == "Conv" and (
                attrs.get("group", 1) != 1 or len(attrs.get("kernel_shape", [0, 0])) != 1
                or any(d != 1 for d in attrs.get("dilations", [1]))):
            continue  # grouped (positional) conv: its Hessians are too large to be worth it
        src = producer.get(qnode.input[pos])
        if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in qinits:
            qname, sname = src.input[0], src.input[1]
        elif src is not None and src.op_type == "Mul":
            cast = producer.get(src.input[0])
            if cast is None or cast.op_type != "Cast" or cast.input[0] not in qinits:
                continue
            qname, sname = cast.input[0], src.input[1]
        else:
            continue
        if qinits[qname].data_type != onnx.TensorProto.INT8 or sname not in qinits:
            continue
        layers.append((node, pos, attrs, qname, sname))
    if not layers:
        return 0
    acts = list(dict.fromkeys(node.input[1 - pos] for node, pos, *_ in layers))
    have = {o.name for o in fmodel.graph.output}
    for name in acts:
        if name not in have:
            fmodel.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(fmodel.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    grams: dict[str, np.ndarray] = {}
    for wave in calibration:
        values = dict(zip(acts, session.run(acts, pad_batch([wave])), strict=True))
        for node, pos, attrs, _q, _s in layers:
            x = values[node.input[1 - pos]][0]
            if node.op_type == "Conv":
                pads = attrs.get("pads", [0, 0])
                g = _conv_gram(x, int(attrs["kernel_shape"][0]),
                               int(attrs.get("strides", [1])[0]), (int(pads[0]), int(pads[1])))
            elif pos == 1:  # x [..., K] @ W [K, N]
                x = x.reshape(-1, x.shape[-1]).astype(np.float32)
                g = (x.T @ x).astype(np.float64)
            else:  # W [N, K] @ x [K, F]
                x = x.astype(np.float32)
                g = (x @ x.T).astype(np.float64)
            grams[node.name] = grams[node.name] + g if node.name in grams else g
    for node, pos, _attrs, qname, sname in layers:
        w = numpy_helper.to_array(finits[node.input[pos]]).astype(np.float64)
        old = numpy_helper.to_array(qinits[qname])
        scale = numpy_helper.to_array(qinits[sname]).reshape(-1)
        if node.op_type == "Conv":
            q = gptq_round(w.reshape(w.shape[0], -1), scale, grams[node.name], damp=damp)
            q = q.reshape(w.shape)
        elif pos == 1:
            q = gptq_round(w.T, scale, grams[node.name], damp=damp).T
        else:
            q = gptq_round(w, scale, grams[node.name], damp=damp)
        if q.shape != old.shape:
            raise EdgeserError(f"GPTQ: weight of {node.name} has shape {old.shape}, not {q.shape}")
        qinits[qname].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(q), qname))
        logger.debug("GPTQ %s: %.1f %% of the weights changed", node.name,
                     100.0 * float(np.mean(q != old)))
    return len(layers)


# ------------------------------------------------------------------------- driver


class CalibrationReader(CalibrationDataReader):
    """A ``CalibrationDataReader`` feeding the exported graph one waveform at a time."""

    def __init__(self, waves: Sequence[np.ndarray]) -> None:
        from edgeser.deploy.export import pad_batch

        self._items = [pad_batch([np.asarray(w, np.float32).reshape(-1)]) for w in waves]
        self._it = iter(self._items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)


def static_qdq(
    float_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[np.ndarray],
    nodes: Sequence[str],
    op_types: Sequence[str],
    extra_options: dict[str, object] | None = None,
) -> None:
    """Static QDQ quantisation of the named ``nodes`` only, in this project's convention:
    uint8 asymmetric activations calibrated with MinMax on ``calibration`` (S8S8 is a slow
    path on x86), per-channel symmetric int8 weights, full int8 range."""
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
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=list(nodes),
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                       **(extra_options or {})},
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
        static_qdq(fused, qdq, calibration, static, ["MatMul", "Conv"],
                   {"OpTypesToExcludeOutputQuantization": ["MatMul"]})
        model = onnx.load(str(qdq))
        n_wo = weight_only_int8(model, weight_only)
        n_clip = clip_gelu_inputs(model, static)
        n_gptq = gptq_int8(fused, model, calibration) if gptq else 0
    logger.info("int8 (%s): %d nodes static QDQ, %d weight-only int8, %d GELU fused, "
                "%d GELU inputs clipped, %d weights GPTQ-rounded",
                scheme, len(static), n_wo, n_gelu, n_clip, n_gptq)
    onnx.save(model, str(out_path))
    return out_path
