"""The browser page's speed and size: onnxruntime-web (WASM) against native onnxruntime.

Usage::

    .venv/bin/python bench/web_speed.py [--out bench/out/web] [--runs 5] [--minutes 10]

1. exports the full-size DistilHuBERT architecture (random weights; speed does not depend
   on them) with bench/deploy_speed.py's ``build`` (reused when present);
2. serves it with ``edgeser web`` and opens the page in headless Chromium (Debian's
   chromium, npm's playwright-core from ``web/``), once per WASM thread count;
3. times ``model.int8.onnx`` on 1, 3 and 10 s of speech-like signal in the page (median of
   ``--runs`` after a warm-up) and the same waveforms with native onnxruntime at the same
   thread count, in one run;
4. measures the page's load time and the bytes it transferred;
5. listens for ``--minutes`` to a fake microphone looping real speech from
   ``../shared/corpora/ravdess-mini`` and samples the tab's memory once a minute
   (``performance.measureUserAgentSpecificMemory``; needs the cross-origin isolation the
   server gives): it must not grow with time.

Prints the hardware and markdown tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edgeser.core.cpu import format_hardware
from edgeser.export.calibration import speech_like
from edgeser.runtime.model import OnnxEmotionModel
from edgeser.web.server import make_server

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = (1.0, 3.0, 10.0)


def native_ms(path: Path, wave: np.ndarray, threads: int, runs: int) -> float:
    model = OnnxEmotionModel(path, threads=threads)
    model.run([wave])
    times = []
    for _ in range(runs):
        time.sleep(0.2)  # let onnxruntime's spinning workers settle (see bench/README.md)
        t0 = time.perf_counter()
        model.run([wave])
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def speech_loop(minutes: float, out: Path) -> Path:
    """Real speech from ravdess-mini with pauses, about a minute, looped by the fake device."""
    import soundfile as sf

    from edgeser.audio.io import load_audio

    files = sorted((ROOT.parent / "shared" / "corpora" / "ravdess-mini").rglob("*.wav"))[::8]
    parts = []
    for f in files:
        parts += [load_audio(f, 48000), np.zeros(48000, np.float32)]
    sf.write(out, np.concatenate(parts), 48000, subtype="FLOAT")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/out/web"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=10.0, help="fake-microphone minutes")
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("Chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    print(format_hardware())
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True)
    npm = json.loads((ROOT / "web" / "package.json").read_text(encoding="utf-8"))
    print(f"browser: {version.stdout.strip()}; onnxruntime-web "
          f"{npm['dependencies']['onnxruntime-web']}")
    sys.path.insert(0, str(ROOT / "bench"))
    from deploy_speed import build

    _, onnx_dir = build(args.out)
    int8 = onnx_dir / "model.int8.onnx"
    waves = {d: speech_like(d, np.random.default_rng(0)) for d in DURATIONS}
    server = make_server(onnx_dir, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    job = {"url": f"http://{host}:{port}/", "chromium": chromium, "runs": args.runs,
           "threads": [1, 2], "waves": {f"{d:g}": waves[d].tolist() for d in DURATIONS},
           "mic": ({"wav": str(speech_loop(args.minutes, args.out.resolve() / "loop.wav")),
                    "minutes": args.minutes} if args.minutes > 0 else None)}
    job_file = (args.out / "web_job.json").resolve()  # the waveforms do not fit in argv
    job_file.write_text(json.dumps(job), encoding="utf-8")
    run = subprocess.run(["node", str(ROOT / "web" / "bench.mjs"), str(job_file)],
                         capture_output=True, text=True, cwd=ROOT / "web",
                         timeout=600 + 90 * args.minutes)
    server.shutdown()
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
        return 1
    res = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\nmodel.int8.onnx {int8.stat().st_size / 1e6:.1f} MB; median of {args.runs} runs\n")
    print("| threads | " + " | ".join(f"{d:g} s: WASM ms / native ms (×)" for d in DURATIONS)
          + " |")
    print("|---|" + "---|" * len(DURATIONS))
    for threads in (1, 2):
        cells = []
        for d in DURATIONS:
            wasm = res["latency"][str(threads)][f"{d:g}"]
            native = native_ms(int8, waves[d], threads, args.runs)
            cells.append(f"{wasm:.0f} / {native:.0f} ({wasm / native:.2f}×)")
        print(f"| {threads} | " + " | ".join(cells) + " |")
    load = res["load"]
    print(f"\npage load until ready: {load['ms'] / 1000:.2f} s, {load['bytes'] / 1e6:.1f} MB "
          "transferred (from localhost, no cache)")
    if res.get("memory"):
        print("\n| minute | tab memory MB | segments so far |\n|---|---|---|")
        for m in res["memory"]:
            print(f"| {m['seconds'] / 60:.0f} | {m['bytes'] / 1e6:.1f} | {m['segments']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
