"""Export's registries: feature kind -> :class:`ExportRecipe` (the graph and its 8-bit
recipe) and variant name -> :class:`ExportVariant` (an optional file and its converter).

:func:`~edgeser.exporting.exporter.export_model` looks both up instead of comparing kinds
or names. Recipes are keyed by the feature kind's value (what ``model.json``'s
``feature_kind`` holds): a model's kind says which graph holds its forward pass.

Torch-free at import time (``edgeser export``'s parser lists the variants in the
torch-free runtime install): graphs, quantisers and converters are imported when used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXPORT_VARIANTS", "RECIPES", "ExportRecipe", "ExportVariant"]

Waves = Sequence[np.ndarray]


# --------------------------------------------------------------------- graphs


def _ssl_graph(model: Any, encoder: Any, front: dict[str, Any], temperature: float) -> Any:
    """:class:`~edgeser.exporting.graph.ExportGraph` of an SSL encoder and its head; the
    reference encoder is the fine-tuned copy of a ``conv`` model, else the frozen one."""
    from edgeser.exporting.graph import ExportGraph

    ref = encoder if model.trained_encoder is None else model.trained_encoder
    graph = ExportGraph(
        ref.model,
        model.head,
        preemphasis=float(front.get("preemphasis", 0.97) or 0.0),
        peak_normalize=bool(front.get("normalize", True)),
        do_normalize=bool(getattr(ref, "do_normalize", False)),
        temperature=temperature,
    )
    return graph, ref


def _lightsernet_graph(model: Any, encoder: Any, front: dict[str, Any], temperature: float) -> Any:
    """:class:`~edgeser.exporting.lightsernet_graph.LightSERNetGraph`: MFCC + network."""
    from edgeser.exporting.lightsernet_graph import LightSERNetGraph

    graph = LightSERNetGraph(
        model.head,
        encoder.cfg,
        preemphasis=float(front.get("preemphasis", 0.97) or 0.0),
        peak_normalize=bool(front.get("normalize", True)),
        temperature=temperature,
    )
    return graph, encoder


def _ssl_int8(flat: Path, out: Path, waves: Waves) -> None:
    from edgeser.exporting.quantize import quantize_int8

    quantize_int8(flat, out, waves)


def _lightsernet_int8(flat: Path, out: Path, waves: Waves) -> None:
    from edgeser.exporting.lightsernet_graph import quantize_lightsernet_int8

    quantize_lightsernet_int8(flat, out, waves)


def _no_card(graph: Any) -> dict[str, Any]:
    return {}


def _mfcc_card(graph: Any) -> dict[str, Any]:
    return {
        "window_seconds": graph.mfcc_cfg.seconds,
        "window": "first seconds, zero-padded",
        "features": "MFCC (LIGHT-SERNET)",
    }


@dataclass(frozen=True)
class ExportRecipe:
    """How a model of one feature kind exports (or why it cannot)."""

    #: ``(model, encoder, front_end, temperature) -> (graph, reference encoder)``, or None
    #: for a kind with no ONNX form (then :attr:`refusal` says why)
    graph: Callable[[Any, Any, dict[str, Any], float], tuple[Any, Any]] | None
    #: ``(flat float32 graph, out, calibration waves)``: writes the 8-bit model
    int8: Callable[[Path, Path, Waves], None] | None = None
    #: ``model.json``'s ``export.int8_scheme``
    int8_scheme: str = ""
    #: ``graph -> entries`` of ``model.json``'s ``inside_graph`` besides the front end
    card: Callable[[Any], dict[str, Any]] = _no_card
    #: the ``--feature-norm`` to train with instead of ``speaker`` to export
    exportable_norm: str = "global"
    #: why :data:`EXPORT_VARIANTS` do not apply (None: they do)
    variants_refusal: str | None = None
    #: why the kind has no ONNX form
    refusal: str = ""


SSL_RECIPE = ExportRecipe(
    _ssl_graph,
    _ssl_int8,
    "static QDQ (uint8 act, per-channel int8 weights, GPTQ "
    "rounding) for the transformer linears and the second feature-extractor "
    "convolution; weight-only int8 (DequantizeLinear, float32 "
    "arithmetic) elsewhere",
)

#: feature kind value -> how its models export
RECIPES: dict[str, ExportRecipe] = {
    "pooled": SSL_RECIPE,
    "frames": SSL_RECIPE,
    "conv": SSL_RECIPE,
    "wave": SSL_RECIPE,
    "mfcc": ExportRecipe(
        _lightsernet_graph,
        _lightsernet_int8,
        "static QDQ (uint8 act, per-channel int8 weights) for the body "
        "convolutions; MFCC front end, input paths and classifier in float",
        card=_mfcc_card,
        exportable_norm="none",
        variants_refusal="apply to SSL-encoder models, not LIGHT-SERNET",
    ),
    "functionals": ExportRecipe(
        None,
        refusal="eGeMAPS functionals are computed by openSMILE (C++), which no ONNX graph can hold",
    ),
}


# ------------------------------------------------------------------- variants


def _int8_fast(src: Path, out: Path, waves: Waves) -> None:
    from edgeser.exporting.quantize import quantize_int8

    quantize_int8(src, out, waves, scheme="fast")


def _float16(mode: str) -> Callable[[Path, Path, Waves], None]:
    """onnxruntime's float16 converter (it handles the looped extractor's body too)."""

    def convert(src: Path, out: Path, waves: Waves) -> None:
        from edgeser.exporting.halfprec import convert_float16

        convert_float16(src, out, mode=mode)

    return convert


@dataclass(frozen=True)
class ExportVariant:
    """An optional exported file: its name, what it is, and how it is made."""

    file: str
    description: str
    #: ``(source graph, out, calibration waves)``: writes the variant
    convert: Callable[[Path, Path, Waves], None] = field(repr=False)
    #: made from the flat graph (its extractor looped afterwards), else from
    #: ``model.onnx`` (looped already)
    from_flat: bool = True


#: Optional extra files: variant name -> :class:`ExportVariant` (``--variant``).
EXPORT_VARIANTS: dict[str, ExportVariant] = {
    "int8-fast": ExportVariant(
        "model.int8-fast.onnx",
        "int8, more feature-extractor convolutions on uint8 activations: faster, less faithful",
        _int8_fast,
    ),
    "float16": ExportVariant(
        "model.float16.onnx",
        "float16 weights widened to float32 when the session "
        "is created: half the size of model.onnx, float32 speed and outputs",
        _float16("storage"),
    ),
    "float16-compute": ExportVariant(
        "model.float16-compute.onnx",
        "float16 weights and arithmetic, "
        "float32 inputs/outputs: for runtimes with float16 kernels (GPU, "
        "NNAPI, Core ML); no faster than float32 on an x86 CPU",
        _float16("compute"),
        from_flat=False,
    ),
}
