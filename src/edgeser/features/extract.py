"""Encode each utterance (and each augmented view of a training utterance) once, through
the feature cache (:mod:`edgeser.features.cache`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch

from edgeser.audio.augment import Augmenter
from edgeser.audio.frontend import FrontEnd
from edgeser.audio.io import SAMPLE_RATE, load_audio
from edgeser.core.progress import progress_bar
from edgeser.features.cache import FeatureStore, Item, view_seed
from edgeser.features.kinds import FeatureKind
from edgeser.models.registry import FeatureEncoder

log = logging.getLogger(__name__)

_STD_EPS = 1e-6


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
    if kind == FeatureKind.POOLED:  # hidden [L, T, D] -> [L, 2D]
        h = hidden.float()
        mean = h.mean(dim=1)
        std = torch.sqrt(h.var(dim=1, unbiased=False) + _STD_EPS)
        return torch.cat([mean, std], dim=-1).numpy().astype(np.float32)
    if kind in (FeatureKind.MFCC, FeatureKind.FUNCTIONALS):
        return hidden.float().numpy()
    return hidden.to(torch.float16).numpy()


def extract(
    manifest: pd.DataFrame,
    encoder: FeatureEncoder,
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
                arr = summarise(store.kind, f) if store.kind != FeatureKind.CONV else \
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


def _encode(encoder: FeatureEncoder, kind: str, waves: list[np.ndarray]) -> list[torch.Tensor]:
    if kind == FeatureKind.CONV:
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
