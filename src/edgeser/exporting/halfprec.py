"""The half-precision model: ``model.onnx`` with its weights stored as float16.

Two ways to use float16 with onnxruntime on a CPU:

- ``mode="storage"`` (default): every large float32 weight is stored as float16 and
  widened by a ``Cast`` node that onnxruntime constant-folds when the session is created,
  so the arithmetic is float32: half the file size of ``model.onnx``, the same speed and
  practically the same outputs (weights rounded to 11 significant bits);
- ``mode="compute"``: the whole graph in float16
  (``onnxruntime.transformers.float16.convert_float_to_float16``, inputs and outputs kept
  float32), for runtimes with float16 arithmetic (GPU, NNAPI, Core ML, ARM CPUs with
  FP16 vector units). On an x86 CPU without float16 arithmetic onnxruntime widens to
  float32 around its kernels: measured 0.91-0.93x the speed of ``model.onnx`` here
  (``bench/deploy_speed.py``), same predictions.

Both keep the predictions of float32: on 120 real RAVDESS files, 100 % argmax agreement
and mean |Δp| 0.0003.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgeser.core.errors import EdgeserError

logger = logging.getLogger(__name__)

__all__ = ["MODES", "convert_float16", "store_float16"]

MODES: tuple[str, ...] = ("storage", "compute")
_FLOAT16_MAX = 65504.0


def store_float16(model: object, min_elements: int = 1024) -> int:
    """Store each float32 initializer of ``model`` with ``min_elements`` or more elements
    as float16 followed by a ``Cast`` back to float32 (in place); returns how many.

    Raises :class:`EdgeserError` if a weight does not fit the float16 range.
    """
    import onnx
    from onnx import helper, numpy_helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        if w.size < min_elements:
            continue
        if float(np.abs(w).max(initial=0.0)) > _FLOAT16_MAX:
            raise EdgeserError(f"weight {init.name!r} exceeds the float16 range")
        name = init.name
        half = f"{name.replace(':', '_')}_fp16"
        graph.initializer.remove(init)
        graph.initializer.append(numpy_helper.from_array(w.astype(np.float16), half))
        casts.append(
            helper.make_node("Cast", [half], [name], name=f"{half}_Cast", to=onnx.TensorProto.FLOAT)
        )
    for i, node in enumerate(casts):
        graph.node.insert(i, node)
    return len(casts)


def convert_float16(fp32_path: str | Path, out_path: str | Path, *, mode: str = "storage") -> None:
    """Write the float16 version of the float32 ONNX model ``fp32_path`` to ``out_path``.

    Inputs and outputs keep their float32 types, so the runtime feeds it exactly like
    ``model.onnx``. ``mode``: ``"storage"`` (float16 weights, float32 arithmetic; the
    default) or ``"compute"`` (float16 arithmetic where onnxruntime has kernels), see the
    module docstring.
    """
    import onnx

    if mode not in MODES:
        raise EdgeserError(f"float16 mode must be one of {', '.join(MODES)}, got {mode!r}")
    model = onnx.load(str(fp32_path))
    if mode == "storage":
        n = store_float16(model)
        logger.info("float16 storage: %d weights", n)
    else:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(out_path))
