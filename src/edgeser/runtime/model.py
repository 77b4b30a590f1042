"""An exported edgeser model (``model.onnx`` or ``model.int8.onnx`` + ``model.json``) run with
onnxruntime.

The graph contract (``model.json`` ``"format": "edgeser-onnx"``, ``"format_version": 1``):
inputs ``waveform`` float32 ``[batch, samples]`` (16 kHz mono, already resampled and
silence-trimmed, rows zero-padded to the longest) and ``lengths`` int64 ``[batch]``; output
``probabilities`` float32 ``[batch, classes]`` in ``model.json``'s label order (and, for a
model trained with ``--dimensions``, ``dimensions`` float32 ``[batch, 3]`` on [0, 1] in
``model.json``'s ``dimensions.names`` order: arousal, valence, dominance). Pre-emphasis
and peak normalisation happen inside the graph; resampling, downmixing and trimming happen
here, as ``model.json`` ``preprocessing.outside_graph`` says.

Imports only numpy, soundfile, soxr and onnxruntime (the ``edgeser[runtime]`` install).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeser.audio.frontend import trim_bounds
from edgeser.audio.io import (
    SAMPLE_RATE,
    audio_info,
    check_sample_rate,
    load_audio,
    resample,
    to_mono,
)
from edgeser.core.errors import AudioError, EdgeserError
from edgeser.runtime.card import (
    CARD_NAME,
    GRAPH_METADATA,
    LONG_INPUT_WINDOW,
    TOO_SHORT_SECONDS,
    check_card,
    graph_metadata,
    read_model_card,
)
from edgeser.runtime.segments import array_blocks, file_blocks, speech_segments
from edgeser.runtime.session import onnx_session, pad_batch
from edgeser.runtime.vad import FrameVAD, SegmenterConfig, make_vad

log = logging.getLogger(__name__)

Prediction = tuple[str, dict[str, float]]


#: What :attr:`Analysis.status` can say besides ``ok``: ``too_short`` (less audio after
#: the trim than the card's ``status.too_short_seconds``), ``no_speech`` (the VAD finds no
#: speech: silence, stationary noise), ``low_confidence`` (speech, but the top calibrated
#: probability is below the card's ``calibration.low_confidence_below``).
STATUSES = ("ok", "too_short", "no_speech", "low_confidence")


@dataclass(frozen=True)
class Analysis:
    """Everything the model says of one input: the label, the class probabilities, for a
    dimensional model ``{dimension: value on [0, 1]}`` (else ``None``), and how far to
    trust it: ``status`` (:data:`STATUSES`; the label is given whatever it says),
    ``segments`` (graph runs combined: 1 for an input up to the model's window, else the
    number of speech segments) and ``speech_seconds`` (the audio those runs saw)."""

    label: str
    probabilities: dict[str, float]
    dimensions: dict[str, float] | None = None
    status: str = "ok"
    segments: int = 1
    speech_seconds: float = 0.0


@dataclass(frozen=True)
class LongInputs:
    """How an input longer than ``window`` seconds is classified (``model.json``
    ``long_input``): its speech segments (the VAD with ``edgeser stream``'s settings, each
    at most ``window`` long) one at a time, their probabilities (and dimensions) averaged
    weighted by duration; with no speech, its first ``window`` seconds, status
    ``no_speech``. Memory does not grow with the input's length."""

    window: float = LONG_INPUT_WINDOW
    too_short: float = TOO_SHORT_SECONDS
    low_confidence: float = 0.0


def long_input_settings(card: dict[str, Any]) -> LongInputs:
    """The window and the status limits a card states (defaults for older cards)."""
    long = card.get("long_input") or {}
    status = card.get("status") or {}
    calibration = card.get("calibration") or {}
    return LongInputs(
        window=float(long.get("window_seconds", LongInputs.window)),
        too_short=float(status.get("too_short_seconds", LongInputs.too_short)),
        low_confidence=float(calibration.get("low_confidence_below", 0.0)),
    )


@dataclass(frozen=True)
class TrimSettings:
    """The silence trim applied outside the graph (``librosa.effects.trim`` semantics)."""

    top_db: float = 20.0
    frame_length: int = 2048
    hop_length: int = 512


