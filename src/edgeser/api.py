"""The Python API: train, evaluate, export and run a model in a few lines.

>>> import edgeser
>>> trained = edgeser.train(manifest, out=tmp / "run", **tiny)      # a TrainedModel
>>> exported = edgeser.export(trained, out=tmp / "run" / "onnx")    # model*.onnx + model.json
>>> model = edgeser.load(tmp / "run" / "onnx")                      # numpy + onnxruntime only
>>> result = model.predict(clip)                                    # .label, .probabilities
>>> result.label in model.labels, round(sum(result.probabilities.values()), 4)
(True, 1.0)
>>> for segment in model.stream(call):                              # VAD segments
...     print(round(segment.start, 2), round(segment.end, 2), segment.label in model.labels)
1.09 1.44 True
1.63 2.08 True
3.55 4.03 True
>>> evaluation = edgeser.evaluate(manifest, protocol="loso", out=tmp / "loso", folds=2, **tiny)
>>> evaluation.name, len(evaluation.folds), 0.0 <= evaluation.metrics["ua"] <= 1.0
('iemocap', 2, True)

(In these examples ``manifest`` is a small synthetic IEMOCAP manifest, ``tiny`` a config
that trains in seconds, ``model="light-sernet", epochs=1, ...``; ``clip`` and ``call``
are audio files, ``tmp`` a folder.)

Each function calls what the matching command calls (``edgeser train``, ``evaluate``,
``export``, ``predict``, ``stream``): the same files, the same numbers; each returns an
object (:class:`TrainedModel`, :class:`Evaluation`, :class:`Exported`,
:class:`~edgeser.runtime.loaded.EmotionModel`) rather than only paths. Training and
evaluation take config values by keyword (``epochs=2``, ``model="light-sernet"``; any
``edgeser train --<field>``, validated the same way), and manifests as CSV paths or pandas
DataFrames (written into ``out`` as ``manifest.csv`` and read back as a file is).

Only :func:`load` is in the light runtime install: the other functions import torch and
pandas when they are called, not when ``edgeser`` is imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeser.core.errors import EdgeserError

if TYPE_CHECKING:
    import pandas as pd

    from edgeser.config import TrainConfig
    from edgeser.runtime.loaded import EmotionModel

    #: A manifest: a CSV path (``edgeser prepare``'s output) or a DataFrame of its columns.
    Manifest = str | os.PathLike[str] | pd.DataFrame
    #: A run's config: a YAML file (``--config``), a TrainConfig, or values by name.
    ConfigSource = str | os.PathLike[str] | TrainConfig | Mapping[str, Any] | None

__all__ = ["Evaluation", "Exported", "TrainedModel", "evaluate", "export", "load", "train"]


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TrainedModel:
    """A trained model folder (``model.safetensors`` + ``model.json``): its ``config``, its
    ``labels``, its validation ``metrics`` (None without validation speakers) and ``meta``,
    the folder's ``model.json``. :meth:`export` makes the deployable model."""

    folder: Path
    config: TrainConfig
    labels: list[str]
    metrics: dict[str, Any] | None
    meta: dict[str, Any] = field(repr=False)

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> TrainedModel:
        """The trained model folder ``folder`` (as ``edgeser train`` writes it)."""
        from edgeser.config import TrainConfig
        from edgeser.training.checkpoint import load_weights

        _, meta = load_weights(Path(folder))
        try:
            config = TrainConfig.from_dict(meta["config"])
            labels = list(meta["labels"])
        except (KeyError, TypeError) as e:
            raise EdgeserError(f"{folder}: model.json is not an edgeser model ({e})") from None
        return cls(Path(folder), config, labels, meta.get("metrics"), meta)

    def export(self, out: str | os.PathLike[str], **options: Any) -> Exported:
        """:func:`export` this model into ``out``."""
        return export(self, out, **options)

    def __repr__(self) -> str:
        ua = (self.metrics or {}).get("ua")
        score = "" if ua is None else f", validation UA {ua:.3f}"
        return f"TrainedModel({str(self.folder)!r}, {self.config.model}{score})"


