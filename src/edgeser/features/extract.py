"""Encode each utterance (and each augmented view of a training utterance) once, through
the feature cache (:mod:`edgeser.features.cache`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch

from edgeser.audio.augment import Augmenter
from edgeser.audio.frontend import FrontEnd
from edgeser.audio.io import SAMPLE_RATE, decode_audio, load_audio
from edgeser.core.executor import ExecutorSpec, current_executor
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
    item: Item,
    front_end: FrontEnd,
    augmenter: Augmenter | None,
    aug_seed: int,
    data: bytes | None = None,
) -> tuple[np.ndarray, bool]:
    """``(waveform, is_clean)``: ``is_clean`` when a view's draw left the audio unchanged
    (every transform skipped), so its features are the clean ones. ``data``: the file's
    bytes, read by the process that holds the file (else the file is read here)."""
    raw = (
        load_audio(item.path, SAMPLE_RATE)
        if data is None
        else decode_audio(data, item.path, SAMPLE_RATE)
    )
    wave = front_end(raw, SAMPLE_RATE)
    if item.view == 0:
        return wave, False
    if augmenter is None:
        raise ValueError("a view needs an augmenter")
    out = augmenter(wave, SAMPLE_RATE, seed=view_seed(aug_seed, item.utt_id, item.view))
    return out, bool(np.array_equal(out, wave))


class BatchEncoder:
    """Loads and encodes one batch of items: the one code path of every executor.

    :meth:`load` reads, pre-processes and augments a batch's audio; :meth:`encode` runs the
    encoder on it and summarises each output as the cache stores it. A view whose draw left
    the audio unchanged, and whose clean version is also requested (``reuse_clean``), is not
    encoded: its result is ``None`` and the caller stores the clean features for it.
    Picklable (the Ray executor ships it to its actors; the augmenter is rebuilt there).
    """

    def __init__(self, store: FeatureStore, *, with_views: bool) -> None:
        self.kind = FeatureKind(store.kind)
        self.front_end = store.front_end
        self.augment = store.augment if with_views else None
        self.aug_seed = store.aug_seed
        self._augmenter: Augmenter | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_augmenter": None}

    def load(
        self, batch: Sequence[Item], audio: dict[str, bytes] | None = None
    ) -> list[tuple[np.ndarray, bool]]:
        """``(waveform, is_clean)`` of every item; ``audio``: file bytes by path."""
        if self.augment is not None and self._augmenter is None:
            self._augmenter = Augmenter(self.augment)
        return [
            _load_item(
                it,
                self.front_end,
                self._augmenter,
                self.aug_seed,
                None if audio is None else audio[it.path],
            )
            for it in batch
        ]

    def encode(
        self,
        encoder: FeatureEncoder,
        batch: Sequence[Item],
        loaded: Sequence[tuple[np.ndarray, bool]],
        reuse_clean: Sequence[bool],
    ) -> list[np.ndarray | None]:
        """The cached array of every item of ``batch`` (``None``: reuses the clean one)."""
        skip = [same and r for (_, same), r in zip(loaded, reuse_clean, strict=True)]
        waves = [w for (w, _), s in zip(loaded, skip, strict=True) if not s]
        feats = iter(_encode(encoder, self.kind, waves) if waves else [])
        out: list[np.ndarray | None] = []
        for s in skip:
            if s:
                out.append(None)
                continue
            out.append(summarise(self.kind, next(feats)))
        return out


def _pooled(hidden: torch.Tensor) -> np.ndarray:
    """Hidden states ``[L, T, D]`` -> per-layer mean ‖ std over frames ``[L, 2D]`` float32."""
    h = hidden.float()
    mean = h.mean(dim=1)
    std = torch.sqrt(h.var(dim=1, unbiased=False) + _STD_EPS)
    return torch.cat([mean, std], dim=-1).numpy().astype(np.float32)


def _float32(hidden: torch.Tensor) -> np.ndarray:
    return hidden.float().numpy()


def _float16(hidden: torch.Tensor) -> np.ndarray:
    return hidden.to(torch.float16).numpy()


def _hidden_states(encoder: FeatureEncoder, waves: list[np.ndarray]) -> list[torch.Tensor]:
    return encoder.encode(waves)


def _conv_outputs(encoder: FeatureEncoder, waves: list[np.ndarray]) -> list[torch.Tensor]:
    """The convolutional feature extractor's outputs ``[T, 512]`` (fine-tuning)."""
    return [encoder.conv_features(w) for w in waves]


