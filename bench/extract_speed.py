"""Feature-extraction speed and fidelity of the encoder's precisions and implementations.

Reproduces the workload of ``edgeser.features.extract``: ``Encoder.encode`` on a batch of
about 60 s of audio (15 speech-like utterances of 3-5 s, ``edgeser.exporting.exporter
.speech_like``), sorted by length, ``batch_size`` 8, with the full DistilHuBERT
architecture (random weights; speed does not depend on them). The variants run
interleaved (round after round) in one process, so that a shared machine's load hits them
alike; the figures are medians over the rounds, and the ratios medians of per-round ratios
to ``fp32 modules``:

- ``fp32 modules``: the ``transformers`` modules in float32 (what plain PyTorch runs);
- ``fp32 direct``: edgeser's direct float32 path (``precision: auto`` without native
  bfloat16): folded GroupNorm, strided-matmul convolutions over utterances laid end to end,
  fused q/k/v;
- ``fp32 direct+int8``: the same with dynamic int8 transformer linear maps;
- ``bf16 modules`` / ``bf16 direct`` / ``bf16 direct+int8``: bfloat16 under CPU autocast,
  the direct bfloat16 path, and the direct path with int8 linears (``precision: auto`` on
  CPUs with native bfloat16).

By default the bf16 variants run only where bfloat16 is native (elsewhere PyTorch emulates
it tens of times slower: ``--all`` runs them anyway, on a shorter workload). Each variant's
GFLOP/s (DistilHuBERT: 6.8 GFLOP per second of audio) is printed beside the float32 peak of
this CPU as measured by one large matrix product.

Then, if the real RAVDESS sample is present (``--ravdess``, default ``../shared/corpora/
ravdess-mini`` beside the checkout, as the tests use), the lowest cosine over all its
files between each variant and ``fp32 modules`` of the per-layer mean- and std-pooled
hidden states (the ``pooled`` features of ``edgeser.features.summarise``).

    .venv/bin/python bench/extract_speed.py [--runs 5] [--threads N] [--all] [--no-fidelity]

Run it under ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 machine to
see the other CPU class. Not a test: figures depend on the machine and on its load
(printed). On a machine whose cores are busy with other work, OpenMP's default
spin-waiting makes 2 torch threads much slower than 1; ``OMP_WAIT_POLICY=PASSIVE`` (set
before starting Python) avoids most of it.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edgeser.core.cpu import bf16_check, format_hardware
from edgeser.exporting.calibration import speech_like
from edgeser.models.ssl import Encoder, random_encoder

SR = 16_000
#: GFLOP per second of audio of DistilHuBERT (conv extractor 4.9, transformer side 1.9).
GFLOP_PER_AUDIO_SECOND = 6.8
RAVDESS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "ravdess-mini"
VARIANTS = {  # label -> (precision, impl)
    "fp32 modules": ("fp32", "modules"),
    "fp32 direct": ("fp32", "direct"),
    "fp32 direct+int8": ("fp32", "direct+int8"),
    "bf16 modules": ("bf16", "modules"),
    "bf16 direct": ("bf16", "direct"),
    "bf16 direct+int8": ("bf16", "direct+int8"),
}
BASELINE = "fp32 modules"


def workload(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    waves = [speech_like(float(rng.uniform(3.0, 5.0)), rng) for _ in range(count)]
    return sorted(waves, key=len)


def encoders(labels: list[str]) -> dict[str, Encoder]:
    base = random_encoder(seed=0)
    return {
        label: base.variant(precision=VARIANTS[label][0], impl=VARIANTS[label][1])
        for label in labels
    }


def matmul_peak(threads: int) -> float:
    """GFLOP/s of one large float32 matrix product (best of 3): this CPU's practical peak."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def speed(encs: dict[str, Encoder], waves: list[np.ndarray], runs: int, peak: float) -> None:
    seconds = sum(w.size for w in waves) / SR
    for enc in encs.values():  # warm-up (weight casts, allocator)
        enc.encode(waves)
    times: dict[str, list[float]] = {label: [] for label in encs}
    for _ in range(runs):
        for label, enc in encs.items():
            start = time.perf_counter()
            enc.encode(waves)
            times[label].append(time.perf_counter() - start)
    print(
        f"workload: {len(waves)} utterances, {seconds:.1f} s of audio, batch_size 8, "
        f"{runs} interleaved rounds; float32 matmul peak {peak:.0f} GFLOP/s"
    )
    print(
        f"{'variant':>18} {'ms/audio s':>11} {'GFLOP/s':>8} {'of peak':>8} "
        f"{'vs modules':>11}  per round"
    )
    for label, values in times.items():
        ratios = (
            [b / t for b, t in zip(times[BASELINE], values, strict=True)]
            if BASELINE in times
            else [float("nan")] * len(values)
        )
        ms = 1e3 * statistics.median(values) / seconds
        gflops = GFLOP_PER_AUDIO_SECOND / (ms / 1e3)
        print(
            f"{label:>18} {ms:>11.1f} {gflops:>8.0f} {100 * gflops / peak:>7.0f}% "
            f"{statistics.median(ratios):>10.2f}x  " + " ".join(f"{r:.2f}" for r in ratios)
        )


