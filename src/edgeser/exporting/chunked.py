"""Memory bounded in the input's length: the feature extractor of an exported graph run one
chunk at a time in an ONNX ``Loop``.

DistilHuBERT's convolutional feature extractor holds 512 channels at 3,200 frames per second
of audio in its first layers: a 10 s input needs ~65 MB per live tensor there, and it was
most of the 341 MB a 10 s prediction peaked at. The extractor is local once its first
GroupNorm is an affine map computed from the whole input
(:class:`~edgeser.exporting.graph.ConvStack`): output frame ``t`` depends on samples
``[hop t, hop t + receptive)`` only. :func:`loop_feature_extractor` moves its nodes (and the
constants and weights only they use, with the ``DequantizeLinear`` nodes of statically
quantised weights, so onnxruntime fuses the body's 8-bit convolutions as it would at the
top level; weight-only weights are widened once per run, outside) into the body of a
``Loop`` that computes ``chunk_frames`` frames per iteration from ``chunk_frames * hop +
receptive - hop`` samples, and puts the chunks back together. Every output frame is the
same computation as in the flat graph, so the two agree to float rounding; what is live at
once is one chunk's activations (1 s of audio by default) whatever the input's length.

Hand-written graph surgery: the PyTorch exporter unrolls Python loops, and onnxruntime's
quantiser is not meant for graphs with subgraphs, so the graph is exported, calibrated
and quantised flat and looped afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from edgeser.core.errors import EdgeserError
from edgeser.exporting.onnx_utils import WEIGHT_ONLY, consumers_by_value, walk_nodes

logger = logging.getLogger(__name__)

__all__ = ["BODY_PREFIX", "loop_feature_extractor"]

#: Prefix of every value the loop body defines (ONNX values must not shadow outer names).
BODY_PREFIX = "chunk/"


def loop_feature_extractor(model: object, tensors: tuple[str, ...], *, context: int) -> int:
    """Move the nodes between ``tensors`` = ``(input, scale, shift, output, chunks)`` of
    ``model`` (a graph exported with those as extra outputs) into a ``Loop`` over chunks,
    in place, and drop the extra outputs; returns the number of nodes moved.

    ``input`` ``[B, S]`` holds ``n = chunks`` equal chunks: ``S = n * step + context``;
    iteration ``i`` reads ``input[:, i * step : (i + 1) * step + context]`` and its output
    ``[B, C, F]`` is the ``i``-th run of ``F`` frames of ``output`` ``[B, C, n F]``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    x_name, scale_name, shift_name, y_name, n_name = tensors
    producer = {o: n for n in graph.node for o in n.output}
    users = consumers_by_value(graph)
    inits = {i.name: i for i in graph.initializer}
    missing = [t for t in tensors if t not in producer]
    if missing:
        raise EdgeserError(f"cannot loop the feature extractor: no tensor {missing[0]!r}")

    def ancestors(names: Iterable[str], stop: set[str]) -> set[int]:
        seen: set[int] = set()
        todo = [producer[n] for n in names if n in producer and n not in stop]
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            todo.extend(producer[i] for i in node.input if i in producer and i not in stop)
        return seen

    def descendants(name: str) -> set[int]:
        seen: set[int] = set()
        todo = list(users.get(name, []))
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for o in node.output:
                todo.extend(users.get(o, []))
        return seen

    stops = {x_name, scale_name, shift_name, n_name}
    core = ancestors([y_name], stops) & descendants(x_name)
    inputs = {i.name for i in graph.input}
    # constants only the core uses (weights' DequantizeLinear, Constant nodes) go with it
    const: dict[int, bool] = {}

    def constant(node: object) -> bool:
        key = id(node)
        if key not in const:
            const[key] = False  # cycles cannot happen; this guards re-entry only
            const[key] = all(
                i == "" or i in inits or (i in producer and constant(producer[i]))
                for i in node.input
            ) and not any(i in inputs for i in node.input)
        return const[key]

    moved = set(core)
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if id(node) in moved or not constant(node) or node.name.endswith(WEIGHT_ONLY):
                continue  # weight-only weights are widened once per run, not per chunk
            outs = [u for o in node.output for u in users.get(o, [])]
            if outs and all(id(u) in moved for u in outs):
                moved.add(id(node))
                changed = True
    body_nodes = [n for n in graph.node if id(n) in moved]
    defined = {o for n in body_nodes for o in n.output}
    for n in body_nodes:
        for o in n.output:
            if o != y_name and any(id(u) not in moved for u in users.get(o, [])):
                raise EdgeserError(
                    f"cannot loop the feature extractor: {o!r} is also used outside it"
                )
    outer_out = {o.name for o in graph.output}
    body_inits = [
        init
        for name, init in inits.items()
        if any(name in n.input for n in body_nodes)
        and all(id(u) in moved for u in users.get(name, []))
        and name not in outer_out
    ]

    def rename(name: str) -> str:
        if name == x_name:
            return f"{BODY_PREFIX}input"
        return f"{BODY_PREFIX}{name}" if name in defined else name

    it, cond_in, cond_out = (f"{BODY_PREFIX}{n}" for n in ("iteration", "cond", "cond_out"))
    b = BODY_PREFIX
    nodes = [  # loop_step and loop_span: computed once, in the outer graph
        helper.make_node(
            "Constant",
            [],
            [f"{b}axes"],
            value=helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ),
        helper.make_node(
            "Constant",
            [],
            [f"{b}zero_axis"],
            value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        ),
        helper.make_node("Mul", [it, "loop_step"], [f"{b}start0"]),
        helper.make_node("Unsqueeze", [f"{b}start0", f"{b}zero_axis"], [f"{b}start"]),
        helper.make_node("Add", [f"{b}start", "loop_span"], [f"{b}end"]),
        helper.make_node(
            "Slice", [x_name, f"{b}start", f"{b}end", f"{b}axes"], [f"{b}input"], name=f"{b}Slice"
        ),
        helper.make_node("Identity", [cond_in], [cond_out]),
    ]
    for n in body_nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        del copy.input[:]
        copy.input.extend(rename(i) if i else "" for i in n.input)
        del copy.output[:]
        copy.output.extend(rename(o) for o in n.output)
        nodes.append(copy)
    body = helper.make_graph(
        nodes,
        "feature_extractor_chunk",
        [
            helper.make_tensor_value_info(it, TensorProto.INT64, []),
            helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
            helper.make_tensor_value_info(rename(y_name), TensorProto.UNDEFINED, None),
        ],
        initializer=body_inits,
    )
    y_type = next(
        (
            v.type.tensor_type.elem_type
            for v in (*graph.value_info, *graph.output)
            if v.name == y_name
        ),
        TensorProto.FLOAT,
    )
    body.output[1].type.tensor_type.elem_type = y_type

    consts = {
        "loop_context": np.array(context, np.int64),
        "loop_context_1d": np.array([context], np.int64),
        "loop_dim": np.array(1, np.int64),
        "loop_shape": np.array([0, 0, -1], np.int64),
    }
    outer = [
        helper.make_node("Shape", [x_name], ["loop_input_shape"]),
        helper.make_node("Gather", ["loop_input_shape", "loop_dim"], ["loop_samples"], axis=0),
        helper.make_node("Sub", ["loop_samples", "loop_context"], ["loop_body"]),
        helper.make_node("Div", ["loop_body", n_name], ["loop_step"]),
        helper.make_node("Add", ["loop_step", "loop_context_1d"], ["loop_span"]),
        helper.make_node(
            "Loop", [n_name, ""], ["loop_chunks"], name="FeatureExtractorLoop", body=body
        ),
        helper.make_node("Transpose", ["loop_chunks"], ["loop_chunks_t"], perm=[1, 2, 0, 3]),
        helper.make_node("Reshape", ["loop_chunks_t", "loop_shape"], [y_name]),
    ]
    position = min(i for i, n in enumerate(graph.node) if id(n) in moved)
    kept = [n for n in graph.node if id(n) not in moved]
    del graph.node[:]
    graph.node.extend(kept[:position] + outer + kept[position:])
    for init in body_inits:
        graph.initializer.remove(init)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    keep_info = [v for v in graph.value_info if v.name not in defined or v.name == y_name]
    del graph.value_info[:]
    graph.value_info.extend(keep_info)
    outputs = [o for o in graph.output if o.name not in tensors]
    del graph.output[:]
    graph.output.extend(outputs)
    _sort_topologically(graph)
    logger.info(
        "feature extractor looped over chunks: %d nodes, %d weights in the body",
        len(body_nodes),
        len(body_inits),
    )
    return len(body_nodes)


