"""edgeser: speech emotion recognition small enough for a phone.

Leak-free evaluation (leave-one-session-out, speaker-disjoint validation),
cross-corpus training and testing, 8-bit ONNX export and VAD-driven streaming,
reproducing the DistilHuBERT mobile-SER method.

The public API is re-exported here over the implementation sub-packages: first of all
``edgeser.train``, ``evaluate``, ``export`` and ``load`` (:mod:`edgeser.api`). Names are
resolved lazily so that ``import edgeser`` on the light runtime install (numpy,
soundfile, soxr, onnxruntime) never pulls in pandas or torch, and ``edgeser.load`` runs
there.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the front door: train, evaluate, export, load (edgeser.api)
    "train": "edgeser.api",
    "evaluate": "edgeser.api",
    "export": "edgeser.api",
    "load": "edgeser.api",
    "TrainedModel": "edgeser.api",
    "Evaluation": "edgeser.api",
    "Exported": "edgeser.api",
    "EmotionModel": "edgeser.runtime.loaded",
    # core
    "SAMPLE_RATE": "edgeser.audio.io",
    "audio_info": "edgeser.audio.io",
    "load_audio": "edgeser.audio.io",
    "resample": "edgeser.audio.io",
    "to_mono": "edgeser.audio.io",
    "AudioError": "edgeser.core.errors",
    "CorpusError": "edgeser.core.errors",
    "EdgeserError": "edgeser.core.errors",
    "SplitError": "edgeser.core.errors",
    "LABELS": "edgeser.data.labels",
    "FrontEnd": "edgeser.audio.frontend",
    "peak_normalize": "edgeser.audio.frontend",
    "preemphasis": "edgeser.audio.frontend",
    "preprocess": "edgeser.audio.frontend",
    "trim_silence": "edgeser.audio.frontend",
    "AugmentConfig": "edgeser.audio.augment",
    "Augmenter": "edgeser.audio.augment",
    "COLUMNS": "edgeser.data.manifest",
    "read_manifest": "edgeser.data.manifest",
    "validate_manifest": "edgeser.data.manifest",
    "validate_split": "edgeser.split.validate",
    "write_manifest": "edgeser.data.manifest",
    # corpora
    "prepare": "edgeser.data.recipes",
    "prepare_iemocap": "edgeser.data.recipes",
    "prepare_cremad": "edgeser.data.recipes",
    "prepare_ravdess": "edgeser.data.recipes",
    "prepare_csv": "edgeser.data.recipes",
    # synthetic corpora
    "synthesize_corpus": "edgeser.data.synth",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeser' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
