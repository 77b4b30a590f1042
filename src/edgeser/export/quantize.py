"""The 8-bit model: every large weight stored as int8, integer arithmetic where it is cheap
in fidelity and dear in time.

Measured on this project's 2-core CPU with the full DistilHuBERT graph (onnxruntime
profiler, 1 s input): about two thirds of the float32 time is the feature-extractor
convolutions and a fifth the transformer linears. The default scheme ``"mixed"``:

- **static QDQ** (uint8 activations, per-channel 7-bit int8 weights, MinMax-calibrated on
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

**The same answers on every CPU.** x86 CPUs without VNNI (AVX2, AVX-512 without VNNI)
run uint8 x int8 products through ``vpmaddubsw``, which adds pairs of products in 16-bit
registers and saturates when ``a_i w_i + a_j w_j`` leaves the int16 range; VNNI CPUs, ARM
and onnxruntime-web's WASM kernels compute exactly. With uint8 activations (codes 0-255)
no pair can saturate only if every int8 weight feeding an integer operator lies in
``[-64, 64]`` (``255 * (64 + 64) = 32640 <= 32767``): the statically quantised weights are
therefore 7-bit (onnxruntime's ``reduce_range``, :data:`STATIC_WEIGHT_QMAX`), and every
int8 file the exporter writes is checked with :func:`saturation_report` (the operators as
onnxruntime fuses them at load) before it is kept. The weight-only int8 weights keep the
full range: they are widened to float32 at load and never meet an integer kernel.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeser.core.errors import EdgeserError
from edgeser.export.calibration import CalibrationReader
from edgeser.runtime.session import pad_batch

logger = logging.getLogger(__name__)

__all__ = [
    "INT16_MAX",
    "SCHEMES",
    "STATIC_WEIGHT_QMAX",
    "IntegerOp",
    "clip_gelu_inputs",
    "fuse_gelu",
    "gptq_int8",
    "gptq_round",
    "quantize_int8",
    "require_no_saturation",
    "saturation_report",
    "split_nodes",
    "static_qdq",
    "weight_only_int8",
    "worst_case_probe",
]

_STATIC_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
#: Scheme -> (indices of ``/convs.{i}/Conv`` with uint8 activations, positional conv too).
_SCHEME_CONVS: dict[str, tuple[frozenset[int], bool]] = {
    "mixed": (frozenset({0}), False),
    "fast": (frozenset({0, 1, 2}), True),
}
SCHEMES: tuple[str, ...] = tuple(_SCHEME_CONVS)
#: Largest |int8 weight| of a statically quantised (integer-arithmetic) operator: 7 bits,
#: so that no uint8 x int8 pair sum can leave the int16 range (see the module docstring).
STATIC_WEIGHT_QMAX = 64
#: Largest magnitude an int16 pair sum may reach.
INT16_MAX = 32767
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
               damp: float = 0.01, block: int = 128, qmax: int = 127) -> np.ndarray:
    """GPTQ rounding of ``weight`` ``[rows, K]`` to int8 with fixed per-row ``scale``.

    ``hessian`` ``[K, K]`` is ``X Xᵀ`` of the layer's inputs (columns = samples). Columns
    are rounded in order; each column's rounding error is spread over the columns not yet
    rounded so as to minimise ``|(W - s·Q) X|`` (Frantar et al. 2022). ``damp`` (fraction
    of the mean diagonal added to it) keeps a rank-deficient Hessian invertible. Returns
    int8 ``[rows, K]`` in ``[-qmax, qmax]``.
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
        return np.clip(np.rint(w / s[:, None]), -qmax, qmax).astype(np.int8)
    q = np.zeros_like(w)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb = w[:, b0:b1].copy()
        err = np.zeros_like(wb)
        ub = u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            col = np.clip(np.rint(wb[:, i] / s), -qmax, qmax)
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
    are kept, and so is each weight's range: :data:`STATIC_WEIGHT_QMAX` behind
    ``DequantizeLinear`` (integer arithmetic), 127 behind ``Cast`` + ``Mul``. Returns the
    number of weights re-rounded.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper


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
            qname, sname, qmax = src.input[0], src.input[1], STATIC_WEIGHT_QMAX
        elif src is not None and src.op_type == "Mul":
            cast = producer.get(src.input[0])
            if cast is None or cast.op_type != "Cast" or cast.input[0] not in qinits:
                continue
            qname, sname, qmax = cast.input[0], src.input[1], 127
        else:
            continue
        if qinits[qname].data_type != onnx.TensorProto.INT8 or sname not in qinits:
            continue
        layers.append((node, pos, attrs, qname, sname, qmax))
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
        for node, pos, attrs, *_ in layers:
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
    for node, pos, _attrs, qname, sname, qmax in layers:
        w = numpy_helper.to_array(finits[node.input[pos]]).astype(np.float64)
        old = numpy_helper.to_array(qinits[qname])
        scale = numpy_helper.to_array(qinits[sname]).reshape(-1)
        if int(np.abs(old.astype(np.int32)).max()) > qmax:
            raise EdgeserError(f"GPTQ: {node.name} holds int8 weights beyond ±{qmax}")
        if node.op_type == "Conv":
            q = gptq_round(w.reshape(w.shape[0], -1), scale, grams[node.name], damp=damp,
                           qmax=qmax)
            q = q.reshape(w.shape)
        elif pos == 1:
            q = gptq_round(w.T, scale, grams[node.name], damp=damp, qmax=qmax).T
        else:
            q = gptq_round(w, scale, grams[node.name], damp=damp, qmax=qmax)
        if q.shape != old.shape:
            raise EdgeserError(f"GPTQ: weight of {node.name} has shape {old.shape}, not {q.shape}")
        qinits[qname].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(q), qname))
        logger.debug("GPTQ %s: %.1f %% of the weights changed", node.name,
                     100.0 * float(np.mean(q != old)))
    return len(layers)


