"""Streaming emotion recognition: audio blocks -> VAD segments -> one prediction each.

Memory stays bounded whatever the input length: the blocks and segments come from
:mod:`edgeser.runtime.segments` (re-exported here), which holds at most the open segment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edgeser.audio.io import SAMPLE_RATE
from edgeser.runtime.model import OnnxEmotionModel
from edgeser.runtime.segments import (
    BLOCK_SECONDS,
    array_blocks,
    file_blocks,
    pcm_blocks,
    speech_segments,
)
from edgeser.runtime.vad import FrameVAD, SegmenterConfig

log = logging.getLogger(__name__)

__all__ = [
    "BLOCK_SECONDS",
    "Segment",
    "array_blocks",
    "file_blocks",
    "pcm_blocks",
    "speech_segments",
    "stream_predictions",
]


@dataclass(frozen=True)
class Segment:
    """One classified speech segment; times in seconds from the start of the input."""

    start: float
    end: float
    label: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    #: ``{dimension: value on [0, 1]}`` for a dimensional model, else None.
    dimensions: dict[str, float] | None = None
    #: ``ok``, ``too_short`` or ``low_confidence`` (the VAD found speech: never no_speech)
    status: str = "ok"

    def to_line(self) -> str:
        """``start end label confidence`` (then ``arousal=… valence=… dominance=…`` for a
        dimensional model, and the status when it is not ``ok``), e.g. ``1.23 3.45 angry
        0.81`` or ``4.10 4.42 sad 0.31 low_confidence``."""
        line = f"{self.start:.2f} {self.end:.2f} {self.label} {self.confidence:.2f}"
        if self.dimensions:
            line += " " + " ".join(f"{k}={v:.2f}" for k, v in self.dimensions.items())
        if self.status != "ok":
            line += f" {self.status}"
        return line

    def to_json(self) -> str:
        """One JSON object: start, end, label, confidence, probabilities (and dimensions)."""
        obj: dict[str, object] = {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
        }
        if self.dimensions is not None:
            obj["dimensions"] = {k: round(v, 4) for k, v in self.dimensions.items()}
        obj["status"] = self.status
        return json.dumps(obj)


def stream_predictions(
    model: OnnxEmotionModel,
    blocks: Iterable[np.ndarray],
    vad: FrameVAD,
    config: SegmenterConfig | None = None,
) -> Iterator[Segment]:
    """Classify each speech segment of a 16 kHz block stream as soon as it closes."""
    for a, b, audio in speech_segments(blocks, vad, config):
        yield classify_segment(model, a, b, audio)


def classify_segment(model: OnnxEmotionModel, start: int, end: int, audio: np.ndarray) -> Segment:
    """One VAD segment (16 kHz sample bounds ``start``-``end``) classified as ``edgeser
    stream`` does (the server's ``utterance.result`` is the same object)."""
    r = model.analyse_speech(audio)
    return Segment(
        start=start / SAMPLE_RATE,
        end=end / SAMPLE_RATE,
        label=r.label,
        confidence=r.probabilities[r.label],
        probabilities=r.probabilities,
        dimensions=r.dimensions,
        status=r.status,
    )
