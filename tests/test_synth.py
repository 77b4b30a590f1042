"""Synthetic corpora: exact real layouts and label formats, determinism, resumability,
silence that a 20 dB trim removes, and acoustic class differences that hold on average."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from edgeser.data.synth import SCALES, VoiceSettings, synthesize, synthesize_corpus
from edgeser.data.synth import corpora as C
from edgeser.data.synth import writer as W

IEMOCAP_RAW = {"neu", "ang", "sad", "hap", "exc", "fru", "sur", "fea", "dis", "oth", "xxx"}
FOUR = {"neu", "ang", "sad", "hap", "exc"}
DIALOG = re.compile(r"^Ses0([1-5])([FM])_(impro0[1-8]|script0[1-3]_[1-3])$")
SUMMARY = re.compile(
    r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(\S+)\t(\S+)\t"
    r"\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$"
)
CAT_LINE = re.compile(r"^C-(E\d|[FM]1):\t(?:[A-Z][a-z]+; )*[A-Z][a-z]+;\t\(\)$")
ATTR_LINE = re.compile(r"^A-(E\d|[FM]1):\tval [1-5]; act [1-5]; dom  [1-5];\t\(\)$")
CREMAD_NAME = re.compile(
    r"^(10[0-8]\d|109[01])_(IEO|TIE|IOM|IWW|TAI|MTI|IWL|ITH|DFA|ITS|TSI|WSI)_"
    r"(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|MD|HI|XX)\.wav$"
)
RAVDESS_NAME = re.compile(r"^03-01-0([1-8])-0([12])-0([12])-0([12])-(\d\d)\.wav$")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synth")
    return {
        name: synthesize_corpus(name, base / name, scale="small", seed=0, progress=False)
        for name in ("iemocap", "cremad", "ravdess")
    }


def _summaries(root: Path) -> dict[str, list[re.Match[str]]]:
    out = {}
    for txt in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        lines = txt.read_text().splitlines()
        assert lines[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
        assert lines[1] == ""
        matches = []
        for i, line in enumerate(lines[2:], 2):
            if line.startswith("["):
                m = SUMMARY.match(line)
                assert m, f"{txt.name}:{i}: {line!r}"
                matches.append(m)
                assert lines[i - 1] == ""  # blocks are separated by blank lines
            elif line:
                assert line[0].isalpha()
                assert CAT_LINE.match(line) or ATTR_LINE.match(line), line
        out[txt.stem] = matches
    return out


# --------------------------------------------------------------------------- IEMOCAP


def test_iemocap_layout_and_labels(corpora):
    root = corpora["iemocap"]
    assert sorted(p.name for p in root.iterdir()) == [f"Session{i}" for i in range(1, 6)]
    summaries = _summaries(root)
    wavs = {p.stem: p for p in root.glob("Session*/sentences/wav/*/*.wav")}
    labelled = {m[3]: m for ms in summaries.values() for m in ms}
    assert set(wavs) == set(labelled)  # one summary line per file, and vice versa
    per_session: dict[str, list[str]] = defaultdict(list)
    trap = 0
    for dialog, ms in summaries.items():
        d = DIALOG.match(dialog)
        assert d, dialog
        speakers = set()
        prev_end = 0.0
        for m in ms:
            utt, label = m[3], m[4]
            um = re.fullmatch(rf"{dialog}_([FM])(\d{{3}})", utt)
            assert um, utt
            speakers.add(um[1])
            trap += um[1] != d[2]
            assert label in IEMOCAP_RAW
            assert all(1.0 <= float(m[k]) <= 5.0 for k in (5, 6, 7))
            start, end = float(m[1]), float(m[2])
            assert start >= prev_end and end > start  # consecutive, increasing turns
            prev_end = end
            path = wavs[utt]
            assert path.parent.name == dialog
            assert path.parents[3].name == f"Session{int(d[1])}"
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert abs((end - start) - info.frames / 16000) < 1e-3
            assert 1.4 <= info.frames / 16000 <= 4.1
            per_session[f"{d[1]}{um[1]}"].append(label)
        assert speakers == {"F", "M"}, f"{dialog} lacks a speaker"
    assert trap > 0  # utterances whose speaker differs from the dialog's marker letter
    for s in range(1, 6):
        n = len(per_session[f"{s}F"]) + len(per_session[f"{s}M"])
        n4 = sum(lab in FOUR for g in "FM" for lab in per_session[f"{s}{g}"])
        assert 40 <= n <= 60
        assert 0.45 <= n4 / n <= 0.75
        for g in "FM":  # all four classes for both speakers of every session
            labs = set(per_session[f"{s}{g}"])
            assert {"neu", "ang", "sad"} <= labs and labs & {"hap", "exc"}


def test_iemocap_non_summary_subfolders_exist(corpora):
    root = corpora["iemocap"]
    for dialog_txt in root.glob("Session*/dialog/EmoEvaluation/*.txt"):
        eva, d = dialog_txt.parent, dialog_txt.stem
        utts = [m[3] for m in map(SUMMARY.match, dialog_txt.read_text().splitlines()) if m]
        cat = (eva / "Categorical" / f"{d}_e1_cat.txt").read_text().splitlines()
        atr = (eva / "Attribute" / f"{d}_e1_atr.txt").read_text().splitlines()
        self_eval = (eva / "Self-evaluation" / f"{d}.txt").read_text().splitlines()
        assert [line.split(" :")[0] for line in cat] == utts
        assert all(re.fullmatch(r"\S+ :[A-Z][a-z]+( state)?; \(\)", line) for line in cat)
        assert all(re.fullmatch(r"\S+ :act [1-5]; val [1-5]; dom [1-5]; \(\)", x) for x in atr)
        assert len(self_eval) == len(utts)


def test_iemocap_paper_scale_counts():
    plan = C._plan_iemocap("paper", 0)
    labels = [t.label for s in plan.values() for ts in s.values() for t in ts]
    assert len(labels) == 10039
    c = Counter(labels)
    assert (c["neu"], c["hap"] + c["exc"], c["ang"], c["sad"]) == (1708, 1636, 1103, 1084)
    assert (c["hap"], c["exc"]) == (595, 1041)
    per_session = [sum(t.label in FOUR for ts in plan[s].values() for t in ts) for s in plan]
    assert per_session == [1085, 1023, 1151, 1031, 1241]
    for s in plan.values():
        assert len(s) >= 28
        assert all({t.speaker for t in ts} == {"F", "M"} for ts in s.values())
    durs = np.array([t.n_samples / 16000 for s in plan.values() for ts in s.values() for t in ts])
    assert 4.2 < durs.mean() < 4.8 and 3.3 < np.median(durs) < 3.9
    assert durs.min() >= 0.6 and durs.max() <= 34.0


# --------------------------------------------------------------------------- CREMA-D


def test_cremad_layout(corpora):
    root = corpora["cremad"]
    names = sorted(p.name for p in (root / "AudioWAV").iterdir())
    parsed = [CREMAD_NAME.match(n) for n in names]
    assert all(parsed), [n for n, m in zip(names, parsed, strict=True) if not m]
    for m in parsed:
        sentence, emotion, level = m[2], m[3], m[4]
        if level != "XX":  # levels only on IEO, never for neutral
            assert sentence == "IEO" and emotion != "NEU"
        elif sentence == "IEO":
            assert emotion == "NEU"
    emotions = Counter(m[3] for m in parsed)
    assert set(emotions) == {"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"}
    four = sum(emotions[e] for e in ("ANG", "HAP", "NEU", "SAD"))
    assert 120 <= four <= 180
    actors = {m[1] for m in parsed}
    assert 8 <= len(actors) <= 12
    # the release's empty file: a valid WAV header with no frames
    empty = root / "AudioWAV" / "1076_MTI_SAD_XX.wav"
    info = sf.info(empty)
    assert info.frames == 0 and info.samplerate == 16000
    for name in names[:20]:
        info = sf.info(root / "AudioWAV" / name)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    demo = (root / "VideoDemographics.csv").read_text().splitlines()
    assert demo[0] == "ActorID,Age,Sex,Race,Ethnicity"
    sex = {row.split(",")[0]: row.split(",")[2] for row in demo[1:]}
    assert len(sex) == 91 and set(sex.values()) == {"Male", "Female"}
    assert {sex[a] for a in actors} == {"Male", "Female"}


def test_cremad_paper_scale_counts():
    clips = C._cremad_clips("paper")
    assert len(clips) == 7442
    c = Counter(e for _, _, e, _ in clips)
    assert c["NEU"] == 1087 and all(c[e] == 1271 for e in ("ANG", "DIS", "FEA", "HAP", "SAD"))
    assert sum(c[e] for e in ("ANG", "HAP", "NEU", "SAD")) == 4900
    assert (1076, "MTI", "SAD", "XX") in clips


# --------------------------------------------------------------------------- RAVDESS


def test_ravdess_layout(corpora):
    root = corpora["ravdess"]
    actors = sorted(p.name for p in root.iterdir())
    assert actors == ["Actor_01", "Actor_02", "Actor_03", "Actor_04"]
    for actor in actors:
        files = sorted((root / actor).iterdir())
        assert len(files) == 60
        for f in files:
            m = RAVDESS_NAME.match(f.name)
            assert m and f"Actor_{m[5]}" == actor
            assert not (m[1] == "1" and m[2] == "2")  # neutral has no strong intensity
        info = sf.info(files[0])
        assert (info.samplerate, info.channels, info.subtype) == (48000, 1, "PCM_16")
    assert len(C._ravdess_jobs(root, "paper", 0)) == 24 * 60


# --------------------------------------------------------------------------- engineering


def test_deterministic_across_processes_and_seeds(corpora, tmp_path):
    ref = corpora["cremad"] / "AudioWAV"  # written by a pool of processes
    # same seed, rendered here in reverse order in this one process: identical bytes
    for job in C._cremad_jobs(tmp_path / "a", "small", 0)[::-12]:
        W.run_job(job)
        assert job.path.read_bytes() == (ref / job.path.name).read_bytes(), job.path.name
    # another seed: different audio
    for job in C._cremad_jobs(tmp_path / "b", "small", 1)[:3]:
        W.run_job(job)
        assert job.path.read_bytes() != (ref / job.path.name).read_bytes()


def test_resume_skips_complete_files_and_repairs_others(corpora, tmp_path):
    import shutil

    root = tmp_path / "iemocap"
    shutil.copytree(corpora["iemocap"], root)
    wavs = sorted(root.glob("Session1/sentences/wav/*/*.wav"))
    missing, truncated, kept = wavs[0], wavs[1], wavs[2]
    ref_missing, ref_truncated = missing.read_bytes(), truncated.read_bytes()
    missing.unlink()
    truncated.write_bytes(ref_truncated[:1000])
    mtime = kept.stat().st_mtime_ns
    C.synth_iemocap(root, seed=0, progress=False, workers=1)
    assert missing.read_bytes() == ref_missing
    assert truncated.read_bytes() == ref_truncated
    assert kept.stat().st_mtime_ns == mtime  # not rewritten
    assert not list(root.rglob("*.tmp"))


def test_arguments_are_checked(tmp_path):
    assert SCALES == ("small", "paper")
    with pytest.raises(ValueError, match="unknown corpus"):
        synthesize_corpus("msp-podcast", tmp_path)
    with pytest.raises(ValueError, match="scale"):
        synthesize_corpus("ravdess", tmp_path, scale="huge")
    with pytest.raises(ValueError, match="seed"):
        synthesize_corpus("ravdess", tmp_path, seed=-1)


def test_signal_contract():
    rng = np.random.default_rng(0)
    y = synthesize(VoiceSettings(), 16000, rng, n_samples=24000, lead_s=0.3, trail_s=0.3)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 24000
    assert np.abs(y).max() <= 1.0 and np.abs(y).max() > 0.01
    loud = synthesize(VoiceSettings(level_db=30.0), 48000, rng, text="Dogs are sitting")
    assert loud.dtype == np.float32 and np.abs(loud).max() <= 0.98


# --------------------------------------------------------------------------- acoustics


def _load16(path: Path) -> np.ndarray:
    y, sr = sf.read(path, dtype="float32")
    return y if sr == 16000 else librosa.resample(y, orig_sr=sr, target_sr=16000)


def test_silence_at_both_ends_is_removed_by_a_20db_trim(corpora):
    for name, pattern in (("iemocap", "Session*/sentences/wav/*/*.wav"),
                          ("cremad", "AudioWAV/*.wav"), ("ravdess", "Actor_*/*.wav")):  # fmt: skip
        files = sorted(corpora[name].glob(pattern))[::6]
        heads, tails = [], []
        for f in files:
            y = _load16(f)
            if len(y) == 0:
                continue
            _, (a, b) = librosa.effects.trim(y, top_db=20)
            heads.append(a / 16000)
            tails.append((len(y) - b) / 16000)
            # the edges are a low noise floor: far below the speech peak
            peak = np.max(librosa.feature.rms(y=y))
            edge = np.sqrt(np.mean(y[:800] ** 2))
            assert 20 * np.log10(peak / max(edge, 1e-9)) > 25, f.name
        heads_a, tails_a = np.array(heads), np.array(tails)
        assert heads_a.min() > 0.05 and tails_a.min() > 0.03, name
        low = 0.5 if name == "ravdess" else 0.12
        assert np.median(heads_a) > low and np.median(tails_a) > low, name


def _f0_rms_centroid(y: np.ndarray) -> tuple[float, float, float, float]:
    yt, _ = librosa.effects.trim(y, top_db=20)
    f0 = librosa.yin(yt, fmin=60, fmax=500, sr=16000, frame_length=1024, hop_length=160)
    rms = librosa.feature.rms(y=yt, frame_length=1024, hop_length=160)[0]
    n = min(len(f0), len(rms))
    voiced = f0[:n][rms[:n] > 0.3 * rms.max()]
    centroid = librosa.feature.spectral_centroid(y=yt, sr=16000)[0].mean()
    return (
        float(np.median(voiced)),
        float(np.sqrt(np.mean(yt**2))),
        float(centroid),
        len(yt) / 16000,
    )


def test_acoustic_class_differences(corpora):
    stats: dict[tuple[str, str], list[tuple[float, float, float, float]]] = defaultdict(list)
    labels = {}
    for txt in corpora["iemocap"].glob("Session*/dialog/EmoEvaluation/*.txt"):
        labels.update({m[3]: m[4] for m in map(SUMMARY.match, txt.read_text().splitlines()) if m})
    for f in corpora["iemocap"].glob("Session*/sentences/wav/*/*.wav"):
        if labels[f.stem] in ("ang", "sad"):
            stats["iemocap", labels[f.stem]].append(_f0_rms_centroid(_load16(f)))
    for f in corpora["ravdess"].glob("Actor_*/03-01-0[45]-*.wav"):
        stats["ravdess", "ang" if f.name[6:8] == "05" else "sad"].append(
            _f0_rms_centroid(_load16(f))
        )
    for f in (corpora["cremad"] / "AudioWAV").glob("*_[AS][NA][GD]_*.wav"):
        if sf.info(f).frames:
            key = "ang" if "_ANG_" in f.name else "sad"
            stats["cremad", key].append(_f0_rms_centroid(_load16(f)))
    for corpus in ("iemocap", "ravdess", "cremad"):
        ang = np.mean(stats[corpus, "ang"], axis=0)
        sad = np.mean(stats[corpus, "sad"], axis=0)
        assert ang[0] > 1.2 * sad[0], corpus  # higher F0
        assert ang[1] > 1.5 * sad[1], corpus  # louder
        assert ang[2] > sad[2], corpus  # brighter spectrum (tense voice)
        if corpus != "iemocap":  # fixed sentences: sad is slower, i.e. longer
            assert sad[3] > 1.1 * ang[3], corpus
