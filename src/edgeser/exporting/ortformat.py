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
from edgeser.exporting.onnx_utils import walk_graphs
from edgeser.runtime.session import NBITS_OPTIONS

__all__ = ["write_ort"]


def write_ort(onnx_path: str | Path, ort_path: str | Path, config_path: str | Path) -> None:
    """Write ``onnx_path`` as an ORT format file ``ort_path`` and the operators it needs
    to ``config_path`` (both atomically)."""
    from onnxruntime.tools.ort_format_model import create_config_from_models

    ort_path, config_path = Path(ort_path), Path(config_path)
    with atomic_path(ort_path) as tmp:
        compact = tmp.with_name(tmp.name + ".onnx")
        try:
            compact_names(onnx_path, compact)
            _convert(compact, tmp)
        finally:
            compact.unlink(missing_ok=True)
    with atomic_path(config_path) as tmp:
        create_config_from_models([ort_path], tmp, False)
        text = tmp.read_text(encoding="utf-8").splitlines()
        # the first lines name the file by its temporary path: name it as shipped
        tmp.write_text(
            "\n".join(f"# - {ort_path.name}" if line.startswith("# - ") else line for line in text)
            + "\n",
            encoding="utf-8",
        )


def _convert(onnx_path: Path, out: Path) -> None:
    """onnxruntime's optimiser, saving the optimised graph as ORT format to ``out``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(out)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    for key, value in NBITS_OPTIONS.items():
        opts.add_session_config_entry(key, value)
    ort.InferenceSession(
        str(onnx_path),
        opts,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=["NchwcTransformer"],
    )


def compact_names(src: str | Path, dst: str | Path) -> None:
    """``src`` with every node name and doc string dropped and every internal value renamed
    to a short one (the graph's inputs and outputs and its metadata kept): the ORT format
    stores each name with every use, and the exporter's names (``/layers.0/attention/
    MatMul_3_output_0``) cost more than the graph's structure. Same arithmetic."""
    import onnx

    model = onnx.load(str(src))
    keep = {v.name for v in (*model.graph.input, *model.graph.output)}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names):x}")

    for graph in walk_graphs(model.graph):
        top = graph is model.graph
        for t in graph.initializer:
            t.name = short(t.name)
        for v in [*graph.value_info] + ([] if top else [*graph.input, *graph.output]):
            v.name = short(v.name)
        for node in graph.node:
            node.name, node.doc_string = "", ""
            node.input[:] = [short(x) for x in node.input]
            node.output[:] = [short(x) for x in node.output]
    onnx.save(model, str(dst))
