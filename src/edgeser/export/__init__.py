"""Deployment: ONNX export of a trained model (float32 and 8-bit) with ``model.json``.

``export_model(model_dir, out_dir)`` writes ``model.onnx``, ``model.int8.onnx`` and
``model.json`` (and optional variants: ``int8-fast``, ``float16``, ``float16-compute``);
``add_export_parser(sub)`` registers the ``edgeser export`` sub-command.
Names are resolved lazily (torch and onnx are imported only when used).
"""

from __future__ import annotations

from edgeser.core.lazy import lazy_attributes

_EXPORTS = {
    "FORMAT": "edgeser.export.exporter",
    "FORMAT_VERSION": "edgeser.export.exporter",
    "add_export_parser": "edgeser.export.exporter",
    "calibration_waves": "edgeser.export.calibration",
    "export_model": "edgeser.export.exporter",
    "onnx_session": "edgeser.runtime.session",
    "pad_batch": "edgeser.runtime.session",
    "reference_probabilities": "edgeser.export.exporter",
    "speech_like": "edgeser.export.calibration",
    "VARIANTS": "edgeser.export.exporter",
    "ExportGraph": "edgeser.export.graph",
    "quantize_int8": "edgeser.export.quantize",
    "convert_float16": "edgeser.export.halfprec",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
