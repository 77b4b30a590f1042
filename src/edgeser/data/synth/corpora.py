"""Synthetic IEMOCAP, CREMA-D and RAVDESS in the real corpora's exact layouts.

The real corpora cannot ship, so these writers generate stand-ins that the corpus parsers
read exactly like the real thing: same folder layout, file naming, audio format and label
files (with the real traps: IEMOCAP's dialog prefix is not the speaker, its
``EmoEvaluation`` sub-folders are not summary files, CREMA-D ships an empty WAV).

Every utterance's randomness derives from ``(seed, corpus, utterance id)`` only, so the
output is byte-identical whatever the generation order or number of processes. Files are
written atomically; a re-run skips WAV files that already exist with the right length, so
an interrupted generation resumes.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgeser.core.io import write_text
from edgeser.data.corpora import corpus, synth_names
from edgeser.data.recipes.cremad import SENTENCES as _CREMAD_SENTENCE_TEXT
from edgeser.data.recipes.ravdess import STATEMENTS as _RAVDESS_STATEMENT_TEXT

from .emotion import (
    CREMAD_EMOTIONS,
    EMOTIONS,
    IEMOCAP_EMOTIONS,
    RAVDESS_EMOTION_NAMES,
    STYLES,
    EmotionProfile,
    SpeakerProfile,
    make_speaker,
    rated_dimensions,
    resolve_emotion,
    sample_channel,
    utterance_settings,
)
from .writer import WavJob, run_jobs

__all__ = [
    "CORPORA",
    "CREMAD_SENTENCES",
    "RAVDESS_STATEMENTS",
    "SCALES",
    "cremad_demographics",
    "synth_cremad",
    "synth_iemocap",
    "synth_ravdess",
    "synthesize_corpus",
]

log = logging.getLogger(__name__)

#: Corpus sizes: ``small`` (seconds to generate; demo and tests) and ``paper`` (the real
#: corpora's counts).
SCALES: tuple[str, ...] = ("small", "paper")
#: Corpus names accepted by :func:`synthesize_corpus`: the corpora of the registry
#: (:mod:`edgeser.data.corpora`) with a generator.
CORPORA: tuple[str, ...] = synth_names()

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def _key(seed: int, corpus: str, uid: str, stream: int) -> tuple[int, ...]:
    """RNG entropy of one item: independent of generation order and process."""
    return (int(seed), zlib.crc32(corpus.encode()), zlib.crc32(uid.encode()), stream)


def _rng(seed: int, corpus: str, uid: str, stream: int) -> np.random.Generator:
    return np.random.default_rng(list(_key(seed, corpus, uid, stream)))


def _check_args(scale: str, seed: int) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _allocate(total: int, weights: Sequence[float], minimum: int = 0) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder)."""
    w = np.asarray(weights, float)
    base = np.full(len(w), minimum)
    rest = total - base.sum()
    if rest < 0:
        raise ValueError("total too small for the minimum")
    share = w / w.sum() * rest
    parts = np.floor(share).astype(int)
    order = np.argsort(-(share - parts), kind="stable")
    parts[order[: rest - parts.sum()]] += 1
    return (base + parts).tolist()


def _style_lead_trail(
    corpus: str, rng: np.random.Generator, dur: float | None
) -> tuple[float, float]:
    st = STYLES[corpus]
    lead = float(rng.uniform(*st.lead_s))
    trail = float(rng.uniform(*st.trail_s))
    if dur is not None:  # short turns: keep at least 60 % speech
        lead, trail = min(lead, 0.2 * dur), min(trail, 0.2 * dur)
    return lead, trail


# --------------------------------------------------------------------------- IEMOCAP

