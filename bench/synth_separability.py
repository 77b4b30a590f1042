"""How learnable are the synthetic corpora? Prints UA figures of a simple baseline.

Hand-crafted features per utterance (20 dB trim; MFCC 1-13 mean/std, log-RMS mean/std,
F0 median/range from YIN on the loudest frames, log spectral centroid) and a logistic
regression:

1. leave-one-session-out on the synthetic IEMOCAP (four classes, exc merged into happy);
2. trained on all synthetic IEMOCAP, tested on the synthetic RAVDESS (four classes).

The figures should sit well above chance (25 %) and clearly below 100 %:
speaker-independent emotion recognition is meant to be learnable but not trivial.

    .venv/bin/python bench/synth_separability.py [--scale small] [--seed 0] [--root DIR]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edgeser.data.synth import synth_iemocap, synth_ravdess

LABELS = ("angry", "happy", "neutral", "sad")
IEMOCAP_MAP = {"ang": "angry", "hap": "happy", "exc": "happy", "neu": "neutral", "sad": "sad"}
RAVDESS_MAP = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}
SUMMARY = re.compile(r"^\[[\d.]+ - [\d.]+\]\t(\S+)\t(\S+)\t\[")


def features(path: Path) -> np.ndarray:
    """A small prosodic + spectral feature vector of one file (resampled to 16 kHz)."""
    y, sr = librosa.load(path, sr=16000)
    y, _ = librosa.effects.trim(y, top_db=20)
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=14)[1:]
    rms = librosa.feature.rms(y=y, frame_length=512, hop_length=160)[0]
    log_rms = 20 * np.log10(rms + 1e-6)
    f0 = librosa.yin(y, fmin=60, fmax=500, sr=sr, frame_length=1024, hop_length=160)
    n = min(len(f0), len(rms))
    voiced = f0[:n][rms[:n] > 0.3 * rms.max()]
    lf0 = np.log2(voiced if len(voiced) else np.array([100.0]))
    centroid = librosa.feature.spectral_centroid(y=y, sr=sr)[0]
    f0_range = np.subtract(*np.percentile(lf0, [90, 10]))
    prosody = [log_rms.mean(), log_rms.std(), np.median(lf0), f0_range]
    return np.concatenate([mfcc.mean(1), mfcc.std(1), prosody, [np.log(centroid.mean())]])


def iemocap_table(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, sessions = [], [], []
    for txt in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        for line in txt.read_text().splitlines():
            m = SUMMARY.match(line)
            if not m or m[2] not in IEMOCAP_MAP:
                continue
            utt = m[1]
            ses = int(utt[3:5])
            dialog = utt.rsplit("_", 1)[0]
            xs.append(features(root / f"Session{ses}/sentences/wav/{dialog}/{utt}.wav"))
            ys.append(IEMOCAP_MAP[m[2]])
            sessions.append(ses)
    return np.array(xs), np.array(ys), np.array(sessions)


def ravdess_table(root: Path) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for wav in sorted(root.glob("Actor_*/*.wav")):
        emo = wav.stem.split("-")[2]
        if emo in RAVDESS_MAP:
            xs.append(features(wav))
            ys.append(RAVDESS_MAP[emo])
    return np.array(xs), np.array(ys)


def model():
    return make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=5000, C=0.3, class_weight="balanced")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", type=Path, help="folder holding iemocap/ and ravdess/ (kept)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        t0 = time.perf_counter()
        iem = synth_iemocap(root / "iemocap", scale=args.scale, seed=args.seed, progress=False)
        rav = synth_ravdess(root / "ravdess", scale=args.scale, seed=args.seed, progress=False)
        print(f"generated in {time.perf_counter() - t0:.1f} s")
        x, y, ses = iemocap_table(iem)
        xr, yr = ravdess_table(rav)
    print(f"IEMOCAP 4-class utterances: {len(y)}; RAVDESS 4-class: {len(yr)}")
    uas, was = [], []
    pred_all = np.empty_like(y)
    for s in np.unique(ses):
        test = ses == s
        clf = model().fit(x[~test], y[~test])
        pred = clf.predict(x[test])
        pred_all[test] = pred
        uas.append(balanced_accuracy_score(y[test], pred))
        was.append(np.mean(pred == y[test]))
    print(
        f"IEMOCAP LOSO: UA {100 * np.mean(uas):.1f} ± {100 * np.std(uas):.1f} %, "
        f"WA {100 * np.mean(was):.1f} % (folds: {', '.join(f'{100 * u:.0f}' for u in uas)})"
    )
    print("confusion (rows true, cols pred):", LABELS)
    print(confusion_matrix(y, pred_all, labels=LABELS))
    clf = model().fit(x, y)
    pr = clf.predict(xr)
    print(
        f"IEMOCAP -> RAVDESS: UA {100 * balanced_accuracy_score(yr, pr):.1f} %, "
        f"WA {100 * np.mean(pr == yr):.1f} %"
    )
    print(confusion_matrix(yr, pr, labels=LABELS))


if __name__ == "__main__":
    main()
