"""CREMA-D recipe: ``prepare_cremad(root)`` for a folder holding ``AudioWAV/``.

Files are named ``<actor>_<sentence>_<emotion>_<level>.wav`` (``1001_DFA_ANG_XX.wav``).
The fold unit (``session``) is the actor. ``VideoDemographics.csv`` beside
``AudioWAV/``, when present, gives each actor's sex. Files that hold no audio
(the release notes name ``1076_MTI_SAD_XX.wav``) are reported and left out.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import pandas as pd

from edgeser.core.errors import CorpusError
from edgeser.data.labels import CREMAD_LABELS, CREMAD_RAW_LABELS
from edgeser.data.manifest import Skipped
from edgeser.data.recipes._common import BAD_NAME, audio_columns, finish, probe, visible_files

log = logging.getLogger(__name__)

CORPUS = "cremad"
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
_NAME = re.compile(
    r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$"
)


def find_root(root: str | Path) -> Path:
    """The folder holding ``AudioWAV/`` (``root`` itself may be ``AudioWAV/``)."""
    r = Path(root)
    if not r.is_dir():
        raise CorpusError(f"CREMA-D root {r} is not a folder")
    if (r / "AudioWAV").is_dir():
        return r
    if r.name == "AudioWAV":
        return r.parent
    raise CorpusError(f"{r} is not CREMA-D: no AudioWAV/ folder")


def read_demographics(path: Path) -> dict[str, str]:
    """Actor id → ``F``/``M`` from ``VideoDemographics.csv`` (empty if absent or unreadable)."""
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                actor = (row.get("ActorID") or "").strip()
                sex = (row.get("Sex") or "").strip().lower()
                if actor and sex in ("male", "female"):
                    out[actor] = "M" if sex == "male" else "F"
    except (OSError, csv.Error) as e:
        log.warning("cremad: cannot read %s (%s); gender left empty", path, e)
        return {}
    return out


def prepare_cremad(root: str | Path, *, all_labels: bool = False) -> pd.DataFrame:
    """Describe a CREMA-D release as a manifest (one row per clip)."""
    r = find_root(root)
    gender = read_demographics(r / "VideoDemographics.csv")
    skipped = Skipped()
    rows = []
    for wav in visible_files(r / "AudioWAV", "*.wav"):
        m = _NAME.match(wav.stem)
        if not m or m["emotion"] not in CREMAD_RAW_LABELS or m["level"] not in LEVELS:
            skipped.add(BAD_NAME, wav.name)
            continue
        info = probe(wav, wav.name, skipped)
        if info is None:
            continue
        actor = m["actor"]
        rows.append(
            {
                "utt_id": f"{CORPUS}:{wav.stem}",
                "corpus": CORPUS,
                **audio_columns(wav, info),
                "speaker": f"{CORPUS}:{actor}",
                "session": f"{CORPUS}:{actor}",
                "label": CREMAD_LABELS.get(m["emotion"], ""),
                "label_raw": m["emotion"],
                "gender": gender.get(actor, ""),
                "sentence": m["sentence"],
                "level": m["level"],
            }
        )
    if not rows and not skipped.total:
        raise CorpusError(f"{r / 'AudioWAV'}: no .wav files")
    return finish(CORPUS, rows, skipped, all_labels=all_labels)
