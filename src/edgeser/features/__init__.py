"""Encode each utterance once and cache what training needs.

The encoder is frozen, so its output for a given (audio file, pre-processing,
augmentation draw) never changes: :func:`extract` encodes the clean version of
every utterance and ``K`` augmented *views* of every training utterance once, and
training then draws one view per utterance per epoch.

Cache layout: one safetensors file per (utterance, view, feature kind) under
``<cache>/<encoder identity>/<kind>/<hash[:2]>/<hash>.safetensors``. The hash
covers the audio file (path, size, modification time), the encoder identity and
precision, the front-end settings and, for views, the augmentation settings,
view index and seed, so a changed file or setting never hits a stale entry.
Entries are written atomically; an entry that cannot be read back, or whose
stored key or shapes do not match, is deleted and rebuilt.

Files: :mod:`~edgeser.features.kinds` (what is stored and trained on),
:mod:`~edgeser.features.cache` (the store), :mod:`~edgeser.features.extract` (encoding).
"""

from edgeser.features.cache import FeatureStore, Item, view_seed
from edgeser.features.extract import extract, load_waveform, summarise
from edgeser.features.kinds import CACHED_KINDS, FeatureKind, feature_kind

__all__ = ["CACHED_KINDS", "FeatureKind", "FeatureStore", "Item", "extract", "feature_kind",
           "load_waveform", "summarise", "view_seed"]
