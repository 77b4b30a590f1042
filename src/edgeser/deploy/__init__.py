"""Deployment: ONNX export of a trained model (float32 and 8-bit) with ``model.json``.

``export_model(model_dir, out_dir)`` writes ``model.onnx``, ``model.int8.onnx`` and
``model.json`` (and optional variants: ``int8-fast``, ``float16``, ``float16-compute``);
``add_export_parser(sub)`` registers the ``edgeser export`` sub-command.
Names are resolved lazily (torch and onnx are imported only when used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FORMAT": "edgeser.deploy.export",
    "FORMAT_VERSION": "edgeser.deploy.export",
    "add_export_parser": "edgeser.deploy.export",
    "calibration_waves": "edgeser.deploy.calibration",
    "export_model": "edgeser.deploy.export",
    "onnx_session": "edgeser.runtime.session",
    "pad_batch": "edgeser.runtime.session",
    "reference_probabilities": "edgeser.deploy.export",
    "speech_like": "edgeser.deploy.calibration",
    "VARIANTS": "edgeser.deploy.export",
    "ExportGraph": "edgeser.deploy.graph",
    "quantize_int8": "edgeser.deploy.quantize",
    "convert_float16": "edgeser.deploy.halfprec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgeser.deploy' has no attribute {name!r}")
