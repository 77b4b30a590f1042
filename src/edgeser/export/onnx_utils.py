"""Small helpers over ONNX graphs that the 8-bit passes share (onnx's own helpers look up
neither constants by name nor a value's consumers)."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


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