def trim_settings(card: dict[str, Any]) -> TrimSettings | None:
    """The trim ``model.json`` asks for (``None``: no trim)."""
    outside = (card.get("preprocessing") or {}).get("outside_graph") or {}
    if "trim" not in outside:
        return TrimSettings()
    trim = outside["trim"]
    if trim is None or trim is False:
        return None
    if trim is True:
        return TrimSettings()
    return TrimSettings(
        top_db=float(trim.get("top_db", 20.0)),
        frame_length=int(trim.get("frame_length", 2048)),
        hop_length=int(trim.get("hop_length", 512)),
    )


def prepare_waveform(wave: np.ndarray, sample_rate: int, trim: TrimSettings | None) -> np.ndarray:
    """:meth:`OnnxEmotionModel.prepare` with the trim of a model card
    (:func:`trim_settings`): what runs outside the graph, without a session."""
    x = to_mono(np.asarray(wave, dtype=np.float32))
    if x.size == 0:
        raise AudioError("audio holds no samples")
    if not np.all(np.isfinite(x)):
        raise AudioError("audio contains NaN or infinite samples")
    sr = check_sample_rate(sample_rate)
    x = resample(x, sr, SAMPLE_RATE)
    if x.size == 0:
        raise AudioError("audio is shorter than one sample at 16 kHz")
    if trim is not None:
        start, end = trim_bounds(
            x, top_db=trim.top_db, frame_length=trim.frame_length, hop_length=trim.hop_length
        )
        if end > start:
            x = x[start:end]
    return np.ascontiguousarray(x, dtype=np.float32)


def read_prepared(
    path: str | os.PathLike[str], trim: TrimSettings | None
) -> tuple[np.ndarray, float]:
    """``(prepared 16 kHz waveform, the file's duration in seconds)`` of an audio file, as
    :meth:`OnnxEmotionModel.analyse_file` reads it; :class:`AudioError` names the file."""
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file")
    info = audio_info(p)
    check_sample_rate(info.sample_rate, what=str(p))
    wave = load_audio(p, SAMPLE_RATE)  # raises AudioError for unreadable/empty
    try:
        return prepare_waveform(wave, SAMPLE_RATE, trim), info.duration
    except AudioError as e:
        raise AudioError(f"{p}: {e}") from None


