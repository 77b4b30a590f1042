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

Feature kinds:

* ``pooled``: per-layer mean and standard deviation over frames, ``[L, 2D]``
  float32 (serves ``mean`` and ``meanstd`` pooling heads);
* ``frames``: all hidden states ``[L, T, D]`` float16 (attention pooling);
* ``conv``: the convolutional feature extractor's output ``[T, 512]`` float16
  (fine-tuning the transformer layers with the extractor frozen);
* ``mfcc``: LIGHT-SERNET's fixed-window MFCCs ``[T, 40]`` float32 (the "encoder" is
  :class:`edgeser.models.lightsernet.MFCCFrontEnd`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.numpy import load, save_file

from edgeser.audio.augment import AugmentConfig, Augmenter
from edgeser.audio.frontend import FrontEnd
from edgeser.audio.io import SAMPLE_RATE, load_audio
from edgeser.core.io import atomic_path
from edgeser.core.progress import progress_bar

log = logging.getLogger(__name__)

KINDS = ("pooled", "frames", "conv", "mfcc")
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
        if kind not in KINDS:
            raise ValueError(f"feature kind must be one of {', '.join(KINDS)}")
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


def load_waveform(
    item: Item, front_end: FrontEnd, augmenter: Augmenter | None, aug_seed: int
) -> np.ndarray:
    """Load, pre-process and (for views) augment one item at 16 kHz."""
    return _load_item(item, front_end, augmenter, aug_seed)[0]


def _load_item(
    item: Item, front_end: FrontEnd, augmenter: Augmenter | None, aug_seed: int
) -> tuple[np.ndarray, bool]:
    """``(waveform, is_clean)``: ``is_clean`` when a view's draw left the audio unchanged
    (every transform skipped), so its features are the clean ones."""
    wave = front_end(load_audio(item.path, SAMPLE_RATE), SAMPLE_RATE)
    if item.view == 0:
        return wave, False
    if augmenter is None:
        raise ValueError("a view needs an augmenter")
    out = augmenter(wave, SAMPLE_RATE, seed=view_seed(aug_seed, item.utt_id, item.view))
    return out, bool(np.array_equal(out, wave))


def summarise(kind: str, hidden: torch.Tensor) -> np.ndarray:
    """Turn one utterance's encoder output into the array stored for ``kind``."""
    if kind == "pooled":  # hidden [L, T, D] -> [L, 2D]
        h = hidden.float()
        mean = h.mean(dim=1)
        std = torch.sqrt(h.var(dim=1, unbiased=False) + _STD_EPS)
        return torch.cat([mean, std], dim=-1).numpy().astype(np.float32)
    if kind == "mfcc":
        return hidden.float().numpy()
    return hidden.to(torch.float16).numpy()


def extract(
    manifest: pd.DataFrame,
    encoder: Any,
    store: FeatureStore,
    *,
    views: Sequence[int] | dict[str, Sequence[int]] = (0,),
    batch_seconds: float = 60.0,
    progress: bool = True,
    desc: str = "encoding",
) -> dict[tuple[str, int], np.ndarray]:
    """Features of every ``(utt_id, view)``, from the cache or by encoding now.

    ``views`` lists the views to produce for every row, or maps ``utt_id`` to its
    views (e.g. only training utterances get augmented views). Encoding runs in
    batches of about ``batch_seconds`` of audio, sorted by length; audio loading
    and augmentation of the next batch overlap with encoding of the current one.
    Unreadable audio stops extraction with an :class:`AudioError` naming the file.
    """
    items: list[Item] = []
    for uid, path in zip(manifest["utt_id"].astype(str), manifest["path"].astype(str),
                         strict=True):
        vs = views.get(uid, (0,)) if isinstance(views, dict) else views
        items.extend(Item(uid, path, int(v)) for v in vs)
    out: dict[tuple[str, int], np.ndarray] = {}
    todo: list[Item] = []
    for it in items:
        hit = store.get(it)
        if hit is None:
            todo.append(it)
        else:
            out[(it.utt_id, it.view)] = hit
    if todo:
        log.info("%s: %d of %d feature entries cached, encoding %d", desc,
                 len(items) - len(todo), len(items), len(todo))
    augmenter = Augmenter(store.augment) if any(it.view > 0 for it in todo) else None
    duration = dict(zip(manifest["utt_id"].astype(str), manifest["duration"].astype(float),
                        strict=True))
    todo.sort(key=lambda it: duration.get(it.utt_id, 0.0))
    batches = list(_batches(todo, duration, batch_seconds))

    requested = {(it.utt_id, it.view) for it in items}

    def load_batch(batch: list[Item]) -> list[tuple[np.ndarray, bool]]:
        return [_load_item(it, store.front_end, augmenter, store.aug_seed) for it in batch]

    as_clean: list[Item] = []  # views equal to the clean audio, filled in at the end

    with progress_bar(total=len(todo), desc=desc, enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load_batch, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            assert pending is not None
            loaded = pending.result()
            pending = pool.submit(load_batch, batches[i + 1]) if i + 1 < len(batches) else None
            skip = [same and (it.utt_id, 0) in requested for it, (_, same) in zip(batch, loaded,
                                                                                 strict=True)]
            as_clean += [it for it, s in zip(batch, skip, strict=True) if s]
            batch = [it for it, s in zip(batch, skip, strict=True) if not s]
            waves = [w for (w, _), s in zip(loaded, skip, strict=True) if not s]
            feats = _encode(encoder, store.kind, waves) if waves else []
            for it, f in zip(batch, feats, strict=True):
                arr = summarise(store.kind, f) if store.kind != "conv" else \
                    f.to(torch.float16).numpy()
                store.put(it, arr)
                out[(it.utt_id, it.view)] = arr
            bar.update(len(batch) + sum(skip))
    for it in as_clean:
        arr = out[(it.utt_id, 0)]
        store.put(it, arr)
        out[(it.utt_id, it.view)] = arr
    if as_clean:
        log.info("%s: %d views drew no transform and reuse the clean features", desc,
                 len(as_clean))
    return out


def _encode(encoder: Any, kind: str, waves: list[np.ndarray]) -> list[torch.Tensor]:
    if kind == "conv":
        return [encoder.conv_features(w) for w in waves]
    return encoder.encode(waves)


def _batches(
    items: Sequence[Item], duration: dict[str, float], batch_seconds: float
) -> Iterator[list[Item]]:
    batch: list[Item] = []
    total = 0.0
    for it in items:
        d = duration.get(it.utt_id, 1.0)
        if batch and total + d > batch_seconds:
            yield batch
            batch, total = [], 0.0
        batch.append(it)
        total += d
    if batch:
        yield batch


__all__ = ["KINDS", "FeatureStore", "Item", "extract", "load_waveform", "summarise", "view_seed"]