@dataclass(frozen=True)
class Evaluation:
    """What ``edgeser evaluate`` wrote into ``out``, read back from ``results.json``.

    ``metrics``: the headline figures (``wa``, ``ua``, ``macro_f1``, ``per_class``,
    ``confusion``): pooled over the folds for a protocol, the corpus's for a trained model;
    ``intervals``: their 95 % intervals (``ci95``); ``folds``: each fold's record (empty for
    a trained model); ``summary``: the whole block of the setting (mean and sd over folds,
    calibration ...); ``results``: the whole ``results.json``."""

    out: Path
    name: str
    metrics: dict[str, Any]
    intervals: dict[str, Any]
    folds: list[dict[str, Any]]
    summary: dict[str, Any] = field(repr=False)
    results: dict[str, Any] = field(repr=False)

    def __repr__(self) -> str:
        folds = f", {len(self.folds)} folds" if self.folds else ""
        return f"Evaluation({str(self.out)!r}, {self.name}{folds}, UA {self.metrics['ua']:.3f})"

    @property
    def results_json(self) -> Path:
        return self.out / "results.json"

    @property
    def report_md(self) -> Path:
        return self.out / "report.md"

    @property
    def predictions_csv(self) -> Path:
        """Every test utterance's prediction (for error analysis)."""
        sub = self.out / "loso" if "loso" in self.results else self.out
        return sub / "predictions.csv"

    @classmethod
    def read(cls, out: str | os.PathLike[str]) -> Evaluation:
        """The evaluation ``edgeser evaluate`` wrote into ``out``."""
        out = Path(out)
        try:
            results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise EdgeserError(f"{out}: no readable results.json ({e})") from None
        block = "loso" if "loso" in results else "cross_corpus"
        if not results.get(block):
            raise EdgeserError(f"{out / 'results.json'}: neither a loso nor a cross_corpus block")
        name, summary = next(iter(results[block].items()))
        metrics = summary["pooled"] if block == "loso" else summary["metrics"]
        return cls(
            out,
            name,
            metrics,
            summary.get("ci95", {}),
            list(summary.get("folds", [])),
            summary,
            results,
        )


@dataclass(frozen=True)
class Exported:
    """An exported model folder: ``paths`` (``{kind: file}``: ``float32``, ``int8``,
    ``int8_ort``, ``json`` ...) and ``card``, its ``model.json``. :meth:`load` runs it."""

    folder: Path
    paths: dict[str, Path]
    card: dict[str, Any] = field(repr=False)

    def load(self, **options: Any) -> EmotionModel:
        """:func:`load` this folder (``variant``, ``threads``, ``vad`` as there)."""
        return load(self.folder, **options)

    def __repr__(self) -> str:
        return f"Exported({str(self.folder)!r}, {sorted(p.name for p in self.paths.values())})"


# --------------------------------------------------------------------------- functions
def load(
    path: str | os.PathLike[str],
    *,
    variant: str | None = None,
    threads: int | None = None,
    vad: str = "silero",
) -> EmotionModel:
    """An exported model, ready to run (:func:`edgeser.runtime.load_model`): a folder
    (its float32 file unless ``variant`` names another: ``int8``, ``int8_ort`` ...) or one
    ``.onnx`` / ``.ort`` file with ``model.json`` beside it.

    >>> model = edgeser.load(model_dir)
    >>> model.labels
    ['neutral', 'happy', 'sad', 'angry']
    >>> result = model.predict(call)                  # a file, or an array and its rate
    >>> result.label, result.status, result.segments
    ('happy', 'ok', 1)
    >>> samples, rate = soundfile.read(call)
    >>> model.predict(samples, sample_rate=rate) == result
    True
    >>> [r.label for r in model.predict_batch([call, samples], sample_rate=rate)]
    ['happy', 'happy']
    >>> for segment in model.stream(call):            # edgeser stream's lines
    ...     print(segment.to_line())
    1.09 1.44 happy 1.00
    1.63 2.08 happy 1.00
    3.55 4.03 happy 1.00
    """
    from edgeser.runtime.loaded import load_model

    return load_model(path, variant=variant, threads=threads, vad=vad)