def pooled(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer mean and std over frames, as ``edgeser.features.summarise``."""
    return hidden.mean(dim=1), torch.sqrt(hidden.var(dim=1, unbiased=False) + 1e-6)


def fidelity(encs: dict[str, Encoder], folder: Path, every: dict[str, int]) -> None:
    from edgeser.audio.frontend import FrontEnd
    from edgeser.audio.io import load_audio

    files = sorted(folder.glob("Actor_*/*.wav"))
    if not files:
        print(f"fidelity: no RAVDESS files under {folder}; skipped")
        return
    front_end = FrontEnd()
    waves = [front_end(load_audio(f, SR), SR) for f in files]
    reference_encoder = next(iter(encs.values())).variant(precision="fp32", impl="modules")
    reference = [pooled(h) for h in reference_encoder.encode(waves)]
    cos = torch.nn.functional.cosine_similarity
    print(
        f"fidelity vs fp32 modules on RAVDESS files ({sum(map(len, waves)) / SR:.0f} s in "
        "all): lowest cosine over files, per hidden state (transformer input, layer 1, 2)"
    )
    for label, enc in encs.items():
        if label == BASELINE:
            continue
        step = every.get(label, 1)
        got = [pooled(h) for h in enc.encode(waves[::step])]
        ref = reference[::step]
        mean = torch.stack([cos(r[0], g[0], dim=-1) for r, g in zip(ref, got, strict=True)])
        std = torch.stack([cos(r[1], g[1], dim=-1) for r, g in zip(ref, got, strict=True)])
        print(
            f"{label:>18}  {len(got):>3} files  mean-pooled "
            + " ".join(f"{x:.6f}" for x in mean.min(0).values)
            + "   std-pooled "
            + " ".join(f"{x:.6f}" for x in std.min(0).values)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--utterances", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--all",
        action="store_true",
        help="also the bf16 variants where bfloat16 is not native (slow)",
    )
    parser.add_argument("--ravdess", type=Path, default=RAVDESS)
    parser.add_argument("--no-fidelity", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(format_hardware())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average {load}")
    native = bf16_check().native
    labels = [v for v in VARIANTS if native or args.all or not v.startswith("bf16")]
    utterances = args.utterances if native or not args.all else max(2, args.utterances // 5)
    encs = encoders(labels)
    for label, enc in encs.items():
        print(f"{label:>18}: identity {enc.identity}")
    speed(encs, workload(utterances, args.seed), max(args.runs, 1), matmul_peak(args.threads))
    if not args.no_fidelity:
        if args.ravdess.is_dir():
            slow = {v: 10 for v in labels if v.startswith("bf16") and not native}
            fidelity(encs, args.ravdess, slow)
        else:
            print(f"fidelity: {args.ravdess} not found; skipped")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
