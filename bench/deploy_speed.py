"""Deployment speed of every model variant, full DistilHuBERT, measured in one run.

Variants: PyTorch float32 (``pytorch-fp32``: the ``transformers`` modules, what a user of
plain PyTorch runs; ``pytorch-direct``: edgeser's direct float32 encoder path), ONNX float32
(``model.onnx``), ONNX int8 default
(``model.int8.onnx``, scheme "mixed") and the optional export variants: int8 "fast"
(``model.int8-fast.onnx``), float16 storage (``model.float16.onnx``: float16 weights,
float32 arithmetic) and float16 compute (``model.float16-compute.onnx``). Builds a model
folder with the exact DistilHuBERT architecture (random weights: speed does not depend on
their values) and a head and exports it with :func:`edgeser.exporting.export_model`. For 1 s,
3 s and 10 s speech-like inputs it runs every variant in this one process, interleaved run
by run (so a change of machine load hits every variant alike), and reports the median
latency, the real-time factor (latency / audio duration) and the speed ratios to PyTorch
float32 (×PT) and to ONNX float32 (×ONNX); then model size on disk and peak RSS (each
variant loaded alone in a subprocess). With ``--speech DIR`` it also reports each ONNX
variant's fidelity to ONNX float32 on the audio files of DIR (argmax agreement, mean and
max |Δp|). Prints the hardware (CPU model, flags, torch's kernel level, onnxruntime's
version) and markdown tables. Not a test: figures depend on the machine and its load.

    .venv/bin/python bench/deploy_speed.py [--runs 9] [--threads 2] [--out DIR]
        [--speech ../shared/corpora/ravdess-mini]
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

from edgeser.core.cpu import format_hardware
from edgeser.exporting.exporter import VARIANTS as EXPORT_VARIANTS

SR = 16_000
DURATIONS = (1.0, 3.0, 10.0)
EXTRA = tuple(EXPORT_VARIANTS)  # every optional export variant besides fp32/int8
FILES = {
    "onnx-fp32": "model.onnx",
    "onnx-int8": "model.int8.onnx",
    **{f"onnx-{v}": name for v, (name, _) in EXPORT_VARIANTS.items()},
}
TORCH_IMPLS = {"pytorch-fp32": "modules", "pytorch-direct": "direct"}
VARIANTS = (*TORCH_IMPLS, *FILES)


def _speech(seconds: float, seed: int) -> np.ndarray:
    """Speech-like input (numpy only: an ONNX worker's peak RSS must not include torch)."""
    from edgeser.exporting.calibration import speech_like

    return speech_like(seconds, np.random.default_rng(seed))


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
    if variant in TORCH_IMPLS:
        import torch

        from edgeser.audio.frontend import peak_normalize, preemphasis
        from edgeser.training.folder import load_trained

        torch.set_num_threads(threads)
        model, _, encoder, _ = load_trained(model_dir)
        encoder = encoder.variant(precision="fp32", impl=TORCH_IMPLS[variant])
        head = model.head.eval()

        def run(w: np.ndarray) -> np.ndarray:
            x = peak_normalize(preemphasis(w, SR), SR)
            h = encoder.encode([x])[0]
            with torch.no_grad():
                return torch.softmax(head(h[:, None]), -1).numpy()

        return run
    from edgeser.runtime.session import onnx_session, pad_batch

    session = onnx_session(onnx_dir / FILES[variant], threads=threads)
    return lambda w: session.run(None, pad_batch([w]))[0]


def memory_worker(variant: str, model_dir: Path, onnx_dir: Path, threads: int) -> dict:
    """Load one variant and run the longest input twice; report peak RSS (subprocess; the
    ONNX variants never import torch, like the runtime install)."""
    run = runner(variant, model_dir, onnx_dir, threads)
    wave = _speech(max(DURATIONS), seed=1)
    run(wave)
    run(wave)
    return {"variant": variant, "peak_rss_mb": _peak_rss_mb(), "torch": "torch" in sys.modules}


#: Pause before each timed run. onnxruntime's worker threads (and OpenMP's) spin for a while
#: after a run; without a pause the next variant competes with the previous one's spinning
#: threads (measured: 1 s input, float32 ONNX 84 ms with no pause, 61 ms after 20 ms,
#: 42 ms after 200 ms, 41 ms when run back to back alone).
SETTLE_SECONDS = 0.2


def interleaved_latency(runners: dict, runs: int) -> dict[str, dict[str, float]]:
    """Median latency (ms) per variant and duration, variants interleaved run by run so
    that a change of machine load hits every variant alike (with a pause of
    :data:`SETTLE_SECONDS` before each run)."""
    out: dict[str, dict[str, float]] = {v: {} for v in runners}
    for d in DURATIONS:
        wave = _speech(d, seed=int(d))
        times: dict[str, list[float]] = {v: [] for v in runners}
        for fn in runners.values():
            fn(wave)  # warm-up
        for _ in range(runs):
            for v, fn in runners.items():
                time.sleep(SETTLE_SECONDS)
                start = time.perf_counter()
                fn(wave)
                times[v].append(time.perf_counter() - start)
        for v in runners:
            out[v][str(d)] = 1000.0 * statistics.median(times[v])
    return out


def fidelity(onnx_dir: Path, speech_dir: Path, threads: int) -> dict[str, dict[str, float]]:
    """Agreement with ONNX float32 on the audio files of ``speech_dir`` (trimmed as the
    runtime does), per ONNX variant: argmax agreement, mean and max |Δp|."""
    from edgeser.exporting.calibration import calibration_waves
    from edgeser.runtime.session import onnx_session, pad_batch

    files = sorted(p for p in speech_dir.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    if not files:
        raise SystemExit(f"no .wav/.flac files under {speech_dir}")
    waves = calibration_waves(files)
    order = np.argsort([len(w) for w in waves])  # batch similar lengths together

    def probs(path: Path) -> np.ndarray:
        session = onnx_session(path, threads=threads)
        out = None
        for start in range(0, len(order), 8):
            idx = order[start : start + 8]
            p = session.run(None, pad_batch([waves[i] for i in idx]))[0]
            out = np.zeros((len(waves), p.shape[1]), np.float32) if out is None else out
            out[idx] = p
        assert out is not None
        return out

    ref = probs(onnx_dir / FILES["onnx-fp32"])
    result = {"files": float(len(waves))}
    for variant, name in FILES.items():
        if variant == "onnx-fp32":
            continue
        p = probs(onnx_dir / name)
        delta = np.abs(p - ref)
        result[variant] = {
            "agreement": float(np.mean(p.argmax(1) == ref.argmax(1))),
            "mean_abs_dp": float(delta.mean()),
            "max_abs_dp": float(delta.max()),
        }
    return result


def build(out: Path, variants: tuple[str, ...] = EXTRA) -> tuple[Path, Path]:
    """A full-size model folder (random DistilHuBERT + head) and its export with
    ``variants`` (default: every one). An existing export in ``out`` is reused (delete it
    after changing the quantiser)."""
    import torch

    from edgeser.config import TrainConfig
    from edgeser.exporting.exporter import export_model
    from edgeser.models.ssl import random_encoder
    from edgeser.training.folder import build_model, save_model

    model_dir, onnx_dir = out / "production", out / "onnx"
    if not (onnx_dir / "model.json").is_file():
        encoder = random_encoder(seed=0)
        cfg = TrainConfig(encoder="random", precision="fp32")
        model = build_model(cfg, encoder, "pooled")
        with torch.no_grad():
            model.head.classifier[-1].weight.mul_(30.0)
        save_model(model_dir, model, cfg, encoder, "pooled", {"name": "bench"})
        t0 = time.perf_counter()
        export_model(model_dir, onnx_dir, encoder=encoder, extra_variants=variants)
        print(f"export took {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return model_dir, onnx_dir


def _table(results: dict, sizes: dict) -> None:
    pt, fp = results["pytorch-fp32"]["latency_ms"], results["onnx-fp32"]["latency_ms"]
    print(
        "| variant | size MB | "
        + " | ".join(f"{d:g} s: ms (RTF, ×PT, ×ONNX)" for d in DURATIONS)
        + " | peak RSS MB |"
    )
    print("|" + "---|" * (len(DURATIONS) + 3))
    for variant in VARIANTS:
        r = results[variant]
        cells = []
        for d in DURATIONS:
            ms = r["latency_ms"][str(d)]
            cells.append(
                f"{ms:.1f} ({ms / (1000 * d):.3f}, {pt[str(d)] / ms:.2f}×, {fp[str(d)] / ms:.2f}×)"
            )
        print(
            f"| {variant} | {sizes[variant] / 1e6:.1f} | "
            + " | ".join(cells)
            + f" | {r['peak_rss_mb']:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="work folder (kept if given)")
    parser.add_argument(
        "--speech",
        type=Path,
        default=None,
        help="folder of real speech files: also report fidelity to float32",
    )
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
        torch_size = (model_dir / "model.safetensors").stat().st_size
        sizes = {
            **{v: torch_size for v in TORCH_IMPLS},
            **{v: (onnx_dir / f).stat().st_size for v, f in FILES.items()},
        }
        load_before = os.getloadavg()
        runners = {v: runner(v, model_dir, onnx_dir, args.threads) for v in VARIANTS}
        latency = interleaved_latency(runners, args.runs)
        load_after = os.getloadavg()
        del runners
        results = {}
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        for variant in VARIANTS:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                variant,
                "--model-dir",
                str(model_dir),
                "--onnx-dir",
                str(onnx_dir),
                "--threads",
                str(args.threads),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[variant]["latency_ms"] = latency[variant]
        fid = fidelity(onnx_dir, args.speech, args.threads) if args.speech else None
    # the PyTorch size is the encoder's fp32 state dict plus the head checkpoint
    for v in TORCH_IMPLS:
        sizes[v] += 23_491_968 * 4
    print(format_hardware())
    print(
        f"threads={args.threads}, runs={args.runs} (median, variants interleaved), "
        f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after timing"
    )
    print()
    _table(results, sizes)
    if fid:
        print()
        print(f"Fidelity to ONNX float32 on {int(fid['files'])} files of {args.speech}:")
        print()
        print("| variant | argmax agreement | mean abs Δp | max abs Δp |")
        print("|---|---|---|---|")
        for variant in FILES:
            if variant in fid:
                f = fid[variant]
                print(
                    f"| {variant} | {100 * f['agreement']:.1f} % | {f['mean_abs_dp']:.4f} | "
                    f"{f['max_abs_dp']:.4f} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
