"""RAVDESS recipe: ``prepare_ravdess(root)`` for a folder of ``Actor_XX/`` folders.

Files are named ``MM-VV-EE-II-SS-RR-AA.wav``: modality (03 audio only), vocal
channel (01 speech, 02 song), emotion, intensity (01 normal, 02 strong),
statement, repetition, actor (odd = male). Only speech is described; song files
are reported and left out. Calm is *not* neutral unless the caller maps it
(``calm_as="neutral"``). The fold unit (``session``) is the actor.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from edgeser.core.errors import CorpusError
from edgeser.data.labels import RAVDESS_EMOTIONS, ravdess_label_map
from edgeser.data.manifest import Skipped
from edgeser.data.recipes._common import BAD_NAME, audio_columns, finish, probe, visible_files

CORPUS = "ravdess"
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
INTENSITY = {"01": "normal", "02": "strong"}
SONG = "song files (vocal channel 02; only speech is described)"
_NAME = re.compile(
    r"^(?P<modality>0[1-3])-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])-"
    r"(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d\d)$"
)
_ACTOR_DIR = re.compile(r"^Actor_(\d\d)$")


def find_root(root: str | Path) -> Path:
    """The folder holding ``Actor_XX/`` folders, or raise :class:`CorpusError`."""
    r = Path(root)
    if not r.is_dir():
        raise CorpusError(f"RAVDESS root {r} is not a folder")
    if not any(p.is_dir() and _ACTOR_DIR.match(p.name) for p in r.iterdir()):
        raise CorpusError(f"{r} is not RAVDESS: no Actor_XX/ folders")
    return r


def prepare_ravdess(
    root: str | Path, *, all_labels: bool = False, calm_as: str | None = None
) -> pd.DataFrame:
    """Describe a RAVDESS speech release as a manifest (one row per file)."""
    r = find_root(root)
    table = ravdess_label_map(calm_as)
    skipped = Skipped()
    rows = []
    for actor_dir in sorted(p for p in r.iterdir() if p.is_dir() and _ACTOR_DIR.match(p.name)):
        folder_actor = _ACTOR_DIR.match(actor_dir.name).group(1)  # type: ignore[union-attr]
        for wav in visible_files(actor_dir, "*.wav"):
            m = _NAME.match(wav.stem)
            strong_neutral = bool(m) and m["emotion"] == "01" and m["intensity"] == "02"
            if not m or m["actor"] != folder_actor or strong_neutral:
                skipped.add(BAD_NAME, f"{actor_dir.name}/{wav.name}")
                continue
            if m["channel"] != "01":
                skipped.add(SONG, f"{actor_dir.name}/{wav.name}")
                continue
            info = probe(wav, f"{actor_dir.name}/{wav.name}", skipped)
            if info is None:
                continue
            emotion = RAVDESS_EMOTIONS[m["emotion"]]
            actor = m["actor"]
            rows.append(
                {
                    "utt_id": f"{CORPUS}:{wav.stem}",
                    "corpus": CORPUS,
                    **audio_columns(wav, info),
                    "speaker": f"{CORPUS}:{actor}",
                    "session": f"{CORPUS}:{actor}",
                    "label": table.get(emotion, ""),
                    "label_raw": emotion,
                    "gender": "M" if int(actor) % 2 == 1 else "F",
                    "intensity": INTENSITY[m["intensity"]],
                    "statement": m["statement"],
                    "repetition": int(m["repetition"]),
                }
            )
    if not rows and not skipped.total:
        raise CorpusError(f"{r}: no .wav files in Actor_XX/ folders")
    return finish(CORPUS, rows, skipped, all_labels=all_labels)
