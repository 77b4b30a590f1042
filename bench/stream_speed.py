"""Streaming throughput (x real time) of ``edgeser stream`` on a long generated file.

    python bench/stream_speed.py [MODEL.onnx ...] [--minutes 10] [--threads 2]

Writes a long 16 kHz file (real RAVDESS utterances separated by 0.5-2 s of silence when
``../shared/corpora/ravdess-mini`` exists, else harmonic-tone bursts), then times the whole
streaming path (blockwise read, VAD, segmentation, one model run per segment) for each
VAD, with the dummy model (tests' 4-feature graph: measures the streaming overhead) and
with every exported model given on the command line. Median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeser.audio.io import load_audio
from edgeser.core.cpu import format_hardware, hardware_summary
from edgeser.runtime import OnnxEmotionModel, file_blocks, make_vad, speech_segments
from edgeser.runtime.stream import stream_predictions
from edgeser.testing import tone

SR = 16_000
RAVDESS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "ravdess-mini"


def write_long_file(path: Path, minutes: float, seed: int = 0) -> str:
    """Write ``minutes`` of speech-and-silence to ``path`` block by block; returns the source."""
    rng = np.random.default_rng(seed)
    files = sorted(RAVDESS.glob("Actor_*/*.wav")) if RAVDESS.is_dir() else []
    utterances = [load_audio(f) for f in files[:40]]
    source = f"RAVDESS ({len(utterances)} utterances, looped)" if utterances else "tone bursts"
    total = round(minutes * 60 * SR)
    written = 0
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        i = 0
        while written < total:
            if utterances:
                x = utterances[i % len(utterances)]
            else:
                x = tone(float(rng.uniform(0.8, 4.0)), freq=float(rng.uniform(100, 300)), seed=i)
            gap = np.zeros(round(rng.uniform(0.5, 2.0) * SR), dtype=np.float32)
            chunk = np.concatenate([x, gap])[: total - written]
            f.write(chunk)
            written += len(chunk)
            i += 1
    return source


def time_run(fn, repeats: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path, help="exported model.onnx / model.int8.onnx")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        from edgeser.testing import make_dummy_model

        dummy = make_dummy_model(Path(tmp) / "dummy")
        path = Path(tmp) / "long.wav"
        source = write_long_file(path, args.minutes)
        duration = sf.info(str(path)).duration
        print(format_hardware(hardware_summary(with_torch=False)))
        print(
            f"input: {duration / 60:.1f} min of {source}, 16 kHz; threads {args.threads}; "
            f"median of {args.repeats}"
        )
        print(f"{'stage':<44} {'seconds':>8} {'x real time':>12} {'segments':>9}")

        def report(name: str, seconds: float, n: int) -> None:
            print(f"{name:<44} {seconds:8.2f} {duration / seconds:12.0f} {n:9d}", flush=True)

        sec, _ = time_run(lambda: sum(len(b) for b in file_blocks(path)), args.repeats)
        report("read only (blocks of 0.5 s)", sec, 0)
        for kind in ("silero", "webrtc"):
            vad = make_vad(kind)
            sec, n = time_run(
                lambda vad=vad: sum(1 for _ in speech_segments(file_blocks(path), vad)),
                args.repeats,
            )
            report(f"read + {kind} VAD + segmentation", sec, n)
            for model_path in [dummy, *args.models]:
                model = OnnxEmotionModel(model_path, threads=args.threads)
                name = "dummy" if model_path == dummy else model_path.name
                sec, n = time_run(
                    lambda m=model, vad=vad: sum(
                        1 for _ in stream_predictions(m, file_blocks(path), vad)
                    ),
                    args.repeats,
                )
                report(f"stream, {kind}, model {name}", sec, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
