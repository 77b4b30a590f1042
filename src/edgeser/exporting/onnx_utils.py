"""Small helpers over ONNX graphs that the 8-bit passes share (onnx's own helpers look up
neither constants by name nor a value's consumers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

logger = logging.getLogger(__name__)

#: Suffix of the name of a weight-only ``DequantizeLinear`` node (int8 weight widened for
#: float arithmetic, :func:`edgeser.exporting.quantize.weight_only_int8`): GPTQ gives such
#: weights the full ±127 range, integer operators ±64.
WEIGHT_ONLY = "_WeightOnly"


def walk_graphs(graph: object) -> Iterator[object]:
    """``graph`` and every subgraph in it (``Loop``/``If``/``Scan`` bodies), outer first."""
    yield graph
    for node in graph.node:  # type: ignore[attr-defined]
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from walk_graphs(attr.g)
            for sub in attr.graphs:
                yield from walk_graphs(sub)


def walk_nodes(graph: object) -> Iterator[object]:
    """Every node of ``graph`` and of its subgraphs."""
    for g in walk_graphs(graph):
        yield from g.node  # type: ignore[attr-defined]


def constant_value(model: object, name: str) -> np.ndarray | None:
    """The value of initializer or ``Constant`` ``name`` in any (sub)graph of ``model``
    (ONNX value names are unique across scopes)."""
    from onnx import numpy_helper

    for graph in walk_graphs(model.graph):  # type: ignore[attr-defined]
        for init in graph.initializer:
            if init.name == name:
                return numpy_helper.to_array(init)
        for node in graph.node:
            if (
                node.op_type == "Constant"
                and node.output[0] == name
                and node.attribute
                and node.attribute[0].name == "value"
            ):
                return numpy_helper.to_array(node.attribute[0].t)
    return None


def consumers_by_value(graph: object) -> dict[str, list]:
    """Value name → the nodes of ``graph`` (not of its subgraphs) that take it as input."""
    out: dict[str, list] = {}
    for node in graph.node:  # type: ignore[attr-defined]
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out
