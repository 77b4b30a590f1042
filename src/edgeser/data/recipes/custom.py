"""Import a user's own corpus from a CSV with columns ``path,label,speaker[,session]``.

Relative paths are resolved against the CSV's folder. An utterance's id is the corpus name
and its path without the extension (``custom:a/x``), or with it where two files differ only
in their extension (``custom:a/x.wav``, ``custom:a/x.flac``); a path listed twice is kept
once. Labels are matched to the
four canonical classes case-insensitively (``Angry`` → ``angry``); any other label
is outside the task (dropped, or kept with an empty ``label`` with
``all_labels``). Speakers are prefixed with the corpus name so they stay globally
unique; ``session`` defaults to the speaker.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from edgeser.core.errors import CorpusError
from edgeser.data.labels import LABELS
from edgeser.data.manifest import Skipped
from edgeser.data.recipes._common import audio_columns, finish, probe

REQUIRED = ("path", "label", "speaker")


def prepare_csv(
    csv_path: str | Path, *, corpus: str = "custom", all_labels: bool = False
) -> pd.DataFrame:
    """Describe the utterances listed in ``csv_path`` as a manifest."""
    p = Path(csv_path)
    if not p.is_file():
        raise CorpusError(f"{p}: no such CSV file")
    try:
        table = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise CorpusError(f"{p}: not a readable CSV ({e})") from None
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise CorpusError(f"{p}: CSV lacks columns {', '.join(missing)} (need path,label,speaker)")
    skipped = Skipped()
    rows = []
    seen: set[str] = set()
    records = table.to_dict("records")
    names = {Path(r["path"].strip()).as_posix().lstrip("./") for r in records}
    stems: dict[str, int] = {}
    for name in names:
        stem = Path(name).with_suffix("").as_posix()
        stems[stem] = stems.get(stem, 0) + 1
    for rec in records:
        audio = Path(rec["path"].strip())
        if not audio.is_absolute():
            audio = p.parent / audio
        name = rec["path"].strip()
        full = Path(name).as_posix().lstrip("./")
        stem = Path(full).with_suffix("").as_posix()
        uid = f"{corpus}:{stem if stems[stem] == 1 else full}"
        if uid in seen:
            skipped.add("duplicate paths", name)
            continue
        info = probe(audio, name, skipped)
        if info is None:
            continue
        seen.add(uid)
        raw = rec["label"].strip()
        label = raw.lower() if raw.lower() in LABELS else ""
        speaker = f"{corpus}:{rec['speaker'].strip()}"
        session = rec.get("session", "").strip()
        rows.append(
            {
                "utt_id": uid,
                "corpus": corpus,
                **audio_columns(audio, info),
                "speaker": speaker,
                "session": f"{corpus}:{session}" if session else speaker,
                "label": label,
                "label_raw": raw,
            }
        )
    return finish(corpus, rows, skipped, all_labels=all_labels)
