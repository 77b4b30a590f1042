"""Shared pieces of the corpus recipes: header probing and row assembly."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from edgeser.audio.io import AudioInfo, audio_info
from edgeser.core.errors import AudioError
from edgeser.data.manifest import Skipped, make_manifest

log = logging.getLogger(__name__)

NO_AUDIO = "files with no audio"
UNREADABLE = "unreadable audio files"
MISSING = "labelled utterances without an audio file"
BAD_NAME = "files whose name does not follow the corpus naming"
BAD_LINE = "label lines that do not parse"


def probe(path: Path, name: str, skipped: Skipped) -> AudioInfo | None:
    """Header of ``path``, or ``None`` (recorded in ``skipped``) when it is unusable."""
    if not path.is_file():
        skipped.add(MISSING, name)
        return None
    try:
        info = audio_info(path)
    except AudioError:
        skipped.add(UNREADABLE, name)
        return None
    if info.frames <= 0 or info.sample_rate <= 0:
        skipped.add(NO_AUDIO, name)
        return None
    return info


def audio_columns(path: Path, info: AudioInfo) -> dict[str, Any]:
    """The manifest columns that come from the file and its header."""
    return {
        "path": str(path.resolve()),
        "duration": round(info.duration, 6),
        "sample_rate": info.sample_rate,
        "channels": info.channels,
    }


def finish(
    corpus: str, rows: Iterable[dict[str, Any]], skipped: Skipped, *, all_labels: bool
) -> pd.DataFrame:
    """Filter to the four classes unless ``all_labels``, log what was skipped, build the frame."""
    rows = list(rows)
    kept = rows if all_labels else [r for r in rows if r["label"]]
    skipped.log(corpus)
    df = make_manifest(kept)
    log.info(
        "%s: %d utterances (%d outside the four classes %s), %d skipped",
        corpus,
        len(df),
        sum(1 for r in rows if not r["label"]),
        "kept" if all_labels else "left out",
        skipped.total,
    )
    df.attrs["skipped"] = skipped.reasons
    return df


def visible_files(folder: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` in ``folder``, without hidden/AppleDouble (``._``) files."""
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
