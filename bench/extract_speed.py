"""Feature-extraction speed and fidelity of the encoder's precisions and bf16 implementations.

Reproduces the workload of ``edgeser.features.extract``: ``Encoder.encode`` on a batch of
about 60 s of audio (15 speech-like utterances of 3-5 s, ``edgeser.deploy.export
.speech_like``), sorted by length, ``batch_size`` 8, with the full DistilHuBERT
architecture (random weights; speed does not depend on them). The variants run
interleaved (A/B/C/D, round after round) in one process, so that a shared machine's load
hits them alike; the figures are medians over the rounds, and the ratios are medians of
per-round ratios to the bf16 autocast implementation (the one before ``bf16-v2``):

- ``fp32``: float32;
- ``bf16 autocast``: CPU autocast throughout (``bf16_impl="autocast"``, the earlier code);
- ``bf16 direct``: pre-cast bfloat16 weights, float32-accurate first conv + GroupNorm,
  time-major conv extractor over utterances laid end to end (``bf16_impl="direct"``);
- ``bf16 direct+int8``: the same with dynamic int8 transformer linear maps (the default).

Then, if the real RAVDESS sample is present (``--ravdess``, default
``/work/shared/corpora/ravdess-mini``), the lowest cosine over all its files between each
bf16 variant and float32 of the per-layer mean- and std-pooled hidden states (the
``pooled`` features of ``edgeser.features.summarise``).

    .venv/bin/python bench/extract_speed.py [--runs 5] [--threads N] [--no-fidelity]

Not a test: figures depend on the machine and on its load (printed). On a machine whose
cores are busy with other work, OpenMP's default spin-waiting makes 2 torch threads much
slower than 1; ``OMP_WAIT_POLICY=PASSIVE`` (set before starting Python) avoids most of it.
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

from edgeser.deploy.export import speech_like
from edgeser.models.encoder import Encoder, random_encoder

SR = 16_000
RAVDESS = Path("/work/shared/corpora/ravdess-mini")
VARIANTS = {  # label -> (precision, bf16_impl)
    "fp32": ("fp32", "direct+int8"),
    "bf16 autocast": ("bf16", "autocast"),
    "bf16 direct": ("bf16", "direct"),
    "bf16 direct+int8": ("bf16", "direct+int8"),
}
BASELINE = "bf16 autocast"


def workload(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    waves = [speech_like(float(rng.uniform(3.0, 5.0)), rng) for _ in range(count)]
    return sorted(waves, key=len)


def encoders() -> dict[str, Encoder]:
    base = random_encoder(seed=0)
    return {
        label: Encoder(base.model, source="random", is_random=True, precision=precision,
                       bf16_impl=impl)
        for label, (precision, impl) in VARIANTS.items()
    }


def speed(encs: dict[str, Encoder], waves: list[np.ndarray], runs: int) -> None:
    seconds = sum(w.size for w in waves) / SR
    for enc in encs.values():  # warm-up (weight casts, allocator)
        enc.encode(waves)
    times: dict[str, list[float]] = {label: [] for label in encs}
    for _ in range(runs):
        for label, enc in encs.items():
            start = time.perf_counter()
            enc.encode(waves)
            times[label].append(time.perf_counter() - start)
    print(f"workload: {len(waves)} utterances, {seconds:.1f} s of audio, batch_size 8, "
          f"{runs} interleaved rounds")
    print(f"{'variant':>18} {'ms/audio s':>11} {'median s':>9} {'vs autocast':>12}  per round")
    for label, values in times.items():
        ratios = [b / t for b, t in zip(times[BASELINE], values, strict=True)]
        print(f"{label:>18} {1e3 * statistics.median(values) / seconds:>11.1f} "
              f"{statistics.median(values):>9.3f} {statistics.median(ratios):>11.3f}x  "
              + " ".join(f"{r:.2f}" for r in ratios))


def pooled(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer mean and std over frames, as ``edgeser.features.summarise``."""
    return hidden.mean(dim=1), torch.sqrt(hidden.var(dim=1, unbiased=False) + 1e-6)


def fidelity(encs: dict[str, Encoder], folder: Path) -> None:
    from edgeser.core.audio import load_audio
    from edgeser.core.preprocess import FrontEnd

    files = sorted(folder.glob("Actor_*/*.wav"))
    if not files:
        print(f"fidelity: no RAVDESS files under {folder}; skipped")
        return
    front_end = FrontEnd()
    waves = [front_end(load_audio(f, SR), SR) for f in files]
    reference = [pooled(h) for h in encs["fp32"].encode(waves)]
    cos = torch.nn.functional.cosine_similarity
    print(f"fidelity vs fp32 on {len(files)} RAVDESS files ({sum(map(len, waves)) / SR:.0f} s): "
          "lowest cosine over files, per hidden state (transformer input, layer 1, 2, ...)")
    for label, enc in encs.items():
        if label == "fp32":
            continue
        got = [pooled(h) for h in enc.encode(waves)]
        mean = torch.stack([cos(r[0], g[0], dim=-1) for r, g in zip(reference, got, strict=True)])
        std = torch.stack([cos(r[1], g[1], dim=-1) for r, g in zip(reference, got, strict=True)])
        print(f"{label:>18}  mean-pooled " + " ".join(f"{x:.6f}" for x in mean.min(0).values)
              + "   std-pooled " + " ".join(f"{x:.6f}" for x in std.min(0).values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--utterances", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ravdess", type=Path, default=RAVDESS)
    parser.add_argument("--no-fidelity", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}, {os.cpu_count()} CPUs, "
          f"load average {load}")
    encs = encoders()
    for label, enc in encs.items():
        print(f"{label:>18}: identity {enc.identity}")
    speed(encs, workload(args.utterances, args.seed), max(args.runs, 1))
    if not args.no_fidelity:
        if args.ravdess.is_dir():
            fidelity(encs, args.ravdess)
        else:
            print(f"fidelity: {args.ravdess} not found; skipped")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
