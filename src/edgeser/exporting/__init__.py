"""Deployment: ONNX export of a trained model (float32 and 8-bit) with ``model.json``.

``export_model(model_dir, out_dir)`` writes ``model.onnx``, ``model.int8.onnx`` and
``model.json`` (and optional variants: ``int8-fast``, ``float16``, ``float16-compute``);
the ``edgeser export`` sub-command is :mod:`edgeser.cli.export`.
Names are resolved lazily (torch and onnx are imported only when used).
"""

from __future__ import annotations

from edgeser.core.lazy import lazy_attributes

_EXPORTS = {
    "FORMAT": "edgeser.exporting.exporter",
    "FORMAT_VERSION": "edgeser.exporting.exporter",
    "calibration_waves": "edgeser.exporting.calibration",
    "export_model": "edgeser.exporting.exporter",
    "onnx_session": "edgeser.runtime.session",
    "pad_batch": "edgeser.runtime.session",
    "reference_probabilities": "edgeser.exporting.exporter",
    "speech_like": "edgeser.exporting.calibration",
    "VARIANTS": "edgeser.exporting.exporter",
    "ExportGraph": "edgeser.exporting.graph",
    "quantize_int8": "edgeser.exporting.quantize",
    "convert_float16": "edgeser.exporting.halfprec",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