def _sort_topologically(graph: object) -> None:
    """Reorder ``graph``'s nodes so that every value is produced before it is used
    (including the values a subgraph reads from this graph)."""
    nodes = list(graph.node)  # type: ignore[attr-defined]
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer}  # type: ignore[attr-defined]
    available.add("")

    def needs(node: object) -> set[str]:
        names = set(node.input)
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                inner_defined = {o for n in walk_nodes(attr.g) for o in n.output}
                inner_defined |= {i.name for i in attr.g.input}
                inner_defined |= {i.name for i in attr.g.initializer}
                names |= {i for n in walk_nodes(attr.g) for i in n.input} - inner_defined
        return names

    wanted = [needs(n) for n in nodes]
    order: list[object] = []
    done = [False] * len(nodes)
    while len(order) < len(nodes):
        progress = False
        for k, node in enumerate(nodes):
            if not done[k] and wanted[k] <= available:
                order.append(node)
                available.update(node.output)
                done[k] = True
                progress = True
        if not progress:
            stuck = next(n for k, n in enumerate(nodes) if not done[k])
            raise EdgeserError(f"graph has a cycle or a missing value at {stuck.name!r}")
    del graph.node[:]  # type: ignore[attr-defined]
    graph.node.extend(order)  # type: ignore[attr-defined]
