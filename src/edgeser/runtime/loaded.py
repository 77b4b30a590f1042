"""An exported model as the Python API hands it out (``edgeser.load``): ``predict`` a file
or an array, ``predict_batch`` several, ``stream`` a long input segment by segment.

The work is :class:`~edgeser.runtime.model.OnnxEmotionModel`'s and
:func:`~edgeser.runtime.stream.stream_predictions`', as behind ``edgeser predict`` and
``edgeser stream`` (same defaults: two onnxruntime threads, Silero VAD, the stream's
segmenter settings), so a result holds what those commands print for the same input.
Imports only numpy, soundfile, soxr and onnxruntime (the ``edgeser[runtime]`` install).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeser.audio.io import SAMPLE_RATE, check_sample_rate, resample, to_mono
from edgeser.core.errors import AudioError, EdgeserError
from edgeser.runtime.card import read_model_card
from edgeser.runtime.model import Analysis, OnnxEmotionModel
from edgeser.runtime.segments import BLOCK_SECONDS, array_blocks, file_blocks
from edgeser.runtime.stream import Segment, stream_predictions
from edgeser.runtime.vad import SegmenterConfig, make_vad

__all__ = ["EmotionModel", "load_model"]

#: What an input can be: an audio file, or samples (with their ``sample_rate``).
Audio = str | os.PathLike[str] | np.ndarray


def load_model(
    path: str | os.PathLike[str],
    *,
    variant: str | None = None,
    threads: int | None = None,
    vad: str = "silero",
) -> EmotionModel:
    """The exported model at ``path``: a folder (``model.json`` + ``model*.onnx`` /
    ``.ort``; its float32 file, as ``edgeser predict FOLDER`` takes, unless ``variant``
    names another of the card's ``files``: ``int8``, ``int8_ort``, ``float16`` ...) or one
    ``.onnx`` / ``.ort`` file with ``model.json`` beside it. ``threads``: onnxruntime's
    intra-op threads (default 2, as ``edgeser predict``); ``vad``: ``silero`` or ``webrtc``
    (long inputs, ``no_speech``, :meth:`EmotionModel.stream`)."""
    p = Path(path)
    if variant is not None:
        if not p.is_dir():
            raise EdgeserError(f"{p}: variant={variant!r} picks a file of a model folder")
        _, card = read_model_card(p)
        files = {
            k: v for k, v in (card.get("files") or {}).items() if v.endswith((".onnx", ".ort"))
        }
        if variant not in files:
            raise EdgeserError(
                f"{p}: no {variant!r} model file (model.json lists {', '.join(files)})"
            )
        p = p / files[variant]
    return EmotionModel(OnnxEmotionModel(p, **_settings(threads, vad)))


def _settings(threads: int | None, vad: str) -> dict[str, Any]:
    if vad not in ("silero", "webrtc"):
        raise EdgeserError(f"unknown VAD {vad!r} (choose silero or webrtc)")
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise EdgeserError(f"threads must be >= 1, got {threads!r}")
    return {"vad": vad, **({"threads": int(threads)} if threads is not None else {})}


class EmotionModel:
    """An exported emotion model (:func:`load_model`, :meth:`from_bytes`).

    :meth:`predict` gives an :class:`~edgeser.runtime.model.Analysis` (``label``,
    ``probabilities`` as ``{class: p}``, ``dimensions`` for a dimensional model, ``status``,
    ``segments``, ``speech_seconds``): what ``edgeser predict --json`` prints for the same
    input; :meth:`stream` gives :class:`~edgeser.runtime.stream.Segment` objects, the lines of
    ``edgeser stream``. ``engine`` is the :class:`~edgeser.runtime.model.OnnxEmotionModel`
    underneath.
    """

    def __init__(self, engine: OnnxEmotionModel) -> None:
        self.engine = engine

    @classmethod
    def from_bytes(
        cls,
        model_bytes: bytes,
        card: dict[str, Any],
        *,
        name: str = "model.onnx",
        threads: int | None = None,
        vad: str = "silero",
    ) -> EmotionModel:
        """A model held in memory: the bytes of its ``.onnx`` or ``.ort`` file and its card
        (``model.json``'s document, checked as a file's is); ``name`` stands for the file
        in messages."""
        return cls(
            OnnxEmotionModel.from_bytes(model_bytes, card, name=name, **_settings(threads, vad))
        )

    @property
    def labels(self) -> list[str]:
        """The classes, in the order of the graph's output."""
        return list(self.engine.labels)

    @property
    def dimensions(self) -> list[str]:
        """The dimensional output's names (``arousal``, ``valence``, ``dominance``), or []."""
        return list(self.engine.dimension_names)

    @property
    def card(self) -> dict[str, Any]:
        """The model card (``model.json``)."""
        return self.engine.card

    @property
    def path(self) -> Path:
        """The model file (for :meth:`from_bytes`, the name it was given)."""
        return self.engine.path

    # ------------------------------------------------------------------ one input
    def predict(self, audio: Audio, sample_rate: int | None = None) -> Analysis:
        """Classify an audio file (any format soundfile reads, any rate, any channels) or
        an array (1-D or ``[frames, channels]``, at ``sample_rate``); an input longer than
        the model's window (10 s) is classified by its speech segments."""
        if isinstance(audio, np.ndarray):
            return self.engine.analyse_waveform(audio, _rate(sample_rate))
        return self.engine.analyse_file(_file(audio, sample_rate))

    def predict_batch(
        self,
        items: Sequence[Audio],
        sample_rate: int | None = None,
        *,
        batch_size: int = 16,
    ) -> list[Analysis]:
        """:meth:`predict` of each item (files and arrays at ``sample_rate``, mixed as
        needed), ``batch_size`` inputs per graph run; results in input order."""
        window = self.engine.long.window
        alone: dict[int, Analysis] = {}
        prepared: dict[int, np.ndarray] = {}
        for i, item in enumerate(items):
            if isinstance(item, np.ndarray):
                x, sr = to_mono(item), _rate(sample_rate)
                if x.shape[0] > window * sr:
                    alone[i] = self.engine.analyse_waveform(x, sr)
                else:
                    prepared[i] = self.engine.prepare(x, sr)
            else:
                path = _file(item, None)  # a file states its own rate
                wave = self.engine.prepare_file(path)
                if wave is None:
                    alone[i] = self.engine.analyse_file(path)
                else:
                    prepared[i] = wave
        batched = self.engine.analyse_prepared_batch(list(prepared.values()), batch_size=batch_size)
        alone.update(zip(prepared, batched, strict=True))
        return [alone[i] for i in range(len(items))]

    # ------------------------------------------------------------------ streams
    def stream(
        self,
        source: Audio | Iterable[np.ndarray],
        sample_rate: int | None = None,
        *,
        vad: str | None = None,
        aggressiveness: int = 2,
        config: SegmenterConfig | None = None,
        block_seconds: float = BLOCK_SECONDS,
    ) -> Iterator[Segment]:
        """The speech segments of ``source``, each classified as soon as it closes (what
        ``edgeser stream`` prints, one :class:`~edgeser.runtime.stream.Segment` a line).

        ``source`` is an audio file of any length (read in blocks of ``block_seconds``),
        an array, or an iterable of blocks (1-D or ``[frames, channels]``) at
        ``sample_rate``, e.g. a microphone's. ``vad`` (default: the model's),
        ``aggressiveness`` (WebRTC) and ``config`` (:class:`SegmenterConfig`) are ``edgeser
        stream``'s ``--vad``, ``--aggressiveness`` and segmenter options."""
        config = (config or SegmenterConfig()).validate()
        if not 0.0 < block_seconds <= 60.0:
            raise EdgeserError(f"block_seconds must be in (0, 60], got {block_seconds}")
        if isinstance(source, np.ndarray):
            x = to_mono(source)
            if not np.all(np.isfinite(x)):
                raise AudioError("audio contains NaN or infinite samples")
            blocks = array_blocks(resample(x, _rate(sample_rate)), block_seconds)
        elif isinstance(source, str | os.PathLike):
            blocks = file_blocks(_file(source, sample_rate), block_seconds)
        elif isinstance(source, Iterable) and not isinstance(source, bytes | bytearray):
            blocks = _blocks_at_16k(source, _rate(sample_rate))
        else:
            raise EdgeserError(
                "stream takes an audio file, an array or an iterable of arrays, "
                f"not {type(source).__name__}"
            )
        detector = make_vad(vad or self.engine.vad_kind, aggressiveness=aggressiveness)
        return stream_predictions(self.engine, blocks, detector, config)

    def __repr__(self) -> str:
        return f"EmotionModel({str(self.path)!r}, labels={self.labels})"


def _rate(sample_rate: int | None) -> int:
    if sample_rate is None:
        raise EdgeserError("an array needs its sample_rate (e.g. sample_rate=16000)")
    return check_sample_rate(sample_rate)


def _file(audio: object, sample_rate: int | None) -> Path:
    if not isinstance(audio, str | os.PathLike):
        raise EdgeserError(
            f"expected an audio file path or a numpy array, not {type(audio).__name__}"
        )
    if sample_rate is not None:
        raise EdgeserError(f"{audio}: sample_rate goes with an array (a file states its own)")
    return Path(audio)


def _blocks_at_16k(blocks: Iterable[np.ndarray], sample_rate: int) -> Iterator[np.ndarray]:
    """Blocks at ``sample_rate`` as mono 16 kHz float32 blocks, resampled across block
    boundaries (as :func:`~edgeser.runtime.segments.file_blocks` reads a file)."""
    import soxr

    rs = (
        soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        if sample_rate != SAMPLE_RATE
        else None
    )
    seen = 0
    it = iter(blocks)
    block = next(it, None)
    while block is not None:
        x = to_mono(np.asarray(block, dtype=np.float32))
        if not np.all(np.isfinite(x)):
            at = (seen + int(np.flatnonzero(~np.isfinite(x))[0])) / sample_rate
            raise AudioError(f"audio contains NaN or infinite samples (at {at:.2f} s)")
        seen += x.shape[0]
        following = next(it, None)
        if rs is not None:
            x = rs.resample_chunk(x, last=following is None)
        if x.size:
            yield np.ascontiguousarray(x, dtype=np.float32)
        block = following