def train(
    manifests: Manifest | Sequence[Manifest],
    *,
    out: str | os.PathLike[str],
    config: ConfigSource = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> TrainedModel:
    """``edgeser train``: train on every row of ``manifests`` (validation: whole speakers
    of the first held out, ``val_speakers``), write ``out/model.safetensors`` +
    ``model.json`` and return the :class:`TrainedModel`.

    ``config``: a YAML file (``--config``), a :class:`~edgeser.config.TrainConfig` or a dict
    of values; ``overrides``: config values by name (``epochs=2``), applied over it.

    With ``trained`` from the module's example:

    >>> trained.config.model, trained.config.epochs, trained.labels
    ('light-sernet', 1, ['angry', 'happy', 'neutral', 'sad'])
    >>> trained.metrics == json.loads((trained.folder / "train.json").read_text())["metrics"]
    True
    >>> edgeser.train(manifest, out=tmp / "t", epoch=3)
    Traceback (most recent call last):
    edgeser.core.errors.EdgeserError: unknown config keys: epoch
    """
    from edgeser.experiments.runs import train_on_manifests

    out = Path(out)
    cfg = _config(config, overrides)
    paths = _manifest_paths(manifests, out)
    train_on_manifests(cfg, paths, out, cache_dir=cache_dir, progress=progress)
    return TrainedModel.read(out)


def evaluate(
    manifest: Manifest,
    protocol: str | None = None,
    *,
    out: str | os.PathLike[str],
    trained: TrainedModel | str | os.PathLike[str] | None = None,
    folds: int = 5,
    config: ConfigSource = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> Evaluation:
    """``edgeser evaluate``: with ``protocol="loso"`` (the default without ``trained``),
    group the corpus's sessions into ``folds`` speaker-disjoint folds and train and test a
    model on each (config as in :func:`train`); with ``trained`` (a :class:`TrainedModel`
    or its folder), evaluate that model on the corpus (``encoder=SOURCE``: the encoder to
    load instead of the one the folder records, as ``--encoder``; no other config value
    applies). Writes ``out/results.json`` and ``report.md`` and returns the
    :class:`Evaluation`.

    With ``trained`` from the module's example, on another corpus:

    >>> cross = edgeser.evaluate(ravdess, trained=trained, out=tmp / "cross")
    >>> cross.name, cross.folds, cross.metrics["confusion"] == cross.summary["metrics"]["confusion"]
    ('ravdess', [], True)
    >>> sorted(cross.intervals)
    ['level', 'macro_f1', 'method', 'n_resamples', 'ua', 'wa']
    >>> edgeser.evaluate(ravdess, protocol="cv", out=tmp / "cv")
    Traceback (most recent call last):
    edgeser.core.errors.EdgeserError: protocol must be 'loso', got 'cv'
    """
    from edgeser.experiments.runs import evaluate_loso, evaluate_model

    out = Path(out)
    if trained is not None:
        if protocol is not None:
            raise EdgeserError("give either trained= (a trained model) or protocol='loso'")
        source = overrides.pop("encoder", None)
        if overrides or config is not None:
            raise EdgeserError(
                f"config values ({', '.join(sorted(overrides)) or 'config='}) apply to a "
                "protocol's training; a trained model keeps its own"
            )
        folder = trained.folder if isinstance(trained, TrainedModel) else Path(trained)
        if not folder.is_dir():
            raise EdgeserError(f"trained={folder}: no such model folder")
        (corpus,) = _manifest_paths([manifest], out)
        evaluate_model(
            folder,
            corpus,
            out,
            cache_dir=cache_dir,
            progress=progress,
            encoder_source=source if source not in (None, "auto") else None,
        )
    else:
        if (protocol or "loso") != "loso":
            raise EdgeserError(f"protocol must be 'loso', got {protocol!r}")
        cfg = _config(config, overrides)
        (corpus,) = _manifest_paths([manifest], out)
        evaluate_loso(cfg, corpus, out, folds=folds, cache_dir=cache_dir, progress=progress)
    return Evaluation.read(out)


def export(
    trained: TrainedModel | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    variants: Sequence[str] = (),
    int8: bool = True,
    calibration: Sequence[str | os.PathLike[str]] | None = None,
    opset: int = 17,
    encoder: str | None = None,
) -> Exported:
    """``edgeser export``: a trained model (a :class:`TrainedModel` or its folder) to
    ``out/model.onnx`` (float32), ``model.int8.onnx`` and ``model.int8.ort`` (unless
    ``int8=False``; calibrated on ``calibration`` audio files or synthetic speech), the
    optional ``variants`` (``int8-fast``, ``float16``, ``float16-compute``) and
    ``model.json``. ``encoder``: the encoder to load instead of the one the folder records
    (``--encoder``).

    With ``exported`` from the module's example:

    >>> sorted(exported.paths)
    ['float32', 'int8', 'int8_ort', 'json', 'required_operators']
    >>> exported.card["model"], exported.load(variant="int8_ort").path.name
    ('light-sernet', 'model.int8.ort')
    >>> exported.load(variant="float16")
    Traceback (most recent call last):
    edgeser.core.errors.EdgeserError: ...: no 'float16' model file (model.json lists ...)
    """
    from edgeser.exporting.exporter import export_model
    from edgeser.runtime.card import read_model_card

    folder = trained.folder if isinstance(trained, TrainedModel) else Path(trained)
    paths = export_model(
        folder,
        out,
        int8=int8,
        calibration=None if calibration is None else [Path(c) for c in calibration],
        opset=opset,
        extra_variants=tuple(variants),
        encoder_source=encoder,
    )
    _, card = read_model_card(out)
    return Exported(Path(out), paths, card)


# --------------------------------------------------------------------------- helpers
def _config(config: ConfigSource, overrides: dict[str, Any]) -> TrainConfig:
    """The config of a run: ``config`` (a YAML file, a TrainConfig or a dict of values) with
    ``overrides``; a
    string value is parsed as on the command line (``epochs="2"``); unknown keys and bad
    values are one-line errors."""
    from edgeser.config import TrainConfig, load_config, parse_config_value

    if isinstance(config, Mapping):  # values by name, as a YAML file holds them
        config, overrides = None, {**config, **overrides}
    values = {
        k: parse_config_value(k, v) if isinstance(v, str) else v for k, v in overrides.items()
    }
    try:
        if isinstance(config, TrainConfig):
            return config.for_model(values.pop("model", config.model), **values)
        return load_config(config, values)
    except TypeError as e:  # a value of the wrong type met a comparison
        raise EdgeserError(f"config: bad value type ({e})") from None


def _manifest_paths(
    manifests: Manifest | Sequence[Manifest], out: Path
) -> list[str | os.PathLike[str]]:
    """Manifest CSV paths for ``manifests``: a DataFrame is written into ``out``
    (``manifest.csv``; ``manifest-2.csv`` ... when there are several) to be read and
    checked as a file is."""
    from edgeser.data.manifest import write_manifest

    items = (
        [manifests]
        if isinstance(manifests, str | os.PathLike) or hasattr(manifests, "to_csv")
        else list(manifests)
    )
    if not items:
        raise EdgeserError("no manifest given")
    frames = [i for i, m in enumerate(items) if hasattr(m, "to_csv")]
    paths: list[str | os.PathLike[str]] = []
    for i, m in enumerate(items):
        if hasattr(m, "to_csv"):
            name = "manifest.csv" if len(frames) == 1 else f"manifest-{frames.index(i) + 1}.csv"
            paths.append(write_manifest(m, out / name))
        elif isinstance(m, str | os.PathLike):
            paths.append(m)
        else:
            raise EdgeserError(
                f"a manifest is a CSV path or a pandas DataFrame, not {type(m).__name__}"
            )
    return paths
