"""The full-size 8-bit DistilHuBERT model on emulated ARM64 CPUs against x86: the same answers?

Builds (or reuses) the full-size export of ``bench/deploy_speed.py`` (random weights, a
sharpened head), takes 12 files of ``ravdess-mini`` (every tenth), prepares them on x86 as
the runtime does (16 kHz, trimmed), and runs ``model.int8.onnx`` and ``model.int8.ort`` on
each under qemu for the CPU models of ``tools/arm64.py`` (``cortex-a53``: NEON;
``cortex-a76``: dot product; ``max``: ``i8mm``), two CPU models at a time. Reports per CPU
model the agreement (same label) and the mean and largest |Δp| against x86's
``model.int8.onnx`` and ``model.onnx`` (float32) on the same inputs. Emulation takes
about 100 s per 3 s utterance: the wall time printed says nothing of a phone's speed.

    .venv/bin/python bench/arm_agreement.py [--files 12] [--out DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeser.core.cpu import format_hardware
from edgeser.runtime.model import OnnxEmotionModel

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "corpora" / "ravdess-mini"
GUEST = r"""
import json, sys
import numpy as np
from edgeser.runtime.model import OnnxEmotionModel
job = json.loads(open(sys.argv[1]).read())
out = {}
for kind, path in job["models"].items():
    model = OnnxEmotionModel(path, threads=1)
    out[kind] = [model.run([np.load(w)])[0].tolist() for w in job["waves"]]
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "edgeser-arm")
    ap.add_argument("--speech", type=Path, default=SPEECH)
    ap.add_argument("--files", type=int, default=12)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "tools"))
    import arm64

    from deploy_speed import build

    print(format_hardware())
    if not args.speech.is_dir():
        print(f"no real speech at {args.speech}")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    arm64.build()
    _, onnx_dir = build(args.out / "export", variants=())
    files = sorted(args.speech.rglob("*.wav"))[::10][: args.files]
    x86 = {
        k: OnnxEmotionModel(onnx_dir / f, threads=2)
        for k, f in (("int8", "model.int8.onnx"), ("float32", "model.onnx"))
    }
    waves = [x86["int8"].prepare(*_read(f)) for f in files]
    paths = []
    for i, w in enumerate(waves):
        np.save(args.out / f"wave{i}.npy", w)
        paths.append(str(args.out / f"wave{i}.npy"))
    ref = {k: np.stack([m.run([w])[0] for w in waves]) for k, m in x86.items()}
    models = {
        "int8": str(onnx_dir / "model.int8.onnx"),
        "int8_ort": str(onnx_dir / "model.int8.ort"),
    }
    (args.out / "job.json").write_text(json.dumps({"models": models, "waves": paths}))
    (args.out / "guest.py").write_text(GUEST)
    seconds = sum(len(w) for w in waves) / 16000
    print(
        f"{len(files)} files, {seconds:.1f} s of audio after the trim; the emulated runs take long",
        flush=True,
    )

    def one(cpu: str) -> tuple[str, dict, float]:
        t0 = time.perf_counter()
        run = arm64.run(
            cpu, [str(args.out / "guest.py"), str(args.out / "job.json")], timeout=6 * 3600
        )
        if run.returncode != 0:
            raise RuntimeError(f"{cpu}: {run.stderr[-2000:]}")
        return cpu, json.loads(run.stdout.strip().splitlines()[-1]), time.perf_counter() - t0

    rows = []
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        for cpu, out, took in pool.map(one, arm64.CPUS):
            for kind, values in out.items():
                got = np.asarray(values)
                cells = []
                for against in ("int8", "float32"):
                    d = np.abs(got - ref[against])
                    same = float(np.mean(got.argmax(1) == ref[against].argmax(1)))
                    cells.append(f"{100 * same:.0f} % | {d.mean():.2e} | {d.max():.2e}")
                rows.append(f"| {cpu} | {kind} | " + " | ".join(cells) + f" | {took:.0f} |")
            print(f"{cpu} done in {took:.0f} s", flush=True)
    print(
        "\n| ARM64 CPU (qemu) | file | vs x86 int8: same label | mean \\|Δp\\| | max \\|Δp\\| "
        "| vs x86 float32: same label | mean \\|Δp\\| | max \\|Δp\\| | emulated s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


def _read(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32")
    return x, sr


if __name__ == "__main__":
    sys.exit(main())