# ------------------------------------------------------------------- saturation

#: Integer operators of a fused onnxruntime graph -> (index of the activation input, index
#: of the weight input).
_INTEGER_OPS: dict[str, tuple[int, int]] = {
    "MatMulInteger": (0, 1), "MatMulIntegerToFloat": (0, 1), "ConvInteger": (0, 1),
    "QLinearConv": (0, 3), "QLinearMatMul": (0, 3), "QGemm": (0, 3),
    "DynamicQuantizeMatMul": (0, 1),
}


@dataclass(frozen=True)
class IntegerOp:
    """One integer operator of a fused graph and the largest pair sum its kernels can meet.

    ``activation`` is the element type of its activation input (``uint8`` codes span
    0-255 whatever their scale and zero point; kernels multiply raw codes and correct for
    zero points afterwards), ``weight_dtype`` and ``weight_max`` the raw codes of its
    constant weight. ``pair_sum`` bounds ``|a_i w_i + a_j w_j|`` over every input the
    quantisation parameters allow (``None``: cannot be bounded, e.g. a weight that is not
    a constant); it saturates x86's non-VNNI uint8 x int8 kernels above :data:`INT16_MAX`.
    U8U8 operators (uint8 weights) run on exact int16 kernels.
    """

    name: str
    op_type: str
    activation: str
    weight_dtype: str
    weight_max: int
    pair_sum: int | None

    @property
    def safe(self) -> bool:
        if self.weight_dtype == "uint8":
            return True
        return self.pair_sum is not None and self.pair_sum <= INT16_MAX