_IEMOCAP_SR = 16000
#: Per-session counts of the real corpus: four-class labels (ang, hap+exc, neu, sad) and
#: all summary lines (10,039 in total).
_IEMOCAP_4CLASS = {
    1: {"ang": 229, "hapexc": 278, "neu": 384, "sad": 194},
    2: {"ang": 137, "hapexc": 327, "neu": 362, "sad": 197},
    3: {"ang": 240, "hapexc": 286, "neu": 320, "sad": 305},
    4: {"ang": 327, "hapexc": 303, "neu": 258, "sad": 143},
    5: {"ang": 170, "hapexc": 442, "neu": 384, "sad": 245},
}
_IEMOCAP_TOTAL = {1: 1819, 2: 1811, 3: 2136, 4: 2103, 5: 2170}
_IEMOCAP_HAP, _IEMOCAP_EXC = 595, 1041
_IEMOCAP_OTHER = {"xxx": 2507, "fru": 1849, "sur": 107, "fea": 40, "oth": 3, "dis": 2}
_IEMOCAP_SCRIPTS = ("script01_1", "script01_2", "script01_3", "script02_1", "script02_2",
                    "script03_1", "script03_2")  # fmt: skip
_CAT_WORD = {
    "neu": "Neutral", "ang": "Anger", "hap": "Happiness", "exc": "Excited", "sad": "Sadness",
    "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "dis": "Disgust", "oth": "Other",
}  # fmt: skip
_CONFUSABLE = {
    "neu": ("fru", "sad", "exc", "hap"), "ang": ("fru", "dis", "neu"), "hap": ("exc", "neu", "sur"),
    "exc": ("hap", "sur", "neu"), "sad": ("neu", "fru", "fea"), "fru": ("ang", "neu", "sad"),
    "sur": ("exc", "hap", "fea"), "fea": ("sad", "sur", "fru"), "dis": ("ang", "fru"),
    "oth": ("neu", "fru"),
}  # fmt: skip
_IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"


@dataclass
class _Turn:
    uid: str
    label: str
    speaker: str  # "F" / "M"
    n_samples: int
    start: float = 0.0
    end: float = 0.0


def _iemocap_session_labels(scale: str, seed: int) -> dict[int, dict[str, list[str]]]:
    """Majority labels per session and speaker letter."""
    out: dict[int, dict[str, list[str]]] = {}
    if scale == "small":
        for s in range(1, 6):
            out[s] = {}
            for g in "FM":
                r = _rng(seed, "iemocap", f"labels:{s}{g}", 0)
                counts = {
                    "neu": int(r.integers(3, 6)), "ang": int(r.integers(3, 5)),
                    "hap": int(r.integers(1, 3)), "exc": int(r.integers(1, 3)),
                    "sad": int(r.integers(3, 5)), "fru": int(r.integers(3, 5)),
                    "xxx": int(r.integers(3, 6)),
                }  # fmt: skip
                extra = ["sur", "fea", "dis", "oth"]
                counts[extra[int(r.integers(4))]] = 1
                if r.random() < 0.5:
                    counts.setdefault("sur", 0)
                    counts["sur"] += 1
                out[s][g] = [lab for lab, c in counts.items() for _ in range(c)]
        return out
    # paper: the real counts. hap/exc split per session proportionally to hap+exc.
    hapexc = [_IEMOCAP_4CLASS[s]["hapexc"] for s in range(1, 6)]
    hap = _allocate(_IEMOCAP_HAP, hapexc)
    r = _rng(seed, "iemocap", "labels:other", 0)
    others = [lab for lab, c in _IEMOCAP_OTHER.items() for _ in range(c)]
    others = [others[i] for i in r.permutation(len(others))]
    pos = 0
    for s in range(1, 6):
        c4 = _IEMOCAP_4CLASS[s]
        labels = (
            ["ang"] * c4["ang"] + ["neu"] * c4["neu"] + ["sad"] * c4["sad"]
            + ["hap"] * hap[s - 1] + ["exc"] * (c4["hapexc"] - hap[s - 1])
        )  # fmt: skip
        n_other = _IEMOCAP_TOTAL[s] - len(labels)
        labels += others[pos : pos + n_other]
        pos += n_other
        # split between the two speakers, every class on both sides
        rs = _rng(seed, "iemocap", f"labels:{s}", 0)
        by_speaker: dict[str, list[str]] = {"F": [], "M": []}
        for lab in sorted(set(labels)):
            items = [x for x in labels if x == lab]
            n_f = int(rs.binomial(len(items), 0.5)) if len(items) > 1 else int(rs.integers(2))
            if len(items) >= 2:
                n_f = min(max(n_f, 1), len(items) - 1)
            by_speaker["F"] += items[:n_f]
            by_speaker["M"] += items[n_f:]
        out[s] = by_speaker
    assert pos == len(others)
    return out


