"""The split validator: no utterance in two parts, no speaker on two sides, training-only
corpora kept out of model selection and testing; and split files on disk."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from edgeser.core.errors import SplitError

__all__ = ["combine_manifests", "read_split_file", "validate_split"]


def combine_manifests(*frames: pd.DataFrame | None) -> pd.DataFrame:
    """The manifests (``None`` skipped) as one frame; an utterance id in two of them is an
    error (a split could not tell them apart)."""
    present = [f for f in frames if f is not None]
    if not present:
        raise SplitError("no manifest to combine")
    frame = pd.concat(present, ignore_index=True) if len(present) > 1 else present[0]
    dup = frame["utt_id"][frame["utt_id"].duplicated()]
    if len(dup):
        raise SplitError(f"the manifests share {dup.nunique()} utterance id(s), e.g. {dup.iloc[0]}")
    return frame


def validate_split(
    df: pd.DataFrame,
    parts: Mapping[str, Sequence[str]],
    *,
    corpus_only: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Raise :class:`SplitError` if a split leaks speakers or names unknown rows.

    ``parts`` maps part names (``train``, ``val``, ``test``, ...) to utterance ids.
    Every id must be in ``df`` and in at most one part, and no speaker may appear in
    two parts. ``corpus_only`` maps a part name to the corpora it may contain (e.g.
    ``{"val": ["iemocap"], "test": ["iemocap"]}`` keeps a training-only corpus out
    of model selection and testing).
    """
    speaker = dict(zip(df["utt_id"].astype(str), df["speaker"].astype(str), strict=True))
    corpus = dict(zip(df["utt_id"].astype(str), df["corpus"].astype(str), strict=True))
    seen: dict[str, str] = {}
    spk_part: dict[str, str] = {}
    for name, ids in parts.items():
        for uid in ids:
            uid = str(uid)
            if uid not in speaker:
                raise SplitError(
                    f"split part {name!r} names an utterance not in the manifest: {uid}"
                )
            if uid in seen:
                raise SplitError(f"utterance {uid} is in both {seen[uid]!r} and {name!r}")
            seen[uid] = name
            s = speaker[uid]
            other = spk_part.setdefault(s, name)
            if other != name:
                raise SplitError(
                    f"speaker {s} appears in both {other!r} and {name!r} (speaker leakage)"
                )
        if corpus_only and name in corpus_only:
            allowed = set(corpus_only[name])
            stray = sorted({corpus[str(u)] for u in ids} - allowed)
            if stray:
                raise SplitError(
                    f"split part {name!r} contains corpus {', '.join(stray)}; "
                    f"only {', '.join(sorted(allowed))} may be there"
                )


def read_split_file(path: str | os.PathLike[str]) -> list[dict[str, list[str]]]:
    """Read a split JSON: ``{part: [utt_id, ...]}`` or ``{"folds": [{part: [...]}, ...]}``.

    Returns a list of splits (one per fold). Keys other than lists of ids (e.g. a
    fold's ``test_session``) are ignored.
    """
    import json

    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SplitError(f"split file not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SplitError(f"{p}: not valid JSON ({e})") from None
    folds = obj.get("folds", [obj]) if isinstance(obj, dict) else None
    if not isinstance(folds, list) or not folds:
        raise SplitError(f'{p}: expected {{part: [ids]}} or {{"folds": [...]}}')
    out = []
    for fold in folds:
        if not isinstance(fold, dict):
            raise SplitError(f"{p}: each fold must be an object of parts")
        parts = {k: [str(u) for u in v] for k, v in fold.items() if isinstance(v, list)}
        if not parts:
            raise SplitError(f"{p}: a fold names no parts")
        out.append(parts)
    return out