def _fused(path: str | Path) -> object:
    """The graph as onnxruntime runs it on the CPU (basic and extended fusions applied)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgeser-fused-") as tmp:
        out = Path(tmp) / "fused.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return onnx.load(str(out))


def saturation_report(path: str | Path) -> list[IntegerOp]:
    """Every integer operator of the model at ``path`` as onnxruntime fuses it, with the
    largest uint8 x int8 pair sum its weights allow (see :class:`IntegerOp`)."""
    from onnx import TensorProto, helper

    model = _fused(path)
    graph = model.graph  # type: ignore[attr-defined]
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*graph.value_info, *graph.input, *graph.output)}
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:  # QuantizeLinear outputs take their zero point's type
        if node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear"):
            zp = node.input[2] if len(node.input) > 2 else ""
            types.setdefault(node.output[0], types.get(zp, TensorProto.UINT8))
    ops = []
    for node in graph.node:
        if node.op_type not in _INTEGER_OPS:
            continue
        a_index, w_index = _INTEGER_OPS[node.op_type]
        if node.op_type == "DynamicQuantizeMatMul":
            activation = "uint8"  # quantised inside the operator, to uint8
        else:
            activation = helper.tensor_dtype_to_np_dtype(
                types.get(node.input[a_index], TensorProto.UINT8)).name
        weight = _constant(model, node.input[w_index]) if len(node.input) > w_index else None
        name = node.name or node.op_type
        if weight is None:
            ops.append(IntegerOp(name, node.op_type, activation, "unknown", 0, None))
            continue
        wmax = int(np.abs(weight.astype(np.int32)).max()) if weight.size else 0
        amax = {"uint8": 255, "int8": 128}.get(activation)
        pair = None if amax is None else amax * 2 * wmax
        ops.append(IntegerOp(name, node.op_type, activation, weight.dtype.name, wmax, pair))
    return ops


def require_no_saturation(path: str | Path) -> list[IntegerOp]:
    """:func:`saturation_report`, raising :class:`EdgeserError` if any integer operator
    could saturate (or if there is none to check)."""
    ops = saturation_report(path)
    bad = [op for op in ops if not op.safe]
    if bad:
        names = ", ".join(f"{op.name} (pair sum up to {op.pair_sum})" for op in bad[:3])
        raise EdgeserError(f"{path}: {len(bad)} integer operator(s) can saturate the int16 "
                           f"pair sums of CPUs without VNNI: {names}")
    return ops


def worst_case_probe(path: str | Path, node_name: str, *, threads: int = 1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's result and the exact integer (int64) result of one statically
    quantised ``MatMul`` or ``Conv`` of the QDQ model at ``path``, on its worst-case input.

    The node is cut out with its own quantisation parameters (activation scale and zero
    point, int8 weights and scales, for a ``Conv`` its output's too) into a one-operator
    model that onnxruntime fuses as in the full graph (``MatMulIntegerToFloat``,
    ``QLinearConv``). The input codes are 255 where a weight is positive and 0 elsewhere
    (for a ``Conv``: in every window of every output channel tried), so that every pair
    of products adds up as far as the weights allow. Returns ``(onnxruntime, exact)``:
    float outputs for a ``MatMul``, uint8 codes for a ``Conv`` (the exact requantisation
    rounds half to even, as onnxruntime does; kernels may still differ by one code). On a
    CPU whose kernels saturate, the two differ far more than that.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    node = next((n for n in graph.node if n.name == node_name), None)
    if node is None or node.op_type not in ("MatMul", "Conv"):
        raise EdgeserError(f"{path}: no MatMul or Conv node named {node_name!r}")
    dq_a, dq_w = (producers.get(i) for i in node.input[:2])
    if dq_a is None or dq_w is None or dq_a.op_type != "DequantizeLinear" or \
            dq_w.op_type != "DequantizeLinear":
        raise EdgeserError(f"{node_name}: not a statically quantised (QDQ) node")

    def value(name: str) -> np.ndarray:
        c = _constant(model, name)
        if c is None:
            raise EdgeserError(f"{node_name}: {name} is not a constant")
        return c

    a_scale, a_zero = value(dq_a.input[1]), value(dq_a.input[2])
    w, w_scale = value(dq_w.input[0]), value(dq_w.input[1])
    w_zero = value(dq_w.input[2]) if len(dq_w.input) > 2 else np.zeros_like(w_scale, w.dtype)
    w_axis = next((a.i for a in dq_w.attribute if a.name == "axis"), 1)
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in (
        ("a_scale", a_scale), ("a_zero", a_zero), ("w", w), ("w_scale", w_scale),
        ("w_zero", w_zero))]
    nodes = [helper.make_node("DequantizeLinear", ["x", "a_scale", "a_zero"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wf"],
                              axis=w_axis)]
    wi = w.astype(np.int64)
    if node.op_type == "MatMul":  # x [M, K] @ W [K, N]; row m targets column m
        cols = np.argsort(-np.clip(wi, 0, None).sum(0))[:8]
        codes = np.where(wi[:, cols].T > 0, 255, 0).astype(np.uint8)
        nodes.append(helper.make_node("MatMul", ["xf", "wf"], ["y"]))
        out_type = TensorProto.FLOAT
        exact = ((codes.astype(np.int64) - a_zero.astype(np.int64)) @ (wi - w_zero)).astype(
            np.float64) * float(a_scale) * w_scale.astype(np.float64)
    else:  # Conv [N, C, T] * W [O, C, K]; one window per output channel tried
        attrs = {a.name: list(a.ints) if a.ints else a.i for a in node.attribute}
        stride = int(attrs.get("strides", [1])[0])
        if attrs.get("group", 1) != 1 or any(int(p) for p in attrs.get("pads", [0, 0])):
            raise EdgeserError(f"{node_name}: only ungrouped, unpadded convolutions")
        out_q = consumers.get(node.output[0], [])
        if len(out_q) != 1 or out_q[0].op_type != "QuantizeLinear":
            raise EdgeserError(f"{node_name}: its output is not quantised")
        o_scale, o_zero = value(out_q[0].input[1]), value(out_q[0].input[2])
        inits += [numpy_helper.from_array(np.asarray(o_scale), "o_scale"),
                  numpy_helper.from_array(np.asarray(o_zero), "o_zero")]
        kernel = w.shape[2]
        chans = np.argsort(-np.clip(wi, 0, None).sum((1, 2)))[:8]
        # window t = stride * t of a long input: output frame t of channel chans[t]
        length = stride * (len(chans) - 1) + kernel
        codes = np.zeros((1, w.shape[1], length), np.uint8)
        for t, c in enumerate(chans):
            codes[0, :, stride * t: stride * t + kernel] = np.where(wi[c] > 0, 255, 0)
        nodes += [helper.make_node("Conv", ["xf", "wf"], ["yf"], strides=[stride],
                                   kernel_shape=[kernel]),
                  helper.make_node("QuantizeLinear", ["yf", "o_scale", "o_zero"], ["y"])]
        out_type = TensorProto.UINT8
        frames = (length - kernel) // stride + 1
        xc = codes[0].astype(np.int64) - a_zero.astype(np.int64)
        acc = np.stack([np.einsum("ock,ck->o", wi - w_zero.reshape(-1, 1, 1),
                                  xc[:, stride * t: stride * t + kernel])
                        for t in range(frames)], axis=1)  # [O, frames]
        real = acc * float(a_scale) * w_scale.astype(np.float64).reshape(-1, 1)
        exact = np.clip(np.rint(real / float(o_scale)) + int(o_zero), 0, 255)[None]
    sub = helper.make_model(
        helper.make_graph(nodes, "probe",
                          [helper.make_tensor_value_info("x", TensorProto.UINT8, codes.shape)],
                          [helper.make_tensor_value_info("y", out_type, None)], inits),
        opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(sub.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": codes})[0]
    return got.astype(np.float64), np.asarray(exact, np.float64)


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
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": weights == "int7",
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
    require_no_saturation(out_path)
    return out_path