def _iemocap_dialogs(scale: str, session: int) -> list[str]:
    ses = f"Ses{session:02d}"
    if scale == "small":
        return [f"{ses}F_impro01", f"{ses}M_impro03", f"{ses}F_script01_1", f"{ses}M_script02_2"]
    names = [f"impro{i:02d}" for i in range(1, 9)] + list(_IEMOCAP_SCRIPTS)
    return [f"{ses}{g}_{n}" for n in names for g in "FM"]


def _iemocap_duration(scale: str, r: np.random.Generator) -> float:
    if scale == "small":
        return float(np.clip(r.lognormal(np.log(2.4), 0.25), 1.5, 4.0))
    return float(np.clip(r.lognormal(np.log(3.6), 0.668), 0.6, 34.0))


def _plan_iemocap(scale: str, seed: int) -> dict[int, dict[str, list[_Turn]]]:
    """Sessions -> dialogs -> turns in time order (labels, speakers, lengths, times)."""
    labels = _iemocap_session_labels(scale, seed)
    plan: dict[int, dict[str, list[_Turn]]] = {}
    for s in range(1, 6):
        dialogs = _iemocap_dialogs(scale, s)
        r = _rng(seed, "iemocap", f"dialogs:{s}", 0)
        weights = r.uniform(0.6, 1.4, len(dialogs))
        per_dialog: dict[str, dict[str, list[str]]] = {d: {"F": [], "M": []} for d in dialogs}
        for g in "FM":
            items = [labels[s][g][i] for i in r.permutation(len(labels[s][g]))]
            counts = _allocate(len(items), weights, minimum=1)
            pos = 0
            for d, c in zip(dialogs, counts, strict=True):
                per_dialog[d][g] = items[pos : pos + c]
                pos += c
        plan[s] = {}
        for d in dialogs:
            rd = _rng(seed, "iemocap", f"turns:{d}", 0)
            order = rd.permutation(
                ["F"] * len(per_dialog[d]["F"]) + ["M"] * len(per_dialog[d]["M"])
            )
            counters = {"F": 0, "M": 0}
            turns = []
            t = float(rd.uniform(1.5, 8.0))
            for g in order:
                i = counters[g]
                counters[g] += 1
                uid = f"{d}_{g}{i:03d}"
                dur = _iemocap_duration(scale, _rng(seed, "iemocap", uid, 3))
                n = round(dur * _IEMOCAP_SR)
                start = round(t, 4)
                end = round(start + n / _IEMOCAP_SR, 4)
                turns.append(_Turn(uid, per_dialog[d][g][i], str(g), n, start, end))
                t = end + float(rd.uniform(0.05, 1.2))
            plan[s][d] = turns
    return plan


def _iemocap_profile(label: str, r: np.random.Generator) -> EmotionProfile:
    return resolve_emotion(IEMOCAP_EMOTIONS[label], r)