#: How each cached kind's features are made: kind -> (encode a batch of pre-processed
#: waves, turn one output into the array the cache stores).
MAKERS: dict[FeatureKind, tuple[Callable[..., list[torch.Tensor]], Callable[..., np.ndarray]]] = {
    FeatureKind.POOLED: (_hidden_states, _pooled),
    FeatureKind.FRAMES: (_hidden_states, _float16),
    FeatureKind.CONV: (_conv_outputs, _float16),
    FeatureKind.MFCC: (_hidden_states, _float32),
    FeatureKind.FUNCTIONALS: (_hidden_states, _float32),
}


def summarise(kind: str, hidden: torch.Tensor) -> np.ndarray:
    """Turn one utterance's encoder output into the array stored for ``kind``."""
    return MAKERS[FeatureKind(kind)][1](hidden)


def extract(
    manifest: pd.DataFrame,
    encoder: FeatureEncoder,
    store: FeatureStore,
    *,
    views: Sequence[int] | dict[str, Sequence[int]] = (0,),
    batch_seconds: float = 60.0,
    progress: bool = True,
    desc: str = "encoding",
    executor: ExecutorSpec | None = None,
) -> dict[tuple[str, int], np.ndarray]:
    """Features of every ``(utt_id, view)``, from the cache or by encoding now.

    ``views`` lists the views to produce for every row, or maps ``utt_id`` to its
    views (e.g. only training utterances get augmented views). Encoding runs in
    batches of about ``batch_seconds`` of audio, sorted by length; audio loading
    and augmentation of the next batch overlap with encoding of the current one.
    Unreadable audio stops extraction with an :class:`AudioError` naming the file.

    ``executor`` (default: :func:`~edgeser.core.executor.current_executor`, ``local``
    unless ``--executor`` says otherwise) decides where the batches are encoded: here, or
    by a pool of Ray actors (:mod:`edgeser.features.distributed`). Batches, their order of
    items and the arithmetic are the same, and this process writes every cache entry as its
    batch comes back, so an interrupted run keeps what was finished, and a run on either
    executor resumes the other's.
    """
    items: list[Item] = []
    for uid, path in zip(manifest["utt_id"].astype(str), manifest["path"].astype(str), strict=True):
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
        log.info(
            "%s: %d of %d feature entries cached, encoding %d",
            desc,
            len(items) - len(todo),
            len(items),
            len(todo),
        )
    duration = dict(
        zip(manifest["utt_id"].astype(str), manifest["duration"].astype(float), strict=True)
    )
    todo.sort(key=lambda it: duration.get(it.utt_id, 0.0))
    batches = list(_batches(todo, duration, batch_seconds))
    requested = {(it.utt_id, it.view) for it in items}
    reuse = [[it.view > 0 and (it.utt_id, 0) in requested for it in b] for b in batches]
    job = BatchEncoder(store, with_views=any(it.view > 0 for it in todo))
    spec = current_executor() if executor is None else executor
    if spec.is_ray and batches:
        from edgeser.features.distributed import ray_batches

        results = ray_batches(encoder, job, batches, reuse, spec)
    else:
        results = _local_batches(encoder, job, batches, reuse)

    as_clean: list[Item] = []  # views equal to the clean audio, filled in at the end
    with (
        progress_bar(total=len(todo), desc=desc, enabled=progress) as bar,
        contextlib.closing(results),
    ):
        for index, arrays in results:
            batch = batches[index]
            for it, arr in zip(batch, arrays, strict=True):
                if arr is None:
                    as_clean.append(it)
                    continue
                store.put(it, arr)
                out[(it.utt_id, it.view)] = arr
            bar.update(len(batch))
    for it in as_clean:
        arr = out[(it.utt_id, 0)]
        store.put(it, arr)
        out[(it.utt_id, it.view)] = arr
    if as_clean:
        log.info("%s: %d views drew no transform and reuse the clean features", desc, len(as_clean))
    # one order whatever was cached and wherever it was encoded
    return {(it.utt_id, it.view): out[(it.utt_id, it.view)] for it in items}


def _local_batches(
    encoder: FeatureEncoder,
    job: BatchEncoder,
    batches: Sequence[list[Item]],
    reuse: Sequence[list[bool]],
) -> Iterator[tuple[int, list[np.ndarray | None]]]:
    """``(batch index, arrays)`` in order, encoded here; the audio of the next batch is
    loaded (and augmented) while the current one is encoded."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(job.load, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            assert pending is not None
            loaded = pending.result()
            pending = pool.submit(job.load, batches[i + 1]) if i + 1 < len(batches) else None
            yield i, job.encode(encoder, batch, loaded, reuse[i])


def _encode(encoder: FeatureEncoder, kind: str, waves: list[np.ndarray]) -> list[torch.Tensor]:
    return MAKERS[FeatureKind(kind)][0](encoder, waves)


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
