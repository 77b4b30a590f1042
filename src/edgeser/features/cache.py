"""The feature cache: one safetensors file per (utterance, view, feature kind).

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

Feature kinds: :mod:`edgeser.features.kinds`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save_file

from edgeser.audio.augment import AugmentConfig
from edgeser.audio.frontend import FrontEnd
from edgeser.core.io import atomic_path
from edgeser.features.kinds import CACHED_KINDS, FeatureKind

log = logging.getLogger(__name__)

_STD_EPS = 1e-6


def view_seed(aug_seed: int, utt_id: str, view: int) -> int:
    """The augmentation seed of ``view`` (1-based) of an utterance, stable across runs."""
    return (aug_seed * 1_000_003 + zlib.crc32(utt_id.encode("utf-8")) * 101 + view) % (2**31)


@dataclass(frozen=True)
class Item:
    """One unit of extraction work: an utterance's clean version (view 0) or a view."""

    utt_id: str
    path: str
    view: int


class FeatureStore:
    """Cache of encoder features on disk (see the module docstring for the layout)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        encoder_identity: str,
        *,
        kind: str = "pooled",
        precision: str = "fp32",
        front_end: FrontEnd | None = None,
        augment: AugmentConfig | None = None,
        aug_seed: int = 0,
    ) -> None:
        if kind not in CACHED_KINDS:
            raise ValueError(f"feature kind must be one of {', '.join(CACHED_KINDS)}")
        kind = FeatureKind(kind)
        self.root = Path(root)
        self.encoder_identity = encoder_identity
        self.kind = kind
        self.precision = precision
        self.front_end = front_end or FrontEnd()
        self.augment = augment or AugmentConfig()
        self.aug_seed = aug_seed
        self.folder = self.root / encoder_identity / kind

    def key(self, item: Item) -> str:
        """The cache key of an item (a JSON string; its hash names the file)."""
        try:
            st = os.stat(item.path)
            stamp = [st.st_size, st.st_mtime_ns]
        except OSError:
            stamp = [None, None]
        parts: dict[str, Any] = {
            "path": os.path.abspath(item.path),
            "file": stamp,
            "encoder": self.encoder_identity,
            "precision": self.precision,
            "kind": self.kind,
            "front_end": self.front_end.key(),
            "view": item.view,
        }
        if item.view > 0:
            parts["augment"] = self.augment.key()
            parts["seed"] = view_seed(self.aug_seed, item.utt_id, item.view)
        return json.dumps(parts, sort_keys=True)

    def path(self, key: str) -> Path:
        h = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.folder / h[:2] / f"{h}.safetensors"

    def get(self, item: Item) -> np.ndarray | None:
        """The cached array of ``item``, or ``None`` if absent; corrupt entries are removed."""
        key = self.key(item)
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with open(p, "rb") as fh:
                data = fh.read()
            arrays = load(data)
            meta = _read_metadata(data)
            arr = arrays["x"]
            if meta.get("key") != key or not np.all(np.isfinite(arr)):
                raise ValueError("stale or corrupt entry")
        except (SafetensorError, ValueError, KeyError, OSError, json.JSONDecodeError) as e:
            log.warning("feature cache: rebuilding corrupt entry %s (%s)", p.name, e)
            p.unlink(missing_ok=True)
            return None
        return arr

    def put(self, item: Item, array: np.ndarray) -> None:
        """Store ``array`` for ``item`` atomically."""
        key = self.key(item)
        p = self.path(key)
        with atomic_path(p) as tmp:
            save_file({"x": np.ascontiguousarray(array)}, str(tmp), metadata={"key": key})


def _read_metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return header.get("__metadata__", {})