def _annotations(turn: _Turn, vad: tuple[float, float, float], r: np.random.Generator) -> dict:
    """Evaluator categories and attributes consistent with the majority label."""
    evaluators = [f"E{i}" for i in sorted(r.choice(np.arange(1, 7), size=3, replace=False))]
    lab = turn.label
    if lab == "xxx":
        pool = ["neu", "fru", "ang", "sad", "exc", "hap", "sur"]
        cats = [str(c) for c in r.choice(pool, size=3, replace=False)]
    else:
        n_agree = 3 if r.random() < 0.45 else 2
        cats = [lab] * n_agree + [str(r.choice(_CONFUSABLE[lab])) for _ in range(3 - n_agree)]
        cats = [cats[i] for i in r.permutation(3)]
    cat_lines = []
    for e, c in zip(evaluators, cats, strict=True):
        words = [_CAT_WORD[c]]
        if r.random() < 0.2:
            alt = str(r.choice(_CONFUSABLE.get(c, ("neu",))))
            words.append(_CAT_WORD[alt])
        cat_lines.append((e, words))
    self_cat = lab if lab != "xxx" and r.random() < 0.6 else str(r.choice(list(_CAT_WORD)))

    def rate() -> tuple[int, int, int]:
        return tuple(int(np.clip(round(r.normal(m, 0.6)), 1, 5)) for m in vad)  # type: ignore[return-value]

    attr = [(e, rate()) for e in evaluators[:2]]
    self_attr = rate()
    mean = tuple(float(np.mean([a[1][k] for a in attr])) for k in range(3))
    return {"cats": cat_lines, "self_cat": self_cat, "attr": attr, "self_attr": self_attr,
            "vad": mean}  # fmt: skip


def _fmt_vad(v: Sequence[float]) -> str:
    return "[" + ", ".join(f"{x:.4f}" for x in v) + "]"


def _write_iemocap_labels(
    out: Path, session: int, dialog: str, turns: list[_Turn], notes: dict[str, dict]
) -> None:
    eva = out / f"Session{session}" / "dialog" / "EmoEvaluation"
    blocks = [_IEMOCAP_HEADER, ""]
    self_lines, cat1, cat2, atr1, atr2 = [], [], [], [], []
    for t in turns:
        a = notes[t.uid]
        span = f"[{t.start:.4f} - {t.end:.4f}]"
        blocks.append(f"{span}\t{t.uid}\t{t.label}\t{_fmt_vad(a['vad'])}")
        for e, words in a["cats"]:
            blocks.append(f"C-{e}:\t" + " ".join(w + ";" for w in words) + "\t()")
        blocks.append(f"C-{t.speaker}1:\t{_CAT_WORD[a['self_cat']]};\t()")
        for e, (v, ac, d) in a["attr"]:
            blocks.append(f"A-{e}:\tval {v}; act {ac}; dom  {d};\t()")
        v, ac, d = a["self_attr"]
        blocks.append(f"A-{t.speaker}1:\tval {v}; act {ac}; dom  {d};\t()")
        blocks.append("")
        self_lines.append(f"{span}\t{t.uid}\t{a['self_cat']}\t{_fmt_vad(a['self_attr'])}")
        for lines, (_e, words) in ((cat1, a["cats"][0]), (cat2, a["cats"][1])):
            w = "Neutral state" if words[0] == "Neutral" else words[0]
            lines.append(f"{t.uid} :{w}; ()")
        for lines, (_e, (v, ac, d)) in ((atr1, a["attr"][0]), (atr2, a["attr"][1])):
            lines.append(f"{t.uid} :act {ac}; val {v}; dom {d}; ()")
    write_text(eva / f"{dialog}.txt", "\n".join(blocks) + "\n")
    write_text(eva / "Self-evaluation" / f"{dialog}.txt", "\n".join(self_lines) + "\n")
    write_text(eva / "Categorical" / f"{dialog}_e1_cat.txt", "\n".join(cat1) + "\n")
    write_text(eva / "Categorical" / f"{dialog}_e2_cat.txt", "\n".join(cat2) + "\n")
    write_text(eva / "Attribute" / f"{dialog}_e1_atr.txt", "\n".join(atr1) + "\n")
    write_text(eva / "Attribute" / f"{dialog}_e2_atr.txt", "\n".join(atr2) + "\n")


