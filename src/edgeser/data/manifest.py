"""The utterance manifest: one row per utterance, written and read as CSV.

Columns (always present, in this order): see :data:`COLUMNS`. Corpus extras
(gender, valence/arousal/dominance, sentence, level, intensity, statement,
repetition, ...) follow. Speaker ids are globally unique (``iemocap:Ses01M``,
``cremad:1001``, ``ravdess:01``); ``session`` is the fold unit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from edgeser.core.errors import SplitError
from edgeser.core.io import atomic_path
from edgeser.data.labels import LABELS

log = logging.getLogger(__name__)

#: Required manifest columns, in file order.
COLUMNS: tuple[str, ...] = (
    "utt_id",
    "corpus",
    "path",
    "speaker",
    "session",
    "label",
    "label_raw",
    "duration",
    "sample_rate",
)

#: Column dtypes used when reading a manifest back (extras are inferred).
_DTYPES: Mapping[str, Any] = {
    "utt_id": "string",
    "corpus": "string",
    "path": "string",
    "speaker": "string",
    "session": "string",
    "label": "string",
    "label_raw": "string",
    "duration": "float64",
    "sample_rate": "int64",
}


@dataclass
class Skipped:
    """Items left out while building a manifest, grouped by reason."""

    reasons: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, name: str) -> None:
        self.reasons.setdefault(reason, []).append(name)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.reasons.values())

    def summary(self, first: int = 3) -> list[str]:
        """One line per reason: count and the first few names."""
        lines = []
        for reason, names in sorted(self.reasons.items()):
            head = ", ".join(names[:first])
            more = f", ... (+{len(names) - first})" if len(names) > first else ""
            lines.append(f"{len(names)} {reason}: {head}{more}")
        return lines

    def log(self, corpus: str) -> None:
        for line in self.summary():
            log.warning("%s: skipped %s", corpus, line)


def make_manifest(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a manifest frame from row dicts, with the required columns first."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        df = pd.DataFrame(columns=list(COLUMNS))
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest rows lack columns: {', '.join(missing)}")
    extras = [c for c in df.columns if c not in COLUMNS]
    df = df[list(COLUMNS) + extras]
    df = df.sort_values("utt_id", kind="stable").reset_index(drop=True)
    return df


def write_manifest(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a manifest CSV atomically; returns the path written."""
    out = Path(path)
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    return out


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest CSV written by :func:`write_manifest` (or by hand)."""
    p = Path(path)
    if not p.is_file():
        raise SplitError(f"manifest not found: {p}")
    try:
        df = pd.read_csv(
            p,
            dtype={k: v for k, v in _DTYPES.items() if k != "sample_rate"},
            keep_default_na=False,
            na_values={"duration": [""]},
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise SplitError(f"{p}: not a readable manifest CSV ({e})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SplitError(f"{p}: not an edgeser manifest (missing columns: {', '.join(missing)})")
    df["sample_rate"] = pd.to_numeric(df["sample_rate"], errors="coerce").fillna(0).astype("int64")
    return df


def four_class(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose label is one of the four canonical classes."""
    return df[df["label"].isin(LABELS)].reset_index(drop=True)


def validate_manifest(
    df: pd.DataFrame, *, check_paths: bool = True, allow_unlabelled: bool = False
) -> None:
    """Raise :class:`SplitError` unless the manifest is sound.

    Checks: required columns; unique ``utt_id``; known labels (empty labels only
    with ``allow_unlabelled``); positive durations; non-empty speakers; and, with
    ``check_paths``, that every audio path exists.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SplitError(f"manifest lacks columns: {', '.join(missing)}")
    if df.empty:
        raise SplitError("manifest is empty")
    dup = df["utt_id"][df["utt_id"].duplicated()].unique().tolist()
    if dup:
        raise SplitError(f"duplicate utt_id ({len(dup)}): {', '.join(map(str, dup[:3]))}")
    labels = df["label"].fillna("").astype(str)
    allowed = set(LABELS) | ({""} if allow_unlabelled else set())
    bad = sorted(set(labels) - allowed)
    if bad:
        raise SplitError(
            f"unknown labels: {', '.join(repr(b) for b in bad[:5])} (a manifest "
            f"label is one of {', '.join(LABELS)}, or empty for a row outside "
            "the task; `edgeser prepare csv` maps names such as 'Angry')"
        )
    spk = df["speaker"].fillna("").astype(str)
    if (spk == "").any():
        raise SplitError(f"{int((spk == '').sum())} rows have no speaker")
    dur = pd.to_numeric(df["duration"], errors="coerce")
    if dur.isna().any() or (dur <= 0).any():
        n = int((dur.isna() | (dur <= 0)).sum())
        raise SplitError(f"{n} rows have a missing or non-positive duration")
    if check_paths:
        gone = [p for p in df["path"].astype(str) if not os.path.isfile(p)]
        if gone:
            raise SplitError(f"{len(gone)} audio paths do not exist: {', '.join(gone[:3])}")
