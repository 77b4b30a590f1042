"""Encode each utterance once and cache what training needs.

The encoder is frozen, so each utterance and augmented view is encoded once and
cached (the layout and keys: :mod:`~edgeser.features.cache`).

Files: :mod:`~edgeser.features.kinds` (what is stored and trained on),
:mod:`~edgeser.features.cache` (the store), :mod:`~edgeser.features.extract` (encoding).
"""

from edgeser.features.cache import FeatureStore, Item, view_seed
from edgeser.features.extract import extract, load_waveform, summarise
from edgeser.features.kinds import CACHED_KINDS, FeatureKind, feature_kind

__all__ = [
    "CACHED_KINDS",
    "FeatureKind",
    "FeatureStore",
    "Item",
    "extract",
    "feature_kind",
    "load_waveform",
    "summarise",
    "view_seed",
]
