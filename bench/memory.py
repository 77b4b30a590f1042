"""Peak memory of the runtime as a phone runs it: ``edgeser predict`` and ``edgeser stream``
on real-speech-like audio of growing length, the whole process's peak RSS.

For each length (1, 3, 10, 30, 60 and 600 s by default) it writes a 16 kHz 16-bit mono WAV
of real speech with pauses (the files of ``--speech``, ``ravdess-mini`` by default,
concatenated with 0.4-1.2 s gaps and repeated; speech-like synthetic audio when the folder
is absent), runs ``edgeser predict MODEL FILE --json`` in a fresh process and reads that
process's peak resident set size from ``wait4`` (``ru_maxrss``: every page the process
ever held, numpy and onnxruntime included). Then ``edgeser stream`` on 10 and 60 minutes.
Two reference processes give the floor: the interpreter with numpy, soundfile, soxr and
onnxruntime imported, and the same plus ``edgeser.cli`` (what ``predict`` imports before
it loads a model); "session share" is predict's peak minus the second.

Builds (or reuses) the full-size DistilHuBERT export of ``bench/deploy_speed.py`` (random
weights: memory does not depend on their values). ``--model DIR`` measures another export,
and ``--src DIR`` runs another checkout's ``src`` (e.g. a worktree of an older commit, for
a before/after table). Prints the hardware and a markdown table; not a test.

    .venv/bin/python bench/memory.py [--out DIR] [--model DIR] [--lengths 1 3 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeser.core.cpu import format_hardware

SR = 16_000
ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "corpora" / "ravdess-mini"
LENGTHS = (1.0, 3.0, 10.0, 30.0, 60.0, 600.0)
STREAM_MINUTES = (10.0, 60.0)
FLOOR = "import numpy, soundfile, soxr, onnxruntime"


def speech_file(path: Path, seconds: float, speech: Path | None, seed: int = 0) -> Path:
    """A WAV of ``seconds`` of real speech with pauses (or speech-like synthetic audio),
    written in blocks (a long file never sits in memory)."""
    rng = np.random.default_rng(seed)
    clips: list[np.ndarray] = []
    if speech is not None and speech.is_dir():
        from edgeser.audio.io import load_audio

        for f in sorted(speech.rglob("*.wav"))[:40]:
            clips.append(load_audio(f, SR))
    if not clips:
        from edgeser.exporting.calibration import speech_like

        clips = [speech_like(3.0, rng) for _ in range(8)]
    total = round(seconds * SR)
    written = 0
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        k = 0
        while written < total:
            gap = np.zeros(round(rng.uniform(0.4, 1.2) * SR), np.float32)
            for part in (clips[k % len(clips)], gap):
                n = min(len(part), total - written)
                f.write(part[:n])
                written += n
            k += 1
    return path


def peak_rss(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, str, int]:
    """``(peak RSS MB, seconds, exit status, output tail, output lines)`` of ``argv``, read
    by a small parent process that reaps it with ``wait4`` (the child's own
    ``ru_maxrss``)."""
    script = (
        "import os, subprocess, sys, json, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, "
        "stderr=subprocess.STDOUT)\n"
        "data = p.stdout.read()\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "print(json.dumps([usage.ru_maxrss / 1024, time.perf_counter() - t, "
        "os.waitstatus_to_exitcode(status), data.decode(errors='replace')[-2000:], "
        "data.count(b'\\n')]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True, check=True
    )
    mb, seconds, code, out, lines = json.loads(run.stdout.strip().splitlines()[-1])
    return float(mb), float(seconds), int(code), str(out), int(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "edgeser-memory")
    ap.add_argument("--model", type=Path, default=None, help="an exported model folder")
    ap.add_argument("--file", default="model.int8.onnx", help="the file of it to run")
    ap.add_argument("--src", type=Path, default=None, help="another checkout's src folder")
    ap.add_argument("--speech", type=Path, default=SPEECH)
    ap.add_argument("--lengths", type=float, nargs="+", default=list(LENGTHS))
    ap.add_argument("--stream-minutes", type=float, nargs="*", default=list(STREAM_MINUTES))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(format_hardware())
    if args.model is None:
        sys.path.insert(0, str(ROOT / "bench"))
        from deploy_speed import build

        _, args.model = build(args.out / "export", variants=())
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    model = str(args.model / args.file)
    print(f"model: {model} ({os.path.getsize(model) / 1e6:.1f} MB)")
    floor = peak_rss([sys.executable, "-c", FLOOR], env)[0]
    cli = peak_rss([sys.executable, "-c", FLOOR + "; import edgeser.cli"], env)[0]
    print(
        f"interpreter + numpy, soundfile, soxr, onnxruntime: {floor:.0f} MB; "
        f"+ edgeser.cli: {cli:.0f} MB"
    )
    edgeser = [sys.executable, "-m", "edgeser.cli"]
    rows = []
    for seconds in args.lengths:
        wav = speech_file(args.out / f"speech-{seconds:g}s.wav", seconds, args.speech)
        mb, took, code, out, _ = peak_rss([*edgeser, "predict", model, str(wav), "--json"], env)
        result = out.strip().splitlines()[-1] if out.strip() else ""
        try:
            obj = json.loads(result)
            what = (
                f"{obj['label']}, status {obj.get('status', '-')}, "
                f"{obj.get('segments', 1)} segment(s)"
            )
        except (json.JSONDecodeError, KeyError):
            what = f"exit {code}: " + result[-160:].replace("|", "/")
        rows.append(("predict", f"{seconds:g} s", mb, mb - cli, took, what))
        print(f"predict {seconds:g} s: peak {mb:.0f} MB ({took:.1f} s) {what}", flush=True)
    for minutes in args.stream_minutes:
        wav = speech_file(args.out / f"speech-{minutes:g}min.wav", 60 * minutes, args.speech)
        mb, took, code, out, segments = peak_rss([*edgeser, "stream", model, str(wav)], env)
        what = f"{segments} segments" if code == 0 else f"exit {code}: {out[-160:]}"
        rows.append(("stream", f"{minutes:g} min", mb, mb - cli, took, what))
        print(f"stream {minutes:g} min: peak {mb:.0f} MB ({took:.0f} s) {what}", flush=True)
    print(
        f"\n| command | input | peak RSS MB | above interpreter + edgeser.cli ({cli:.0f} MB) "
        "| wall s | result |"
    )
    print("|---|---|---|---|---|---|")
    for cmd, length, mb, share, took, what in rows:
        print(f"| {cmd} | {length} | {mb:.0f} | {share:.0f} | {took:.1f} | {what} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
