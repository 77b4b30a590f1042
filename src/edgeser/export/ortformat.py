"""The mobile form of the 8-bit model: onnxruntime's ORT format (``model.int8.ort``) and the
operator list of onnxruntime's reduced-operator build (``required_operators.config``).

As onnxruntime's own ``convert_onnx_models_to_ort`` does it (fixed optimisations at the
``all`` level without the x86-only NCHWc layout, so the file runs on ARM too): the graph
is optimised once here, and a phone's session loads it without the optimiser. Weight-only
8-bit weights stay 8-bit (``DequantizeLinear``, or ``MatMulNBits`` for a product; blocks
of 256 rows, the largest onnxruntime takes: each block repeats its column's scale, so the
smallest file for the same numbers; float32 arithmetic, as everywhere the runtime runs the
``.onnx``: :data:`edgeser.runtime.session.NBITS_OPTIONS`). The file needs an onnxruntime
at least as new as the exporter's to load.
"""

from __future__ import annotations

from pathlib import Path

from edgeser.core.io import atomic_path
from edgeser.runtime.session import NBITS_OPTIONS

__all__ = ["write_ort"]


def write_ort(onnx_path: str | Path, ort_path: str | Path, config_path: str | Path) -> None:
    """Write ``onnx_path`` as an ORT format file ``ort_path`` and the operators it needs
    to ``config_path`` (both atomically)."""
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    ort_path, config_path = Path(ort_path), Path(config_path)
    with atomic_path(ort_path) as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(tmp)
        opts.add_session_config_entry("session.save_model_format", "ORT")
        for key, value in NBITS_OPTIONS.items():
            opts.add_session_config_entry(key, value)
        ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"],
                             disabled_optimizers=["NchwcTransformer"])
    with atomic_path(config_path) as tmp:
        create_config_from_models([ort_path], tmp, False)
        text = tmp.read_text(encoding="utf-8").splitlines()
        # the first lines name the file by its temporary path: name it as shipped
        tmp.write_text("\n".join(
            f"# - {ort_path.name}" if line.startswith("# - ") else line for line in text)
            + "\n", encoding="utf-8")
