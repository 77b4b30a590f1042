"""The model card, ``model.json``: what an exported graph takes and returns, its labels and
the pre-processing outside the graph. Written by the exporter (:func:`make_card`), read
and validated by the runtime (:func:`read_model_card`); one schema for both."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeser.audio.io import SAMPLE_RATE
from edgeser.core.errors import EdgeserError

__all__ = ["CARD_NAME", "FORMAT_VERSION", "GRAPH_INPUTS", "GRAPH_OUTPUTS", "MODEL_FORMAT",
           "make_card", "read_model_card"]

MODEL_FORMAT = "edgeser-onnx"
FORMAT_VERSION = 1
CARD_NAME = "model.json"
#: The graph's inputs and outputs as the card states them.
GRAPH_INPUTS = {"waveform": "float32 [batch, samples]", "lengths": "int64 [batch]"}
GRAPH_OUTPUTS = {"probabilities": "float32 [batch, classes]"}


def make_card(
    *, labels: list[str], model: str, min_samples: int, outside_graph: dict[str, Any],
    inside_graph: dict[str, Any], files: dict[str, str], edgeser_version: str,
    dimensions: Sequence[str] | None = None, **extra: Any,
) -> dict[str, Any]:
    """A ``model.json`` document: the fixed schema first, then ``extra`` entries (encoder,
    training, metrics, export details, sizes). ``dimensions`` names the graph's second
    output (a model trained with ``--dimensions``), stated with its scale."""
    outputs = dict(GRAPH_OUTPUTS)
    dims: dict[str, Any] = {}
    if dimensions:
        outputs["dimensions"] = f"float32 [batch, {len(dimensions)}]"
        dims = {"dimensions": {
            "names": list(dimensions),
            "scale": "[0, 1]: (IEMOCAP rating on 1-5 - 1) / 4; 0 low (calm, negative, "
                     "submissive), 1 high (excited, positive, dominant)",
        }}
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
        **dims,
        **extra,
    }


def read_model_card(model_path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """Find and validate the ``model.json`` that describes ``model_path``.

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


def _load_card(p: Path, card_path: Path) -> dict[str, Any]:
    def bad(why: str) -> EdgeserError:
        return EdgeserError(f"{p} is not an edgeser model: {why}")

    if not card_path.is_file():
        raise bad(f"no {CARD_NAME} beside it")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"{card_path} is not valid JSON ({e})") from None
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT:
        raise bad(f"{card_path} does not declare \"format\": \"{MODEL_FORMAT}\"")
    version = card.get("format_version")
    if version != FORMAT_VERSION:
        raise bad(f"{card_path} has format_version {version!r}; this edgeser reads "
                  f"{FORMAT_VERSION}")
    labels = card.get("labels")
    if (not isinstance(labels, list) or not labels
            or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)):
        raise bad(f"{card_path}: \"labels\" must be a non-empty list of distinct names")
    if card.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise bad(f"{card_path}: sample_rate {card.get('sample_rate')!r} (expected "
                  f"{SAMPLE_RATE})")
    return card
