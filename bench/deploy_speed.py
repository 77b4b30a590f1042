"""Deployment speed: PyTorch float32 vs ONNX float32 vs ONNX int8, full DistilHuBERT.

Also measures the optional ``int8-fast`` variant (feature-extractor activations in uint8).
Builds a model folder with the exact DistilHuBERT architecture (random weights: speed does
not depend on their values) and a head, exports it with :func:`edgeser.deploy.export_model`,
then measures each variant in its own subprocess (so peak memory is per variant):
median latency over several runs and real-time factor (latency / audio duration) for
1 s, 3 s and 10 s speech-like inputs, model size on disk, peak RSS, and ratios to PyTorch
float32. Prints a markdown table. Not a test: figures depend on the machine and its load.

    .venv/bin/python bench/deploy_speed.py [--runs 9] [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from encoder_speed import speech_like  # bench/ is on sys.path when run as a script

SR = 16_000
DURATIONS = (1.0, 3.0, 10.0)
VARIANTS = ("pytorch-fp32", "onnx-fp32", "onnx-int8", "onnx-int8-fast")
FILES = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx",
         "onnx-int8-fast": "model.int8-fast.onnx"}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: reset at exec, unlike ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def runner(variant: str, model_dir: Path, onnx_dir: Path, threads: int):
    """A function ``wave -> probabilities`` for one variant."""
    if variant == "pytorch-fp32":
        import torch

        from edgeser.core.preprocess import peak_normalize, preemphasis
        from edgeser.runs import load_trained

        torch.set_num_threads(threads)
        model, _, encoder, _ = load_trained(model_dir)
        head = model.head.eval()

        def run(w: np.ndarray) -> np.ndarray:
            x = peak_normalize(preemphasis(w, SR), SR)
            h = encoder.encode([x])[0]
            with torch.no_grad():
                return torch.softmax(head(h[:, None]), -1).numpy()

        return run
    from edgeser.deploy.export import onnx_session, pad_batch

    session = onnx_session(onnx_dir / FILES[variant], threads=threads)
    return lambda w: session.run(None, pad_batch([w]))[0]


def memory_worker(variant: str, model_dir: Path, onnx_dir: Path, threads: int) -> dict:
    """Load one variant and run the longest input twice; report peak RSS (subprocess)."""
    run = runner(variant, model_dir, onnx_dir, threads)
    wave = speech_like(max(DURATIONS), seed=1)
    run(wave)
    run(wave)
    return {"variant": variant, "peak_rss_mb": _peak_rss_mb()}


def interleaved_latency(runners: dict, runs: int) -> dict[str, dict[str, float]]:
    """Median latency (ms) per variant and duration, variants interleaved run by run so
    that a change of machine load hits every variant alike."""
    out: dict[str, dict[str, float]] = {v: {} for v in runners}
    for d in DURATIONS:
        wave = speech_like(d, seed=int(d))
        times: dict[str, list[float]] = {v: [] for v in runners}
        for fn in runners.values():
            fn(wave)  # warm-up
        for _ in range(runs):
            for v, fn in runners.items():
                start = time.perf_counter()
                fn(wave)
                times[v].append(time.perf_counter() - start)
        for v in runners:
            out[v][str(d)] = 1000.0 * statistics.median(times[v])
    return out


def build(out: Path) -> tuple[Path, Path]:
    """A full-size model folder (random DistilHuBERT + head) and its export."""
    import torch

    from edgeser.config import TrainConfig
    from edgeser.deploy.export import export_model
    from edgeser.models.encoder import random_encoder
    from edgeser.pipeline import build_model, save_model

    model_dir, onnx_dir = out / "production", out / "onnx"
    if (onnx_dir / "model.json").is_file():
        return model_dir, onnx_dir
    encoder = random_encoder(seed=0)
    cfg = TrainConfig(encoder="random", precision="fp32")
    model = build_model(cfg, encoder, "pooled")
    with torch.no_grad():
        model.head.classifier[-1].weight.mul_(30.0)
    save_model(model_dir, model, cfg, encoder, "pooled", {"name": "bench"})
    t0 = time.perf_counter()
    export_model(model_dir, onnx_dir, encoder=encoder, extra_variants=("int8-fast",))
    print(f"export took {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return model_dir, onnx_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="work folder (kept if given)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--onnx-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = memory_worker(args.worker, args.model_dir, args.onnx_dir, args.threads)
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="edgeser-bench-") as tmp:
        out = args.out or Path(tmp)
        model_dir, onnx_dir = build(out)
        sizes = {"pytorch-fp32": (model_dir / "model.safetensors").stat().st_size,
                 **{v: (onnx_dir / f).stat().st_size for v, f in FILES.items()}}
        runners = {v: runner(v, model_dir, onnx_dir, args.threads) for v in VARIANTS}
        latency = interleaved_latency(runners, args.runs)
        results = {}
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--worker", variant, "--model-dir", str(model_dir),
                   "--onnx-dir", str(onnx_dir), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[variant]["latency_ms"] = latency[variant]
    # the PyTorch size is the encoder's fp32 state dict plus the head checkpoint
    sizes["pytorch-fp32"] += 23_491_968 * 4
    base = results["pytorch-fp32"]["latency_ms"]
    print(f"threads={args.threads}, runs={args.runs} (median), load avg {os.getloadavg()[0]:.2f}")
    print()
    head = "| variant | size MB | " + " | ".join(
        f"{d:g} s: ms (RTF, ×PT)" for d in DURATIONS) + " | peak RSS MB |"
    print(head)
    print("|" + "---|" * (len(DURATIONS) + 3))
    for variant in VARIANTS:
        r = results[variant]
        cells = []
        for d in DURATIONS:
            ms = r["latency_ms"][str(d)]
            cells.append(f"{ms:.1f} ({ms / (1000 * d):.3f}, {base[str(d)] / ms:.2f}×)")
        print(f"| {variant} | {sizes[variant] / 1e6:.1f} | " + " | ".join(cells)
              + f" | {r['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
