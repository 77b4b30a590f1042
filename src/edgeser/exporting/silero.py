"""The Silero VAD file edgeser ships: silero-vad 6.2.3's ``silero_vad.onnx`` with only its
16 kHz branch.

The published graph holds two models, for 16 kHz and for 8 kHz input, behind an ``If`` on
its ``sr`` input; edgeser only ever feeds 16 kHz, and the 8 kHz branch's session costs
~4.5 MB of memory for nothing (``bench/memory.py``). :func:`silero_16k` makes the 16 kHz
branch the whole graph (same inputs, ``sr`` now unused, same outputs, same numbers);
``tests/test_runtime.py`` checks the shipped file against it and against the package.
"""

from __future__ import annotations

from pathlib import Path

from edgeser.core.errors import EdgeserError

__all__ = ["silero_16k"]


def silero_16k(src: str | Path, dst: str | Path) -> None:
    """Write the 16 kHz branch of the Silero VAD graph at ``src`` as a graph of its own."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    branch = next((n for n in graph.node if n.op_type == "If"), None)
    const = next((n for n in graph.node if n.op_type == "Constant"), None)
    if branch is None or const is None or int(numpy_helper.to_array(const.attribute[0].t)) != 16000:
        raise EdgeserError(f"{src}: not the Silero VAD graph this expects (If on sr == 16000)")
    then = next(a.g for a in branch.attribute if a.name == "then_branch")
    outputs = [o.name for o in graph.output]
    nodes = [
        *then.node,
        *(
            helper.make_node("Identity", [o.name], [name])
            for o, name in zip(then.output, outputs, strict=True)
        ),
    ]
    sub = helper.make_graph(
        nodes, "silero_vad_16k", list(graph.input), list(graph.output), list(then.initializer)
    )
    out = helper.make_model(
        sub,
        opset_imports=model.opset_import,
        ir_version=model.ir_version,
        producer_name="edgeser (16 kHz branch of silero-vad 6.2.3)",
    )
    onnx.checker.check_model(out)
    onnx.save(out, str(dst))
