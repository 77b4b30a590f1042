"""The model card (:data:`ModelCard`): the ``model.json`` beside an exported model's ONNX
files, saying what the graph takes and returns, its labels and the pre-processing outside
the graph. Written by the exporter (:func:`make_card`), read and validated by the runtime
(:func:`read_model_card`); one schema for both.

Not to be confused with the training record, the ``model.json`` of a trained model folder
(config, encoder, split, metrics: :mod:`edgeser.training.folder`), which only training,
evaluation and export read; the runtime never does."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from edgeser.audio.io import SAMPLE_RATE
from edgeser.core.errors import EdgeserError

__all__ = [
    "CARD_NAME",
    "FORMAT_VERSION",
    "GRAPH_INPUTS",
    "GRAPH_METADATA",
    "GRAPH_OUTPUTS",
    "MODEL_FORMAT",
    "ModelCard",
    "check_card",
    "graph_metadata",
    "make_card",
    "read_model_card",
]

#: An exported model's card, as JSON: the fixed schema of :func:`make_card`, then the
#: exporter's extra entries (encoder, training, metrics, calibration, export details).
ModelCard: TypeAlias = dict[str, Any]

MODEL_FORMAT = "edgeser-onnx"
FORMAT_VERSION = 1
#: The model card's file name, beside the ONNX files.
CARD_NAME = "model.json"
#: Inputs longer than this are classified by speech segments (``long_input``).
LONG_INPUT_WINDOW = 10.0
#: Less audio than this after the trim is ``too_short`` (the VAD's minimum speech).
TOO_SHORT_SECONDS = 0.25
#: The largest ``min_samples`` a card may state (1 s: every encoder's receptive field fits).
MAX_MIN_SAMPLES = SAMPLE_RATE
#: The graph's inputs and outputs as the card states them.
GRAPH_INPUTS = {"waveform": "float32 [batch, samples]", "lengths": "int64 [batch]"}
GRAPH_OUTPUTS = {"probabilities": "float32 [batch, classes]"}
#: Keys of the graph's own metadata (``metadata_props``) that tie it to its card.
GRAPH_METADATA = ("edgeser.labels", "edgeser.dimensions")


def graph_metadata(labels: Sequence[str], dimensions: Sequence[str] = ()) -> dict[str, str]:
    """What the exporter stamps into an ONNX graph's metadata: its labels and dimension
    names in output order (JSON lists)."""
    return dict(
        zip(GRAPH_METADATA, (json.dumps(list(labels)), json.dumps(list(dimensions))), strict=True)
    )


def make_card(
    *,
    labels: list[str],
    model: str,
    min_samples: int,
    outside_graph: dict[str, Any],
    inside_graph: dict[str, Any],
    files: dict[str, str],
    edgeser_version: str,
    dimensions: Sequence[str] | None = None,
    **extra: Any,
) -> ModelCard:
    """A model card: the fixed schema first, then ``extra`` entries (encoder, training,
    metrics, export details, sizes). ``dimensions`` names the graph's second
    output (a model trained with ``--dimensions``), stated with its scale."""
    outputs = dict(GRAPH_OUTPUTS)
    dims: dict[str, Any] = {}
    if dimensions:
        outputs["dimensions"] = f"float32 [batch, {len(dimensions)}]"
        dims = {
            "dimensions": {
                "names": list(dimensions),
                "scale": "[0, 1]: (IEMOCAP rating on 1-5 - 1) / 4; 0 low (calm, negative, "
                "submissive), 1 high (excited, positive, dominant)",
            }
        }
    return {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "edgeser_version": edgeser_version,
        "labels": list(labels),
        "sample_rate": SAMPLE_RATE,
        "inputs": dict(GRAPH_INPUTS),
        "outputs": outputs,
        "model": model,
        "min_samples": int(min_samples),
        "preprocessing": {"outside_graph": outside_graph, "inside_graph": inside_graph},
        "files": dict(files),
        "long_input": {
            "window_seconds": LONG_INPUT_WINDOW,
            "method": "an input up to the window is one graph run; a longer one is split "
            "into speech segments (Silero VAD, edgeser stream's settings, "
            "max_segment = the window), each classified, and the probabilities "
            "(and dimensions) averaged weighted by segment duration; with no "
            "speech, the first window is classified and status is no_speech",
        },
        "status": {
            "too_short_seconds": TOO_SHORT_SECONDS,
            "values": {
                "ok": "speech found",
                "too_short": "less audio after the trim than too_short_seconds",
                "no_speech": "the VAD finds no speech (silence, stationary noise)",
                "low_confidence": "speech, but the "
                "top (calibrated) probability is below calibration."
                "low_confidence_below",
            },
        },
        **dims,
        **extra,
    }


def read_model_card(model_path: str | os.PathLike[str]) -> tuple[Path, ModelCard]:
    """Find and validate the model card (``model.json``) that describes ``model_path``.

    ``model_path`` is an ``.onnx`` file (``model.json`` beside it) or a model folder (its
    float32 file is used). Returns ``(onnx_path, card)``; raises :class:`EdgeserError`
    ``"... is not an edgeser model: ..."`` when anything is missing or malformed.
    """
    p = Path(model_path)
    if p.is_dir():
        card_path = p / CARD_NAME
        card = _load_card(p, card_path)
        onnx_path = p / str(card.get("files", {}).get("float32", "model.onnx"))
    else:
        if not p.exists():
            raise EdgeserError(f"{p}: no such model file")
        card_path = p.parent / CARD_NAME
        card = _load_card(p, card_path)
        onnx_path = p
    if not onnx_path.is_file():
        raise EdgeserError(f"{onnx_path}: no such model file")
    return onnx_path, card


def _load_card(p: Path, card_path: Path) -> ModelCard:
    if not card_path.is_file():
        raise EdgeserError(f"{p} is not an edgeser model: no {CARD_NAME} beside it")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeserError(
            f"{p} is not an edgeser model: {card_path} is not valid JSON ({e})"
        ) from None
    return check_card(card, p, card_path)


def check_card(
    card: Any, model: str | os.PathLike[str], source: str | os.PathLike[str]
) -> ModelCard:
    """``card`` if it is a ``model.json`` document the runtime can act on, else
    :class:`EdgeserError` ``"<model> is not an edgeser model: <source>: ..."`` (``source``:
    where the card came from, its file or a name)."""
    card_path = source

    def bad(why: str) -> EdgeserError:
        return EdgeserError(f"{model} is not an edgeser model: {why}")

    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT:
        raise bad(f'{card_path} does not declare "format": "{MODEL_FORMAT}"')
    version = card.get("format_version")
    if version != FORMAT_VERSION:
        raise bad(
            f"{card_path} has format_version {version!r}; this edgeser reads {FORMAT_VERSION}"
        )
    labels = card.get("labels")
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(x, str) and x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise bad(f'{card_path}: "labels" must be a non-empty list of distinct names')
    if card.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise bad(f"{card_path}: sample_rate {card.get('sample_rate')!r} (expected {SAMPLE_RATE})")
    problem = _card_problem(card)
    if problem:
        raise bad(f"{card_path}: {problem}")
    return card


def _integer(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _card_problem(card: ModelCard) -> str | None:
    """What is wrong with the fields the runtime acts on (None: nothing)."""
    if "min_samples" in card and not _integer(card["min_samples"], 1, MAX_MIN_SAMPLES):
        return (
            f'"min_samples" must be an integer in 1-{MAX_MIN_SAMPLES}, got {card["min_samples"]!r}'
        )
    pre = card.get("preprocessing", {})
    outside = pre.get("outside_graph", {}) if isinstance(pre, dict) else None
    if not isinstance(outside, dict):
        return '"preprocessing" must hold an "outside_graph" object'
    trim = outside.get("trim")
    if isinstance(trim, dict):
        top_db, frame, hop = (
            trim.get("top_db", 20.0),
            trim.get("frame_length", 2048),
            trim.get("hop_length", 512),
        )
        if not isinstance(top_db, int | float) or isinstance(top_db, bool) or not 0 < top_db <= 200:
            return f'trim "top_db" must be a number in (0, 200], got {top_db!r}'
        if not _integer(frame, 16, 1 << 16):
            return f'trim "frame_length" must be an integer in 16-65536, got {frame!r}'
        if not _integer(hop, 1, frame):
            return f'trim "hop_length" must be an integer in 1-frame_length, got {hop!r}'
    elif trim not in (None, True, False):
        return f'"trim" must be null, true, false or an object, got {trim!r}'
    files = card.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        return '"files" must map names to file names'
    for section, key, low, high in (
        ("long_input", "window_seconds", 1.0, 60.0),
        ("status", "too_short_seconds", 0.0, 10.0),
        ("calibration", "low_confidence_below", 0.0, 1.0),
    ):
        part = card.get(section, {})
        value = part.get(key, low) if isinstance(part, dict) else None
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not low <= value <= high
        ):
            return f'"{section}" must hold "{key}", a number in [{low:g}, {high:g}]'
    dims = card.get("dimensions")
    if dims is not None:
        names = dims.get("names") if isinstance(dims, dict) else None
        if (
            not isinstance(names, list)
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            return '"dimensions" must hold "names", a list of distinct names'
    return None
