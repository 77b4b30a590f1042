"""``edgeser export``: a trained model folder → ONNX float32 + 8-bit model + ``model.json``.

Graph contract (read by the runtime):

- inputs ``waveform`` float32 ``[batch, samples]`` (16 kHz mono, resampled and
  silence-trimmed outside the graph, rows zero-padded to the longest) and ``lengths``
  int64 ``[batch]`` (valid samples per row);
- output ``probabilities`` float32 ``[batch, classes]`` in ``model.json``'s label order;
- pre-emphasis and peak normalisation run inside the graph over each row's valid samples;
  inputs shorter than ``min_samples`` (400) are zero-padded inside the graph; each row of
  a padded batch gets the probabilities it would get alone.

torch, transformers and onnxruntime's quantiser are imported inside the functions that
use them: the command line builds ``edgeser export``'s parser from this module in the
torch-free runtime install too (``tests/test_runtime.py`` runs ``predict`` without them).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeser import __version__
from edgeser.audio.frontend import peak_normalize as _peak
from edgeser.audio.frontend import preemphasis as _pre
from edgeser.audio.io import SAMPLE_RATE
from edgeser.core.errors import EdgeserError
from edgeser.core.io import atomic_path, write_json
from edgeser.data.labels import DIMENSIONS
from edgeser.exporting.calibration import calibration_waves
from edgeser.exporting.recipes import EXPORT_VARIANTS, RECIPES, ExportRecipe
from edgeser.models.registry import FeatureEncoder, normalization
from edgeser.runtime.card import FORMAT_VERSION, MODEL_FORMAT, graph_metadata, make_card
from edgeser.runtime.session import onnx_session, pad_batch

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "VARIANTS",
    "build_export_graph",
    "export_flat",
    "export_model",
    "export_onnx",
    "reference_probabilities",
]

FORMAT = MODEL_FORMAT
#: Optional extra files: variant name -> (file name, what it is), from the variant
#: registry (:data:`~edgeser.exporting.recipes.EXPORT_VARIANTS`, which also converts).
VARIANTS: dict[str, tuple[str, str]] = {
    name: (v.file, v.description) for name, v in EXPORT_VARIANTS.items()
}
_PARITY_TOLERANCE = 1e-4
#: Dynamic axes of the feature extractor's tensors (edgeser.exporting.graph.STACK_TENSORS)
_STACK_AXES = {
    "stack_input": {0: "batch", 1: "padded"},
    "stack_scale": {0: "batch"},
    "stack_shift": {0: "batch"},
    "stack_output": {0: "batch", 2: "frames"},
    "stack_chunks": {},
}
#: Largest |Δp| between a quantised flat graph and the same graph with its extractor looped
#: (the same arithmetic per frame, summed in another order: a uint8 code at a rounding edge
#: can differ by one, which a sharp head turns into ~1e-3)
_LOOP_TOLERANCE = 1e-2


# ------------------------------------------------------------------------ helpers


def _recipe(model_dir: Path, meta: dict[str, Any]) -> ExportRecipe:
    """The export recipe of the model's feature kind; a kind with no ONNX form
    (``egemaps``) is refused."""
    recipe = RECIPES[str(meta["feature_kind"])]
    if recipe.graph is None:
        raise EdgeserError(
            f"{model_dir}: {meta.get('model', 'egemaps')} is not exportable to ONNX: "
            f"{recipe.refusal}; use it with 'edgeser evaluate --trained DIR'"
        )
    return recipe


def build_export_graph(
    model_dir: str | Path,
    encoder: FeatureEncoder | None = None,
    *,
    encoder_source: str | None = None,
) -> tuple[Any, Any, dict]:
    """Load a trained model folder; return ``(ExportGraph, reference Encoder, meta)``.
    ``encoder`` / ``encoder_source``: as :func:`~edgeser.training.folder.load_trained`.

    The reference encoder is the one whose weights the graph carries: the fine-tuned copy
    for ``feature_kind == "conv"`` models, otherwise the frozen encoder. The graph is the
    one the model's feature kind names (:data:`~edgeser.exporting.recipes.RECIPES`).
    """
    # the training package imports torch
    from edgeser.training.folder import check_model_dir, load_trained, peek_meta

    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    peeked = peek_meta(model_dir) or {}
    if str(peeked.get("feature_kind")) in RECIPES:  # refused before anything is loaded
        _recipe(model_dir, peeked)
    model, cfg, frozen, meta = load_trained(model_dir, encoder, encoder_source=encoder_source)
    recipe = _recipe(model_dir, meta)
    if normalization(cfg) == "speaker":
        raise EdgeserError(
            f"{model_dir}: trained with per-speaker normalisation (--feature-norm speaker), "
            "which needs each speaker's statistics before predicting; a single-utterance "
            f"graph cannot carry them. Train with --feature-norm {recipe.exportable_norm} "
            "to export"
        )
    front = meta.get("front_end") or {}
    temperature = float((meta.get("calibration") or {}).get("temperature", 1.0))
    graph, ref = recipe.graph(model, frozen, front, temperature)
    return graph, ref, meta


def reference_probabilities(
    encoder: FeatureEncoder,
    head: Any,
    waves: Sequence[np.ndarray],
    *,
    preemphasis: float = 0.97,
    peak_normalize: bool = True,
) -> np.ndarray:
    """PyTorch reference: front end + :meth:`Encoder.encode` + ``EmotionHead``, ``[N, C]``."""
    import torch

    prepared = []
    for w in waves:
        x = np.asarray(w, np.float32)
        if preemphasis:
            x = _pre(x, SAMPLE_RATE, coef=preemphasis)
        if peak_normalize:
            x = _peak(x, SAMPLE_RATE)
        prepared.append(x)
    hidden = encoder.encode(prepared)
    with torch.no_grad():
        probs = [torch.softmax(head.eval()(h[:, None]), dim=-1) for h in hidden]
    return torch.cat(probs).numpy()


def export_onnx(
    graph: Any, path: str | Path, opset: int = 17, labels: Sequence[str] | None = None
) -> None:
    """Write a graph with the edgeser contract to ``path`` atomically: inputs ``waveform``
    float32 ``[batch, samples]`` and ``lengths`` int64 ``[batch]``, output
    ``probabilities`` ``[batch, classes]``, dynamic batch and sample axes. ``labels`` are
    stamped into the graph's metadata (with the dimension names) so that the runtime can
    tell a ``model.json`` that does not belong to it (:data:`GRAPH_METADATA`); the 8-bit
    and float16 files made from it keep the stamp."""
    import torch

    example = (torch.zeros(2, 8000), torch.tensor([8000, 5000], dtype=torch.int64))
    outputs = ["probabilities"] + (
        ["dimensions"] if getattr(graph, "has_dimensions", False) else []
    )
    if getattr(graph, "expose_stack", False):  # for edgeser.exporting.chunked, then dropped
        from edgeser.exporting.graph import STACK_TENSORS

        outputs += list(STACK_TENSORS)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-derived constants
        torch.onnx.export(
            graph,
            example,
            str(tmp),
            dynamo=False,
            input_names=["waveform", "lengths"],
            output_names=outputs,
            dynamic_axes={
                "waveform": {0: "batch", 1: "samples"},
                "lengths": {0: "batch"},
                **{name: {0: "batch"} for name in outputs if not name.startswith("stack_")},
                **{name: axes for name, axes in _STACK_AXES.items() if name in outputs},
            },
            opset_version=int(opset),
            do_constant_folding=True,
        )
        if labels is not None:
            import onnx

            model = onnx.load(str(tmp))
            dims = list(DIMENSIONS) if getattr(graph, "has_dimensions", False) else []
            for key, value in graph_metadata(labels, dims).items():
                model.metadata_props.add(key=key, value=value)
            onnx.save(model, str(tmp))


def export_flat(
    graph: Any, path: str | Path, opset: int = 17, labels: Sequence[str] | None = None
) -> None:
    """:func:`export_onnx` with the feature extractor's tensors as extra outputs
    (:data:`~edgeser.exporting.graph.STACK_TENSORS`, when the graph has the chunked layout):
    the flat graph every exported file is made from (calibrated and quantised as is,
    then looped by :func:`_finish`)."""
    graph.expose_stack = getattr(graph, "stack", None) is not None
    try:
        export_onnx(graph, path, opset, labels=labels)
    finally:
        graph.expose_stack = False


def _finish(
    graph: Any,
    flat: Path,
    out: Path,
    probe: Sequence[np.ndarray],
    *,
    tolerance: float,
    loop: bool = True,
) -> None:
    """Write ``flat`` (exported with the feature extractor's tensors exposed) to ``out``
    atomically with its extractor in a ``Loop`` over chunks
    (:func:`~edgeser.exporting.chunked.loop_feature_extractor`), after checking that both
    give the same outputs on ``probe`` (a graph without the layout, or ``loop=False``, is
    copied as is)."""
    import onnx

    from edgeser.exporting.chunked import loop_feature_extractor
    from edgeser.exporting.graph import STACK_TENSORS

    model = onnx.load(str(flat))
    if loop and getattr(graph, "stack", None) is not None:
        loop_feature_extractor(model, STACK_TENSORS, context=graph.min_samples - graph.hop)
    del model.graph.value_info[:]  # shapes onnxruntime infers itself: 33 kB of the file
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
        before, after = onnx_session(flat), onnx_session(tmp)
        names = [o.name for o in after.get_outputs()]
        worst = 0.0
        for w in probe:
            feed = pad_batch([w])
            for a, b in zip(before.run(names, feed), after.run(names, feed), strict=True):
                worst = max(worst, float(np.abs(a - b).max()))
        if not worst <= tolerance:
            raise EdgeserError(
                f"{out.name}: the looped feature extractor differs from the "
                f"flat graph by {worst:.2e}"
            )


def _check_parity(graph: Any, path: Path, waves: Sequence[np.ndarray]) -> float:
    """Max |ONNX - PyTorch graph| over ``waves`` (each alone); raises past tolerance."""
    import torch

    session = onnx_session(path)
    worst = 0.0
    for w in waves:
        feed = pad_batch([w])
        got = session.run(None, feed)
        with torch.no_grad():
            ref = graph(torch.from_numpy(feed["waveform"]), torch.from_numpy(feed["lengths"]))
        refs = ref if isinstance(ref, tuple) else (ref,)
        for g, r in zip(got, refs, strict=True):
            worst = max(worst, float(np.abs(g - r.numpy()).max()))
    if not worst <= _PARITY_TOLERANCE:
        raise EdgeserError(f"{path}: exported graph differs from PyTorch by {worst:.2e}")
    return worst


def _calibration_card(calibration: dict[str, Any] | None) -> dict[str, Any]:
    """``model.json``'s ``calibration``: the temperature (applied inside the graph) and the
    ``low_confidence`` threshold the trained model's validation speakers gave."""
    if not calibration:
        return {"method": "none", "low_confidence_below": 0.0}
    return {
        "method": calibration.get("method", "temperature"),
        "temperature": calibration["temperature"],
        "applied": "inside the graph: probabilities = softmax(logits / temperature)",
        "low_confidence_below": calibration.get("low_confidence_below", 0.0),
        "fitted_on": f"{calibration.get('n_val')} validation utterances (speakers held "
        "out of training)",
        "validation": calibration.get("val"),
    }


def _training_info(meta: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    from edgeser.training.folder import training_corpora

    info: dict[str, Any] = {"config": meta.get("config"), "split": meta.get("split")}
    corpora = training_corpora(model_dir, meta)
    if corpora is not None:
        info["corpora"] = corpora
    return info


# ------------------------------------------------------------------------- export


def export_model(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    int8: bool = True,
    calibration: Sequence[str | Path] | None = None,
    opset: int = 17,
    extra_variants: Sequence[str] = (),
    encoder: FeatureEncoder | None = None,
    encoder_source: str | None = None,
) -> dict[str, Path]:
    """Export a trained model folder to ``out_dir``; returns ``{kind: path}``.

    Writes ``model.onnx`` (float32), ``model.int8.onnx`` (unless ``int8=False``; calibrated
    on ``calibration`` audio files or on deterministic synthetic speech) and ``model.json``;
    ``extra_variants`` adds optional files, see :data:`VARIANTS` (``"int8-fast"``,
    ``"float16"``, ``"float16-compute"``).
    ``encoder`` overrides the encoder that ``model.json`` names (tests, offline use);
    ``encoder_source`` names one to load instead (``--encoder``): a source ``model.json``
    records outside the folder is refused (:func:`~edgeser.models.ssl.recorded_source`).
    Raises :class:`EdgeserError` for a folder that is not an edgeser model or an encoder
    that is not in the HuBERT/DistilHuBERT family.
    """
    import os

    model_dir = Path(model_dir)
    out_dir = Path(out_dir)
    unknown = sorted(set(extra_variants) - set(VARIANTS))
    if unknown:
        raise EdgeserError(
            f"unknown export variant(s) {', '.join(unknown)}; available: {', '.join(VARIANTS)}"
        )
    graph, _ref, meta = build_export_graph(model_dir, encoder, encoder_source=encoder_source)
    recipe = _recipe(Path(model_dir), meta)
    if recipe.variants_refusal and extra_variants:
        raise EdgeserError(f"export variants {', '.join(extra_variants)} {recipe.variants_refusal}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"float32": out_dir / "model.onnx"}
    logger.info("exporting %s to %s", model_dir, paths["float32"])
    labels = list(meta.get("labels") or [])
    front = meta.get("front_end") or {}
    trim = bool(front.get("trim", True))
    top_db = float(front.get("top_db", 20.0))
    waves = calibration_waves(calibration, trim=trim, top_db=top_db)
    with tempfile.TemporaryDirectory(prefix=".edgeser-export-", dir=out_dir) as tmp_dir:
        # every file is made from the flat graph, then its feature extractor is looped
        flat = Path(tmp_dir) / "flat.onnx"
        export_flat(graph, flat, opset, labels=labels)
        probe = [*waves[:2], np.zeros(100, np.float32)]
        _finish(graph, flat, paths["float32"], probe, tolerance=_PARITY_TOLERANCE)
        parity = _check_parity(graph, paths["float32"], probe)
        logger.info("float32 ONNX vs PyTorch: max |diff| %.2e", parity)
        # kind -> (file name, converter, made from the flat graph, else from model.onnx)
        made: dict[str, tuple[str, Any, bool]] = {}
        if int8 and recipe.int8 is not None:
            made["int8"] = ("model.int8.onnx", recipe.int8, True)
        for name in dict.fromkeys(extra_variants):
            variant = EXPORT_VARIANTS[name]
            made[name] = (variant.file, variant.convert, variant.from_flat)
        for kind, (file_name, convert, from_flat) in made.items():
            paths[kind] = out_dir / file_name
            made_file = Path(tmp_dir) / f"{kind}.onnx"
            convert(flat if from_flat else paths["float32"], made_file, waves)
            _finish(graph, made_file, paths[kind], probe, tolerance=_LOOP_TOLERANCE, loop=from_flat)
        if "int8" in paths:  # the mobile form: ORT format + the reduced build's operators
            from edgeser.exporting.ortformat import write_ort

            paths["int8_ort"] = out_dir / "model.int8.ort"
            paths["required_operators"] = out_dir / "required_operators.config"
            write_ort(paths["int8"], paths["int8_ort"], paths["required_operators"])
    doc = make_card(
        edgeser_version=__version__,
        labels=labels,
        model=meta.get("model", "distilhubert"),
        min_samples=int(getattr(graph, "min_samples", 1)),
        outside_graph={
            "resample": SAMPLE_RATE,
            "mono": "mean of channels",
            "trim": {"top_db": top_db, "frame_length": 2048, "hop_length": 512} if trim else None,
        },
        inside_graph={
            "preemphasis": graph.preemphasis,
            "peak_normalize": graph.peak_normalize,
            **({"standardize": True} if getattr(graph, "do_normalize", False) else {}),
            **recipe.card(graph),
        },
        dimensions=DIMENSIONS if getattr(graph, "has_dimensions", False) else None,
        files={k: p.name for k, p in paths.items()},
        sizes_bytes={k: os.path.getsize(p) for k, p in paths.items()},
        encoder=meta.get("encoder"),
        training=_training_info(meta, model_dir),
        metrics=meta.get("metrics"),
        calibration=_calibration_card(meta.get("calibration")),
        export={
            "opset": int(opset),
            "float32_parity_max_abs_diff": parity,
            "calibration": [str(c) for c in calibration]
            if calibration
            else "speech-like signals (edgeser.exporting.calibration.speech_like, seed 1234)",
            "int8_scheme": recipe.int8_scheme if int8 else None,
            **(
                {"variants": {k: VARIANTS[k][1] for k in dict.fromkeys(extra_variants)}}
                if extra_variants
                else {}
            ),
        },
    )
    paths["json"] = out_dir / "model.json"
    write_json(paths["json"], doc)
    return paths
