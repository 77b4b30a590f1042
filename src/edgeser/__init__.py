"""edgeser: speech emotion recognition small enough for a phone.

Leak-free evaluation (leave-one-session-out, speaker-disjoint validation),
cross-corpus training and testing, 8-bit ONNX export and VAD-driven streaming,
reproducing the DistilHuBERT mobile-SER method.

The public API is re-exported here over the implementation sub-packages. Names
are resolved lazily so that ``import edgeser`` on the light runtime install
(numpy, soundfile, soxr, onnxruntime) never pulls in pandas or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # core
    "SAMPLE_RATE": "edgeser.core.audio",
    "audio_info": "edgeser.core.audio",
    "load_audio": "edgeser.core.audio",
    "resample": "edgeser.core.audio",
    "to_mono": "edgeser.core.audio",
    "AudioError": "edgeser.core.errors",
    "CorpusError": "edgeser.core.errors",
    "EdgeserError": "edgeser.core.errors",
    "SplitError": "edgeser.core.errors",
    "LABELS": "edgeser.core.labels",
    "FrontEnd": "edgeser.core.preprocess",
    "peak_normalize": "edgeser.core.preprocess",
    "preemphasis": "edgeser.core.preprocess",
    "preprocess": "edgeser.core.preprocess",
    "trim_silence": "edgeser.core.preprocess",
    "AugmentConfig": "edgeser.core.augment",
    "Augmenter": "edgeser.core.augment",
    "COLUMNS": "edgeser.core.manifest",
    "read_manifest": "edgeser.core.manifest",
    "validate_manifest": "edgeser.core.manifest",
    "validate_split": "edgeser.core.manifest",
    "write_manifest": "edgeser.core.manifest",
    # corpora
    "prepare": "edgeser.corpora",
    "prepare_iemocap": "edgeser.corpora",
    "prepare_cremad": "edgeser.corpora",
    "prepare_ravdess": "edgeser.corpora",
    "prepare_csv": "edgeser.corpora",
    # synthetic corpora
    "synthesize_corpus": "edgeser.synth",
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