def synth_iemocap(
    out: str | os.PathLike[str],
    *,
    scale: str = "small",
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write a synthetic IEMOCAP release; ``out`` is the ``IEMOCAP_full_release`` root.

    ``Session{1..5}/sentences/wav/<dialog>/<utterance>.wav`` (16 kHz mono 16-bit) and
    ``Session{N}/dialog/EmoEvaluation/<dialog>.txt`` summary files (plus the
    ``Categorical/``, ``Attribute/`` and ``Self-evaluation/`` sub-folders). ``workers``
    is the number of processes (default: the CPUs, at most 8); the output does not
    depend on it.
    """
    _check_args(scale, seed)
    root = Path(out)
    plan, jobs, notes = _iemocap_jobs(root, scale, seed)
    run_jobs(jobs, workers=workers, progress=progress, desc=f"IEMOCAP ({scale})")
    for s, dialogs in plan.items():  # labels last: a complete label file means complete audio
        for d, turns in dialogs.items():
            _write_iemocap_labels(root, s, d, turns, notes)
    return root


def _iemocap_jobs(
    root: Path, scale: str, seed: int
) -> tuple[dict[int, dict[str, list[_Turn]]], list[WavJob], dict[str, dict]]:
    plan = _plan_iemocap(scale, seed)
    speakers = {
        f"{s}{g}": make_speaker(f"Ses{s:02d}{g}", g, _rng(seed, "iemocap", f"speaker:{s}{g}", 0))
        for s in range(1, 6)
        for g in "FM"
    }
    style = STYLES["iemocap"]
    jobs: list[WavJob] = []
    notes: dict[str, dict] = {}
    for s, dialogs in plan.items():
        for d, turns in dialogs.items():
            for t in turns:
                r = _rng(seed, "iemocap", t.uid, 0)
                prof = _iemocap_profile(t.label, r)
                settings = utterance_settings(speakers[f"{s}{t.speaker}"], prof, style, r)
                lead, trail = _style_lead_trail("iemocap", r, t.n_samples / _IEMOCAP_SR)
                path = root / f"Session{s}" / "sentences" / "wav" / d / f"{t.uid}.wav"
                jobs.append(WavJob(path, _IEMOCAP_SR, settings, sample_channel(style, r),
                                 _key(seed, "iemocap", t.uid, 1), None, t.n_samples, lead,
                                 trail))  # fmt: skip
                vad = rated_dimensions(prof, settings, speakers[f"{s}{t.speaker}"], style)
                notes[t.uid] = _annotations(t, vad, _rng(seed, "iemocap", t.uid, 2))
    return plan, jobs, notes


# --------------------------------------------------------------------------- CREMA-D

_CREMAD_SR = 16000
#: Sentence codes and texts, in the release's order.
#: The twelve CREMA-D sentences (shared with the corpus recipe).
CREMAD_SENTENCES: dict[str, str] = dict(_CREMAD_SENTENCE_TEXT)
#: level -> (emotion intensity, vocal effort)
_CREMAD_LEVELS = {"LO": (0.55, -0.4), "MD": (1.0, 0.0), "HI": (1.5, 0.6), "XX": (1.0, 0.0)}
_CREMAD_EMPTY = "1076_MTI_SAD_XX"  # no audio in the real release
_CREMAD_ACTORS = tuple(range(1001, 1092))


def cremad_demographics() -> dict[int, dict[str, str | int]]:
    """Actor demographics (seed-independent, 48 male and 43 female actors as in the release)."""
    r = np.random.default_rng(zlib.crc32(b"cremad-demographics"))
    sexes = r.permutation(["Male"] * 48 + ["Female"] * 43)
    races = r.choice(["Caucasian", "African American", "Asian", "Unknown"], size=91,
                     p=[0.6, 0.23, 0.09, 0.08])  # fmt: skip
    out: dict[int, dict[str, str | int]] = {}
    for i, a in enumerate(_CREMAD_ACTORS):
        out[a] = {
            "Age": int(r.integers(20, 75)),
            "Sex": str(sexes[i]),
            "Race": str(races[i]),
            "Ethnicity": "Hispanic" if r.random() < 0.1 else "Not Hispanic",
        }
    return out


def _cremad_clips(scale: str) -> list[tuple[int, str, str, str]]:
    """(actor, sentence, emotion, level) of every clip of a scale (seed-independent)."""

    def actor_clips(a: int, sentences: Iterable[str]) -> list[tuple[int, str, str, str]]:
        out = []
        for sen in sentences:
            for emo in sorted(CREMAD_EMOTIONS):
                if sen == "IEO" and emo != "NEU":
                    out += [(a, sen, emo, lvl) for lvl in ("LO", "MD", "HI")]
                else:
                    out.append((a, sen, emo, "XX"))
        return out

    if scale == "small":
        demo = cremad_demographics()
        males = [a for a in _CREMAD_ACTORS if demo[a]["Sex"] == "Male"]
        females = [a for a in _CREMAD_ACTORS if demo[a]["Sex"] == "Female"]
        same, other = (males, females) if demo[1076]["Sex"] == "Male" else (females, males)
        actors = sorted([*[a for a in same if a != 1076][:4], 1076, *other[:5]])
        # half the actors: IEO (with levels) + 2 sentences; the others: 3 sentences
        others = [s for s in CREMAD_SENTENCES if s != "IEO"]
        clips = []
        pos = 0
        for i, a in enumerate(actors):
            n = 2 if i % 2 == 0 else 3
            chosen = [others[(pos + j) % len(others)] for j in range(n)]
            pos += n
            if a == 1076 and "MTI" not in chosen:
                chosen[-1] = "MTI"
            clips += actor_clips(a, (["IEO"] if n == 2 else []) + chosen)
        return clips
    clips = [c for a in _CREMAD_ACTORS for c in actor_clips(a, CREMAD_SENTENCES)]
    # The release lacks 20 clips (3 per non-neutral emotion, 5 neutral): 7442 in all.
    r = np.random.default_rng(zlib.crc32(b"cremad-missing"))
    drop: set[tuple[int, str, str, str]] = set()
    for emo in sorted(CREMAD_EMOTIONS):
        cand = [c for c in clips if c[2] == emo and c[3] == "XX"
                and "_".join(map(str, c)) != _CREMAD_EMPTY]  # fmt: skip
        for i in r.choice(len(cand), size=5 if emo == "NEU" else 3, replace=False):
            drop.add(cand[int(i)])
    return [c for c in clips if c not in drop]


def synth_cremad(
    out: str | os.PathLike[str],
    *,
    scale: str = "small",
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write a synthetic CREMA-D; ``out`` holds ``AudioWAV/`` and ``VideoDemographics.csv``.

    ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` (16 kHz mono 16-bit);
    ``1076_MTI_SAD_XX.wav`` holds no audio, as in the release (in the small scale actor
    1076 and sentence MTI are always included, so that file is always there).
    Arguments as for :func:`synth_iemocap`.
    """
    _check_args(scale, seed)
    root = Path(out)
    demo = cremad_demographics()
    jobs = _cremad_jobs(root, scale, seed)
    run_jobs(jobs, workers=workers, progress=progress, desc=f"CREMA-D ({scale})")
    rows = ["ActorID,Age,Sex,Race,Ethnicity"]
    rows += [f"{a},{d['Age']},{d['Sex']},{d['Race']},{d['Ethnicity']}" for a, d in demo.items()]
    write_text(root / "VideoDemographics.csv", "\n".join(rows) + "\n")
    return root


def _cremad_jobs(root: Path, scale: str, seed: int) -> list[WavJob]:
    demo = cremad_demographics()
    style = STYLES["cremad"]
    clips = _cremad_clips(scale)
    speakers: dict[int, SpeakerProfile] = {}
    jobs: list[WavJob] = []
    for a, sen, emo, lvl in clips:
        if a not in speakers:
            g = "M" if demo[a]["Sex"] == "Male" else "F"
            speakers[a] = make_speaker(str(a), g, _rng(seed, "cremad", f"speaker:{a}", 0))
        uid = f"{a}_{sen}_{emo}_{lvl}"
        path = root / "AudioWAV" / f"{uid}.wav"
        r = _rng(seed, "cremad", uid, 0)
        intensity, effort = _CREMAD_LEVELS[lvl]
        prof = EMOTIONS[CREMAD_EMOTIONS[emo]]
        settings = utterance_settings(
            speakers[a], prof, style, r, intensity=intensity, effort=effort
        )
        lead, trail = _style_lead_trail("cremad", r, None)
        jobs.append(WavJob(path, _CREMAD_SR, None if uid == _CREMAD_EMPTY else settings,
                         sample_channel(style, r), _key(seed, "cremad", uid, 1),
                         CREMAD_SENTENCES[sen], None, lead, trail))  # fmt: skip
    return jobs


# --------------------------------------------------------------------------- RAVDESS

_RAVDESS_SR = 48000
#: The two RAVDESS statements.
RAVDESS_STATEMENTS: dict[str, str] = dict(_RAVDESS_STATEMENT_TEXT)
#: intensity code -> (emotion intensity, vocal effort)
_RAVDESS_INTENSITY = {"01": (1.0, 0.0), "02": (1.5, 1.0)}


def _ravdess_files(actor: int) -> list[str]:
    names = []
    for emo in RAVDESS_EMOTION_NAMES:
        for inten in ("01",) if emo == "01" else ("01", "02"):
            for st in RAVDESS_STATEMENTS:
                for rep in ("01", "02"):
                    names.append(f"03-01-{emo}-{inten}-{st}-{rep}-{actor:02d}")
    return names


def synth_ravdess(
    out: str | os.PathLike[str],
    *,
    scale: str = "small",
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write a synthetic RAVDESS speech set; ``out`` holds ``Actor_01/`` …

    ``Actor_XX/03-01-EE-II-SS-RR-AA.wav`` (48 kHz mono 16-bit), 60 files per actor, odd
    actors male; 4 actors in the small scale, 24 in the paper scale. Arguments as for
    :func:`synth_iemocap`.
    """
    _check_args(scale, seed)
    root = Path(out)
    jobs = _ravdess_jobs(root, scale, seed)
    run_jobs(jobs, workers=workers, progress=progress, desc=f"RAVDESS ({scale})")
    return root


def _ravdess_jobs(root: Path, scale: str, seed: int) -> list[WavJob]:
    style = STYLES["ravdess"]
    actors = range(1, 5) if scale == "small" else range(1, 25)
    jobs: list[WavJob] = []
    for a in actors:
        g = "M" if a % 2 else "F"
        sp = make_speaker(f"{a:02d}", g, _rng(seed, "ravdess", f"speaker:{a:02d}", 0))
        for uid in _ravdess_files(a):
            _, _, emo, inten, st, _rep, _ = uid.split("-")
            r = _rng(seed, "ravdess", uid, 0)
            prof = EMOTIONS[RAVDESS_EMOTION_NAMES[emo]]
            intensity, effort = _RAVDESS_INTENSITY[inten]
            settings = utterance_settings(sp, prof, style, r, intensity=intensity, effort=effort)
            lead, trail = _style_lead_trail("ravdess", r, None)
            path = root / f"Actor_{a:02d}" / f"{uid}.wav"
            jobs.append(WavJob(path, _RAVDESS_SR, settings, sample_channel(style, r),
                             _key(seed, "ravdess", uid, 1), RAVDESS_STATEMENTS[st], None,
                             lead, trail))  # fmt: skip
    return jobs


# --------------------------------------------------------------------------- dispatch


def synthesize_corpus(
    name: str,
    out: str | os.PathLike[str],
    *,
    scale: str = "small",
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write synthetic corpus ``name`` (iemocap, cremad or ravdess) with ``out`` as its root;
    the generator is the one the corpus registry names (:mod:`edgeser.data.corpora`)."""
    entry = corpus(name)
    if entry is None or entry.synth is None:
        raise ValueError(f"unknown corpus {name!r}; expected one of {', '.join(CORPORA)}")
    write = entry.synth_function()
    return write(out, scale=scale, seed=seed, progress=progress, workers=workers)