class OnnxEmotionModel:
    """An exported emotion model: ``predict_waveform``, ``predict_batch``, ``predict_file``.

    ``path`` is ``model.onnx`` or ``model.int8.onnx`` (with ``model.json`` beside it), or
    the model folder. ``threads`` sets onnxruntime's intra-op threads (CPU only); ``vad``
    (``silero`` or ``webrtc``) finds the speech in long inputs and decides ``no_speech``.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int = 2, vad: str = "silero"
    ) -> None:
        self.path, self.card = read_model_card(path)
        self._open(self.path, threads, vad)

    @classmethod
    def from_bytes(
        cls,
        model: bytes,
        card: dict[str, Any],
        *,
        name: str = "model.onnx",
        threads: int = 2,
        vad: str = "silero",
    ) -> OnnxEmotionModel:
        """The model from its file's bytes (``.onnx`` or ``.ort``) and its card (the
        ``model.json`` document), with no file: ``name`` stands for the file in messages
        and :attr:`path`. The card is checked as :func:`read_model_card` checks a file's."""
        if not isinstance(model, bytes | bytearray | memoryview):
            raise EdgeserError(f"{name}: model bytes expected, got {type(model).__name__}")
        self = cls.__new__(cls)
        self.path = Path(name)
        self.card = check_card(card, name, CARD_NAME)
        self._open(bytes(model), threads, vad)
        return self

    def _open(self, source: Path | bytes, threads: int, vad: str) -> None:
        """The session on ``source`` (the file, or its bytes) and the card's settings."""
        self.labels: list[str] = list(self.card["labels"])
        self.sample_rate: int = SAMPLE_RATE
        self.min_samples: int = max(1, int(self.card.get("min_samples", 400)))
        self.trim: TrimSettings | None = trim_settings(self.card)
        self.long: LongInputs = long_input_settings(self.card)
        self.vad_kind = vad
        self._vad: FrameVAD | None = None
        #: Names of the dimensional output (empty: the graph has none).
        self.dimension_names: list[str] = list(
            (self.card.get("dimensions") or {}).get("names") or []
        )

        try:
            self.session = onnx_session(source, threads=max(1, int(threads)))
        except Exception as e:  # onnxruntime raises its own exception types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EdgeserError(
                f"{self.path} is not an edgeser model: not a loadable ONNX file ({msg[:200]})"
            ) from None
        self._check_signature()
        log.debug("loaded %s (%d labels, %d threads)", self.path, len(self.labels), threads)

    def _check_signature(self) -> None:
        def bad(why: str) -> EdgeserError:
            return EdgeserError(f"{self.path} is not an edgeser model: {why}")

        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        want_in = {"waveform": ("tensor(float)", 2), "lengths": ("tensor(int64)", 1)}
        if set(ins) != set(want_in):
            raise bad(f"graph inputs {sorted(ins)}, expected ['lengths', 'waveform']")
        for name, (dtype, rank) in want_in.items():
            if ins[name].type != dtype or len(ins[name].shape) != rank:
                raise bad(
                    f"input {name!r} is {ins[name].type} {ins[name].shape}, expected "
                    f"{dtype} of rank {rank}"
                )
        out = outs.get("probabilities")
        if out is None:
            raise bad(f"graph outputs {sorted(outs)}, expected 'probabilities'")
        if out.type != "tensor(float)" or len(out.shape) != 2:
            raise bad(
                f"output 'probabilities' is {out.type} {out.shape}, expected float [batch, classes]"
            )
        n = out.shape[1]
        if isinstance(n, int) and n != len(self.labels):
            raise bad(f"the graph has {n} classes but model.json lists {len(self.labels)} labels")
        stamped = self.session.get_modelmeta().custom_metadata_map
        if all(k in stamped for k in GRAPH_METADATA):
            want = graph_metadata(self.labels, self.dimension_names)
            for key in GRAPH_METADATA:
                if json.loads(stamped[key]) != json.loads(want[key]):
                    raise bad(
                        f"model.json's {key.split('.')[1]} {json.loads(want[key])} are not "
                        f"the graph's {json.loads(stamped[key])} (the order matters: "
                        "model.json belongs to another export)"
                    )
        else:
            log.debug(
                "%s: no labels in the graph's metadata (exported before edgeser stamped "
                "them): model.json's order is taken as is",
                self.path,
            )
        dims = outs.get("dimensions")
        if (dims is None) != (not self.dimension_names):
            raise bad("model.json and the graph disagree on the 'dimensions' output")
        if dims is not None:
            k = dims.shape[1] if len(dims.shape) == 2 else None
            if dims.type != "tensor(float)" or k != len(self.dimension_names):
                raise bad(
                    f"output 'dimensions' is {dims.type} {dims.shape}, expected float "
                    f"[batch, {len(self.dimension_names)}]"
                )

    # ------------------------------------------------------------------ preprocessing
    def prepare(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Downmix, resample to 16 kHz and trim as ``model.json`` says (float32, 1-D).

        ``wave`` is 1-D or ``[frames, channels]``. Raises :class:`AudioError` for empty
        or non-finite audio and sample rates that cannot be resampled.
        """
        return prepare_waveform(wave, sample_rate, self.trim)

    # ------------------------------------------------------------------ inference
    def run(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Run the graph on prepared 16 kHz waveforms; returns ``[len(waves), classes]``.

        Rows are zero-padded to the longest (and to ``min_samples``); ``lengths`` holds
        each row's valid samples (at least ``min_samples``: a shorter clip counts its
        zero padding as signal, which is what the graph's first convolution needs).
        """
        return self.run_outputs(waves)[0]

    def run_outputs(self, waves: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`run`, with the dimensional output ``[len(waves), K]`` (None without)."""
        k = len(self.dimension_names)
        if not waves:
            return (
                np.zeros((0, len(self.labels)), dtype=np.float32),
                np.zeros((0, k), dtype=np.float32) if k else None,
            )
        names = ["probabilities", "dimensions"] if k else ["probabilities"]
        outs = self.session.run(names, pad_batch(waves, self.min_samples))
        probs = np.asarray(outs[0], dtype=np.float32)
        return probs, (np.asarray(outs[1], dtype=np.float32) if k else None)

    def _named(self, row: np.ndarray) -> Prediction:
        probs = {lab: float(p) for lab, p in zip(self.labels, row, strict=True)}
        return self.labels[int(np.argmax(row))], probs

    def _analysis(self, row: np.ndarray, dims: np.ndarray | None, **info: Any) -> Analysis:
        label, probs = self._named(row)
        named = (
            None
            if dims is None
            else {d: float(v) for d, v in zip(self.dimension_names, dims, strict=True)}
        )
        return Analysis(label, probs, named, **info)

    def predict_waveform(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Prediction:
        """Classify one waveform: ``(label, {label: probability})``."""
        a = self.analyse_waveform(wave, sample_rate)
        return a.label, a.probabilities

    def analyse_waveform(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Analysis:
        """Label, probabilities, (for a dimensional model) dimensions and status of one
        waveform; one longer than the window is classified by speech segments
        (:class:`LongInputs`)."""
        x = to_mono(np.asarray(wave, dtype=np.float32))
        sr = check_sample_rate(sample_rate)
        if x.shape[0] <= self.long.window * sr:
            return self.analyse_prepared(self.prepare(x, sr))
        if not np.all(np.isfinite(x)):
            raise AudioError("audio contains NaN or infinite samples")
        return self._analyse_long(array_blocks(resample(x, sr, SAMPLE_RATE)))

    def predict_batch(
        self,
        waves: Sequence[np.ndarray],
        sample_rate: int = SAMPLE_RATE,
        *,
        batch_size: int = 16,
    ) -> list[Prediction]:
        """Classify several waveforms (all at ``sample_rate``), ``batch_size`` per graph run.

        Items are grouped by length to limit padding; results come back in input order.
        An item longer than the window is classified alone by speech segments.
        """
        sr = check_sample_rate(sample_rate)
        out: list[Prediction | None] = [None] * len(waves)
        short = []
        for i, w in enumerate(waves):
            if to_mono(np.asarray(w, dtype=np.float32)).shape[0] <= self.long.window * sr:
                short.append(i)
            else:
                out[i] = self.predict_waveform(w, sr)
        prepared = [self.prepare(waves[i], sr) for i in short]
        for k, row, _ in self._batched_outputs(prepared, batch_size):
            out[short[k]] = self._named(row)
        return [p for p in out if p is not None]

    def analyse_prepared_batch(
        self, prepared: Sequence[np.ndarray], *, batch_size: int = 16
    ) -> list[Analysis]:
        """:meth:`analyse_prepared` of several prepared waveforms (each up to the window),
        ``batch_size`` per graph run, grouped by length; results in input order (a row of a
        padded batch gets what it gets alone, up to float rounding)."""
        out: list[Analysis | None] = [None] * len(prepared)
        for i, row, dims in self._batched_outputs(prepared, batch_size):
            x = prepared[i]
            out[i] = self._analysis(
                row,
                dims,
                status=self.status(x, row),
                speech_seconds=x.shape[0] / SAMPLE_RATE,
            )
        return [a for a in out if a is not None]

    def _batched_outputs(
        self, prepared: Sequence[np.ndarray], batch_size: int
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """``(index, probabilities, dimensions or None)`` of each prepared waveform, run
        ``batch_size`` at a time in order of length (to limit padding)."""
        order = sorted(range(len(prepared)), key=lambda i: len(prepared[i]))
        step = max(1, int(batch_size))
        for k in range(0, len(order), step):
            idx = order[k : k + step]
            probs, dims = self.run_outputs([prepared[i] for i in idx])
            for j, i in enumerate(idx):
                yield i, probs[j], None if dims is None else dims[j]

    def predict_file(self, path: str | os.PathLike[str]) -> Prediction:
        """Read any soundfile format (any rate, any channel count) and classify it."""
        a = self.analyse_file(path)
        return a.label, a.probabilities

    def analyse_file(self, path: str | os.PathLike[str]) -> Analysis:
        """:meth:`predict_file` with dimensions and status (:class:`Analysis`); a file longer
        than the window is read in blocks and classified by speech segments."""
        wave = self.prepare_file(path)
        if wave is None:
            return self._analyse_long(file_blocks(path))
        return self.analyse_prepared(wave)

    def prepare_file(self, path: str | os.PathLike[str]) -> np.ndarray | None:
        """The prepared waveform of an audio file up to the window (:func:`read_prepared`);
        None for a longer one (:meth:`analyse_file` reads it in blocks)."""
        p = Path(path)
        if not p.is_file():
            raise AudioError(f"{p}: no such audio file")
        info = audio_info(p)
        check_sample_rate(info.sample_rate, what=str(p))
        if info.duration > self.long.window:
            return None
        return read_prepared(p, self.trim)[0]

    # ------------------------------------------------------------------ status, long inputs
    def vad(self) -> FrameVAD:
        """The VAD this model finds speech with (Silero's bundled ONNX file by default)."""
        if self._vad is None:
            self._vad = make_vad(self.vad_kind)
        return self._vad

    def speech_in(self, wave: np.ndarray) -> bool:
        """Whether the VAD finds a speech segment in a 16 kHz waveform."""
        config = SegmenterConfig(max_segment=self.long.window)
        return next(speech_segments(array_blocks(wave), self.vad(), config), None) is not None

    def status(self, prepared: np.ndarray, probabilities: np.ndarray) -> str:
        """``too_short``, ``no_speech``, ``low_confidence`` or ``ok`` for a prepared
        (trimmed) waveform and the probabilities the model gave it."""
        if prepared.shape[0] < self.long.too_short * SAMPLE_RATE:
            return "too_short"
        if not self.speech_in(prepared):
            return "no_speech"
        return self.confidence_status(probabilities)

    def confidence_status(self, probabilities: np.ndarray) -> str:
        """``low_confidence`` or ``ok``: the top probability against the card's threshold."""
        top = float(np.max(probabilities))
        return "low_confidence" if top < self.long.low_confidence else "ok"

    def analyse_speech(self, audio: np.ndarray) -> Analysis:
        """:class:`Analysis` of a 16 kHz speech segment a VAD found (up to the window): as
        :meth:`analyse_waveform` without running the VAD again."""
        x = self.prepare(audio, SAMPLE_RATE)
        probs, dims = self.run_outputs([x])
        status = (
            "too_short"
            if x.shape[0] < self.long.too_short * SAMPLE_RATE
            else self.confidence_status(probs[0])
        )
        return self._analysis(
            probs[0],
            None if dims is None else dims[0],
            status=status,
            speech_seconds=x.shape[0] / SAMPLE_RATE,
        )

    def analyse_prepared(self, x: np.ndarray) -> Analysis:
        """:class:`Analysis` of a waveform :meth:`prepare` made (up to the window)."""
        probs, dims = self.run_outputs([x])
        return self._analysis(
            probs[0],
            None if dims is None else dims[0],
            status=self.status(x, probs[0]),
            speech_seconds=x.shape[0] / SAMPLE_RATE,
        )

    def _analyse_long(self, blocks: Iterable[np.ndarray]) -> Analysis:
        """Speech segments of a long 16 kHz block stream, each classified, combined
        (:class:`LongInputs`); memory holds one segment and the first window."""
        window = round(self.long.window * SAMPLE_RATE)
        first: list[np.ndarray] = []
        kept = 0

        def keep_first(stream: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal kept
            for block in stream:
                if kept < window:
                    first.append(np.array(block[: window - kept], dtype=np.float32))
                    kept += first[-1].shape[0]
                yield block

        config = SegmenterConfig(max_segment=self.long.window)
        k = len(self.dimension_names)
        acc_p, acc_d = np.zeros(len(self.labels)), np.zeros(k)
        seconds, count = 0.0, 0
        for a, b, audio in speech_segments(keep_first(blocks), self.vad(), config):
            probs, dims = self.run_outputs([self.prepare(audio, SAMPLE_RATE)])
            w = (b - a) / SAMPLE_RATE
            acc_p += w * probs[0]
            if dims is not None:
                acc_d += w * dims[0]
            seconds += w
            count += 1
        if count == 0:  # no speech anywhere: the first window, said to be no speech
            x = self.prepare(np.concatenate(first), SAMPLE_RATE)
            probs, dims = self.run_outputs([x])
            return self._analysis(
                probs[0],
                None if dims is None else dims[0],
                status="no_speech",
                segments=0,
                speech_seconds=0.0,
            )
        probs = (acc_p / seconds).astype(np.float32)
        return self._analysis(
            probs,
            (acc_d / seconds).astype(np.float32) if k else None,
            status=self.confidence_status(probs),
            segments=count,
            speech_seconds=seconds,
        )

    def __repr__(self) -> str:
        return f"OnnxEmotionModel({str(self.path)!r}, labels={self.labels})"
