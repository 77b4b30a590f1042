"""Can an 8-bit model give different answers on different CPUs?

x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) run onnxruntime's uint8 x int8
products through ``vpmaddubsw``, which adds pairs of products in 16-bit registers and
saturates when ``a_i w_i + a_j w_j`` leaves the int16 range; VNNI CPUs, ARM and
onnxruntime-web's WASM kernels compute exactly. :func:`saturation_report` bounds every
integer operator of a model as onnxruntime fuses it; :func:`worst_case_probe` runs one
operator on the input that drives every pair as far as its weights allow and compares it
with exact integer arithmetic.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeser.core.errors import EdgeserError
from edgeser.exporting.onnx_utils import constant_value, consumers_by_value, walk_graphs, walk_nodes

logger = logging.getLogger(__name__)


#: Largest |int8 weight| of a statically quantised (integer-arithmetic) operator: 7 bits,
#: so that no uint8 x int8 pair sum can leave the int16 range: ``255 * (64 + 64) = 32640``.
STATIC_WEIGHT_QMAX = 64
#: Largest magnitude an int16 pair sum may reach.
INT16_MAX = 32767

#: Integer operators of a fused onnxruntime graph -> (index of the activation input, index
#: of the weight input).
_INTEGER_OPS: dict[str, tuple[int, int]] = {
    "MatMulInteger": (0, 1),
    "MatMulIntegerToFloat": (0, 1),
    "ConvInteger": (0, 1),
    "QLinearConv": (0, 3),
    "QLinearMatMul": (0, 3),
    "QGemm": (0, 3),
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
    graphs = list(walk_graphs(model.graph))  # type: ignore[attr-defined]
    types = {
        v.name: v.type.tensor_type.elem_type
        for g in graphs
        for v in (*g.value_info, *g.input, *g.output)
    }
    for g in graphs:
        for init in g.initializer:
            types[init.name] = init.data_type
    for node in walk_nodes(model.graph):  # QuantizeLinear outputs: their zero point's type
        if node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear"):
            zp = node.input[2] if len(node.input) > 2 else ""
            types.setdefault(node.output[0], types.get(zp, TensorProto.UINT8))
    ops = []
    for node in walk_nodes(model.graph):  # type: ignore[attr-defined]
        if node.op_type not in _INTEGER_OPS:
            continue
        a_index, w_index = _INTEGER_OPS[node.op_type]
        if node.op_type == "DynamicQuantizeMatMul":
            activation = "uint8"  # quantised inside the operator, to uint8
        else:
            activation = helper.tensor_dtype_to_np_dtype(
                types.get(node.input[a_index], TensorProto.UINT8)
            ).name
        weight = constant_value(model, node.input[w_index]) if len(node.input) > w_index else None
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
        raise EdgeserError(
            f"{path}: {len(bad)} integer operator(s) can saturate the int16 "
            f"pair sums of CPUs without VNNI: {names}"
        )
    return ops


def worst_case_probe(
    path: str | Path, node_name: str, *, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's result and the exact integer (int64) result of one statically
    quantised ``MatMul`` or ``Conv`` of the QDQ model at ``path``, on its worst-case input
    (:func:`worst_case_model`, run here)."""
    import onnxruntime as ort

    model, codes, exact = worst_case_model(path, node_name)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": codes})[0]
    return got.astype(np.float64), exact


