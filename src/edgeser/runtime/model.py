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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeser.audio.frontend import trim_bounds
from edgeser.audio.io import SAMPLE_RATE, audio_info, load_audio, resample, to_mono
from edgeser.core.errors import AudioError, EdgeserError
from edgeser.runtime.card import GRAPH_METADATA, graph_metadata, read_model_card
from edgeser.runtime.session import onnx_session, pad_batch

log = logging.getLogger(__name__)

#: Sample rates an input may have; outside this range resampling is refused as absurd.
MIN_INPUT_RATE = 1_000
MAX_INPUT_RATE = 768_000

Prediction = tuple[str, dict[str, float]]


@dataclass(frozen=True)
class Analysis:
    """Everything the model says of one utterance: the label, the class probabilities and,
    for a dimensional model, ``{dimension: value on [0, 1]}`` (else ``None``)."""

    label: str
    probabilities: dict[str, float]
    dimensions: dict[str, float] | None = None


@dataclass(frozen=True)
class TrimSettings:
    """The silence trim applied outside the graph (``librosa.effects.trim`` semantics)."""

    top_db: float = 20.0
    frame_length: int = 2048
    hop_length: int = 512


def check_sample_rate(sample_rate: int, what: str = "input") -> int:
    """Return ``sample_rate`` as an int, or raise :class:`AudioError` if it cannot be resampled."""
    try:
        sr = int(sample_rate)
    except (TypeError, ValueError):
        raise AudioError(f"{what}: invalid sample rate {sample_rate!r}") from None
    if not MIN_INPUT_RATE <= sr <= MAX_INPUT_RATE:
        raise AudioError(f"{what}: cannot resample from {sample_rate} Hz (supported: "
                         f"{MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz)")
    return sr


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
    return TrimSettings(top_db=float(trim.get("top_db", 20.0)),
                        frame_length=int(trim.get("frame_length", 2048)),
                        hop_length=int(trim.get("hop_length", 512)))


def prepare_waveform(wave: np.ndarray, sample_rate: int,
                     trim: TrimSettings | None) -> np.ndarray:
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
        start, end = trim_bounds(x, top_db=trim.top_db,
                                 frame_length=trim.frame_length,
                                 hop_length=trim.hop_length)
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
    the model folder. ``threads`` sets onnxruntime's intra-op threads (CPU only).
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 2) -> None:
        self.path, self.card = read_model_card(path)
        self.labels: list[str] = list(self.card["labels"])
        self.sample_rate: int = SAMPLE_RATE
        self.min_samples: int = max(1, int(self.card.get("min_samples", 400)))
        self.trim: TrimSettings | None = trim_settings(self.card)
        #: Names of the dimensional output (empty: the graph has none).
        self.dimension_names: list[str] = list(
            (self.card.get("dimensions") or {}).get("names") or [])

        try:
            self.session = onnx_session(self.path, threads=max(1, int(threads)))
        except Exception as e:  # onnxruntime raises its own exception types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EdgeserError(f"{self.path} is not an edgeser model: not a loadable ONNX "
                               f"file ({msg[:200]})") from None
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
                raise bad(f"input {name!r} is {ins[name].type} {ins[name].shape}, expected "
                          f"{dtype} of rank {rank}")
        out = outs.get("probabilities")
        if out is None:
            raise bad(f"graph outputs {sorted(outs)}, expected 'probabilities'")
        if out.type != "tensor(float)" or len(out.shape) != 2:
            raise bad(f"output 'probabilities' is {out.type} {out.shape}, expected float "
                      f"[batch, classes]")
        n = out.shape[1]
        if isinstance(n, int) and n != len(self.labels):
            raise bad(f"the graph has {n} classes but model.json lists {len(self.labels)} "
                      f"labels")
        stamped = self.session.get_modelmeta().custom_metadata_map
        if all(k in stamped for k in GRAPH_METADATA):
            want = graph_metadata(self.labels, self.dimension_names)
            for key in GRAPH_METADATA:
                if json.loads(stamped[key]) != json.loads(want[key]):
                    raise bad(f"model.json's {key.split('.')[1]} {json.loads(want[key])} are not "
                              f"the graph's {json.loads(stamped[key])} (the order matters: "
                              "model.json belongs to another export)")
        else:
            log.debug("%s: no labels in the graph's metadata (exported before edgeser stamped "
                      "them): model.json's order is taken as is", self.path)
        dims = outs.get("dimensions")
        if (dims is None) != (not self.dimension_names):
            raise bad("model.json and the graph disagree on the 'dimensions' output")
        if dims is not None:
            k = dims.shape[1] if len(dims.shape) == 2 else None
            if dims.type != "tensor(float)" or k != len(self.dimension_names):
                raise bad(f"output 'dimensions' is {dims.type} {dims.shape}, expected float "
                          f"[batch, {len(self.dimension_names)}]")

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
            return (np.zeros((0, len(self.labels)), dtype=np.float32),
                    np.zeros((0, k), dtype=np.float32) if k else None)
        names = ["probabilities", "dimensions"] if k else ["probabilities"]
        outs = self.session.run(names, pad_batch(waves, self.min_samples))
        probs = np.asarray(outs[0], dtype=np.float32)
        return probs, (np.asarray(outs[1], dtype=np.float32) if k else None)

    def _named(self, row: np.ndarray) -> Prediction:
        probs = {lab: float(p) for lab, p in zip(self.labels, row, strict=True)}
        return self.labels[int(np.argmax(row))], probs

    def _analysis(self, row: np.ndarray, dims: np.ndarray | None) -> Analysis:
        label, probs = self._named(row)
        named = (None if dims is None else
                 {d: float(v) for d, v in zip(self.dimension_names, dims, strict=True)})
        return Analysis(label, probs, named)

    def predict_waveform(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Prediction:
        """Classify one waveform: ``(label, {label: probability})``."""
        return self._named(self.run([self.prepare(wave, sample_rate)])[0])

    def analyse_waveform(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Analysis:
        """Label, probabilities and (for a dimensional model) dimensions of one waveform."""
        probs, dims = self.run_outputs([self.prepare(wave, sample_rate)])
        return self._analysis(probs[0], None if dims is None else dims[0])

    def predict_batch(
        self, waves: Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE, *,
        batch_size: int = 16,
    ) -> list[Prediction]:
        """Classify several waveforms (all at ``sample_rate``), ``batch_size`` per graph run.

        Items are grouped by length to limit padding; results come back in input order.
        """
        prepared = [self.prepare(w, sample_rate) for w in waves]
        order = sorted(range(len(prepared)), key=lambda i: len(prepared[i]))
        out: list[Prediction | None] = [None] * len(prepared)
        step = max(1, int(batch_size))
        for k in range(0, len(order), step):
            idx = order[k: k + step]
            for i, row in zip(idx, self.run([prepared[i] for i in idx]), strict=True):
                out[i] = self._named(row)
        return [p for p in out if p is not None]

    def predict_file(self, path: str | os.PathLike[str]) -> Prediction:
        """Read any soundfile format (any rate, any channel count) and classify it."""
        a = self.analyse_file(path)
        return a.label, a.probabilities

    def analyse_file(self, path: str | os.PathLike[str]) -> Analysis:
        """:meth:`predict_file` with the dimensional output (:class:`Analysis`)."""
        wave, _ = read_prepared(path, self.trim)
        probs, dims = self.run_outputs([wave])
        return self._analysis(probs[0], None if dims is None else dims[0])

    def __repr__(self) -> str:
        return f"OnnxEmotionModel({str(self.path)!r}, labels={self.labels})"

