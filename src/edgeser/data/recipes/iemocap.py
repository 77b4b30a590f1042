"""IEMOCAP recipe: ``prepare_iemocap(root)`` for ``IEMOCAP_full_release/``.

Only the summary lines of the top-level ``Session{N}/dialog/EmoEvaluation/*.txt``
files are read (``[start - end]<TAB>utterance<TAB>label<TAB>[v, a, d]``); the
per-annotator lines that follow them and the ``Categorical/``, ``Attribute/`` and
``Self-evaluation/`` sub-folders are not summaries and are ignored.

Speaker trap: the letter after the session number in the dialog name
(``Ses01F_impro01``) names the actor wearing the motion-capture markers, not the
speaker. The speaker is the session plus the letter of the utterance's *last*
name part: ``Ses01F_impro01_M013`` is spoken by ``iemocap:Ses01M``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from edgeser.core.errors import CorpusError
from edgeser.data.labels import IEMOCAP_LABELS, IEMOCAP_RAW_LABELS
from edgeser.data.manifest import Skipped
from edgeser.data.recipes._common import BAD_LINE, audio_columns, finish, probe, visible_files

CORPUS = "iemocap"

_SUMMARY = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\s*\]\s*\t"
    r"(?P<utt>\S+)\t(?P<label>\S+)\t\[(?P<vad>[^\]]*)\]\s*$"
)
_UTT = re.compile(r"^Ses(?P<session>\d\d)(?P<marker>[FM])_(?P<body>.+)_(?P<spk>[FM])(?P<num>\d+)$")
_SESSION_DIR = re.compile(r"^Session(\d+)$")


def find_root(root: str | Path) -> Path:
    """Resolve ``root`` to the ``IEMOCAP_full_release`` folder or raise :class:`CorpusError`."""
    r = Path(root)
    if not r.is_dir():
        raise CorpusError(f"IEMOCAP root {r} is not a folder")
    if (r / "IEMOCAP_full_release").is_dir():
        r = r / "IEMOCAP_full_release"
    sessions = [p for p in r.iterdir() if p.is_dir() and _SESSION_DIR.match(p.name)]
    if not any((s / "dialog" / "EmoEvaluation").is_dir() for s in sessions):
        raise CorpusError(
            f"{r} is not IEMOCAP_full_release: no Session*/dialog/EmoEvaluation/ folder"
        )
    return r


def parse_summary_line(line: str) -> dict[str, Any] | None:
    """Parse one summary line; ``None`` if it is not a well-formed summary line."""
    m = _SUMMARY.match(line.rstrip("\r\n"))
    if not m:
        return None
    try:
        vad = [float(v) for v in m["vad"].split(",")]
    except ValueError:
        return None
    if len(vad) != 3:
        return None
    return {
        "start": float(m["start"]),
        "end": float(m["end"]),
        "utt": m["utt"],
        "label_raw": m["label"],
        "valence": vad[0],
        "arousal": vad[1],
        "dominance": vad[2],
    }


def speaker_of(utt: str) -> tuple[str, str, str]:
    """``(speaker, session, gender)`` of an utterance id, from its last name part."""
    m = _UTT.match(utt)
    if not m:
        raise ValueError(f"not an IEMOCAP utterance name: {utt}")
    ses = f"Ses{m['session']}"
    return f"{CORPUS}:{ses}{m['spk']}", f"{CORPUS}:{ses}", m["spk"]


def read_label_file(path: Path, skipped: Skipped) -> list[dict[str, Any]]:
    """Summary entries of one ``EmoEvaluation/<dialog>.txt`` file."""
    entries = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith("["):
            continue  # header (%), blank and per-annotator lines
        entry = parse_summary_line(line)
        if entry is None or not _UTT.match(entry["utt"]):
            skipped.add(BAD_LINE, f"{path.name}:{lineno}")
            continue
        if entry["label_raw"] not in IEMOCAP_RAW_LABELS:
            skipped.add(BAD_LINE, f"{path.name}:{lineno}")
            continue
        entries.append(entry)
    return entries


def prepare_iemocap(root: str | Path, *, all_labels: bool = False) -> pd.DataFrame:
    """Describe an IEMOCAP release as a manifest (one row per labelled utterance).

    With ``all_labels`` the rows outside the four classes are kept with an empty
    ``label``. Files that are missing, unreadable or empty, and label lines that do
    not parse, are reported (``df.attrs["skipped"]`` and a log warning) and left out.
    """
    r = find_root(root)
    skipped = Skipped()
    rows = []
    for session_dir in sorted(p for p in r.iterdir() if _SESSION_DIR.match(p.name)):
        emo = session_dir / "dialog" / "EmoEvaluation"
        if not emo.is_dir():
            continue
        for label_file in visible_files(emo, "*.txt"):  # top level only: not Categorical/ etc.
            dialog = label_file.stem
            for e in read_label_file(label_file, skipped):
                wav = session_dir / "sentences" / "wav" / dialog / f"{e['utt']}.wav"
                info = probe(wav, e["utt"], skipped)
                if info is None:
                    continue
                speaker, session, gender = speaker_of(e["utt"])
                rows.append(
                    {
                        "utt_id": f"{CORPUS}:{e['utt']}",
                        "corpus": CORPUS,
                        **audio_columns(wav, info),
                        "speaker": speaker,
                        "session": session,
                        "label": IEMOCAP_LABELS.get(e["label_raw"], ""),
                        "label_raw": e["label_raw"],
                        "gender": gender,
                        "dialog": dialog,
                        "method": "script" if "_script" in dialog else "impro",
                        "valence": e["valence"],
                        "arousal": e["arousal"],
                        "dominance": e["dominance"],
                        "start": e["start"],
                        "end": e["end"],
                    }
                )
    if not rows and not skipped.total:
        raise CorpusError(f"{r}: no summary lines found in Session*/dialog/EmoEvaluation/*.txt")
    return finish(CORPUS, rows, skipped, all_labels=all_labels)