def worst_case_model(path: str | Path, node_name: str) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``(one-operator model, input codes, exact result)`` for one statically quantised
    ``MatMul`` or ``Conv`` of the QDQ model at ``path``: what :func:`worst_case_probe`
    runs, to be run by any onnxruntime (another CPU, an emulated one).

    The node is cut out with its own quantisation parameters (activation scale and zero
    point, int8 weights and scales, for a ``Conv`` its output's too) into a one-operator
    model that onnxruntime fuses as in the full graph (``MatMulIntegerToFloat``,
    ``QLinearConv``). The input codes are 255 where a weight is positive and 0 elsewhere
    (for a ``Conv``: in every window of every output channel tried), so that every pair
    of products adds up as far as the weights allow. The exact result: float outputs for
    a ``MatMul``, uint8 codes for a ``Conv`` (the exact requantisation rounds half to
    even, as onnxruntime does; kernels may still differ by one code). On a CPU whose
    kernels saturate, onnxruntime's result differs from it far more than that.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = next(
        (
            g
            for g in walk_graphs(model.graph)  # the (sub)graph holding the node
            if any(n.name == node_name for n in g.node)
        ),
        model.graph,
    )
    producers = {o: n for n in graph.node for o in n.output}
    consumers = consumers_by_value(graph)
    node = next((n for n in graph.node if n.name == node_name), None)
    if node is None or node.op_type not in ("MatMul", "Conv"):
        raise EdgeserError(f"{path}: no MatMul or Conv node named {node_name!r}")
    dq_a, dq_w = (producers.get(i) for i in node.input[:2])
    if (
        dq_a is None
        or dq_w is None
        or dq_a.op_type != "DequantizeLinear"
        or dq_w.op_type != "DequantizeLinear"
    ):
        raise EdgeserError(f"{node_name}: not a statically quantised (QDQ) node")

    def value(name: str) -> np.ndarray:
        c = constant_value(model, name)
        if c is None:
            raise EdgeserError(f"{node_name}: {name} is not a constant")
        return c

    a_scale, a_zero = value(dq_a.input[1]), value(dq_a.input[2])
    w, w_scale = value(dq_w.input[0]), value(dq_w.input[1])
    w_zero = value(dq_w.input[2]) if len(dq_w.input) > 2 else np.zeros_like(w_scale, w.dtype)
    w_axis = next((a.i for a in dq_w.attribute if a.name == "axis"), 1)
    inits = [
        numpy_helper.from_array(np.asarray(v), n)
        for n, v in (
            ("a_scale", a_scale),
            ("a_zero", a_zero),
            ("w", w),
            ("w_scale", w_scale),
            ("w_zero", w_zero),
        )
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "a_scale", "a_zero"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wf"], axis=w_axis),
    ]
    wi = w.astype(np.int64)
    if node.op_type == "MatMul":  # x [M, K] @ W [K, N]; row m targets column m
        cols = np.argsort(-np.clip(wi, 0, None).sum(0))[:8]
        codes = np.where(wi[:, cols].T > 0, 255, 0).astype(np.uint8)
        nodes.append(helper.make_node("MatMul", ["xf", "wf"], ["y"]))
        out_type = TensorProto.FLOAT
        exact = (
            ((codes.astype(np.int64) - a_zero.astype(np.int64)) @ (wi - w_zero)).astype(np.float64)
            * float(a_scale)
            * w_scale.astype(np.float64)
        )
    else:  # Conv [N, C, T] * W [O, C, K]; one window per output channel tried
        attrs = {a.name: list(a.ints) if a.ints else a.i for a in node.attribute}
        stride = int(attrs.get("strides", [1])[0])
        if attrs.get("group", 1) != 1 or any(int(p) for p in attrs.get("pads", [0, 0])):
            raise EdgeserError(f"{node_name}: only ungrouped, unpadded convolutions")
        out_q = consumers.get(node.output[0], [])
        if len(out_q) != 1 or out_q[0].op_type != "QuantizeLinear":
            raise EdgeserError(f"{node_name}: its output is not quantised")
        o_scale, o_zero = value(out_q[0].input[1]), value(out_q[0].input[2])
        inits += [
            numpy_helper.from_array(np.asarray(o_scale), "o_scale"),
            numpy_helper.from_array(np.asarray(o_zero), "o_zero"),
        ]
        kernel = w.shape[2]
        chans = np.argsort(-np.clip(wi, 0, None).sum((1, 2)))[:8]
        # window t = stride * t of a long input: output frame t of channel chans[t]
        length = stride * (len(chans) - 1) + kernel
        codes = np.zeros((1, w.shape[1], length), np.uint8)
        for t, c in enumerate(chans):
            codes[0, :, stride * t : stride * t + kernel] = np.where(wi[c] > 0, 255, 0)
        nodes += [
            helper.make_node("Conv", ["xf", "wf"], ["yf"], strides=[stride], kernel_shape=[kernel]),
            helper.make_node("QuantizeLinear", ["yf", "o_scale", "o_zero"], ["y"]),
        ]
        out_type = TensorProto.UINT8
        frames = (length - kernel) // stride + 1
        xc = codes[0].astype(np.int64) - a_zero.astype(np.int64)
        acc = np.stack(
            [
                np.einsum(
                    "ock,ck->o",
                    wi - w_zero.reshape(-1, 1, 1),
                    xc[:, stride * t : stride * t + kernel],
                )
                for t in range(frames)
            ],
            axis=1,
        )  # [O, frames]
        real = acc * float(a_scale) * w_scale.astype(np.float64).reshape(-1, 1)
        exact = np.clip(np.rint(real / float(o_scale)) + int(o_zero), 0, 255)[None]
    sub = helper.make_model(
        helper.make_graph(
            nodes,
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.UINT8, codes.shape)],
            [helper.make_tensor_value_info("y", out_type, None)],
            inits,
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    return sub.SerializeToString(), codes, np.asarray(exact, np.float64)
