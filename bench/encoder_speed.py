"""Encoder speed: fp32 vs bf16 (CPU autocast) on the full DistilHuBERT architecture.

Random-initialised weights (speed does not depend on their values) and a speech-like
synthetic signal. For 1 s, 3 s and 10 s inputs prints the median of several runs of
``Encoder.encode`` in each precision, their ratio, and the cosine similarity of the
mean-pooled last hidden states. Not a test: figures depend on the machine.

    .venv/bin/python bench/encoder_speed.py [--runs 7] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from edgeser.models.encoder import Encoder, load_encoder

SR = 16_000


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced, formant-shaped, syllable-modulated signal."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 1.5 * t) + 10.0 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = np.zeros_like(t)
    for k in range(1, 40):
        freq = k * f0
        gain = sum(np.exp(-(((freq - f) / 150.0) ** 2)) for f in (500.0, 1500.0, 2500.0)) + 0.05
        voiced += gain * np.sin(k * phase) * (freq < 7500)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3.7 * t)) ** 2
    signal = voiced * envelope + 0.005 * rng.standard_normal(t.size)
    return (0.6 * signal / np.abs(signal).max()).astype(np.float32)


def median_time(encoder: Encoder, wave: np.ndarray, runs: int) -> tuple[float, torch.Tensor]:
    out = encoder.encode([wave])[0]  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = encoder.encode([wave])[0]
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)

    fp32 = load_encoder("random", seed=0)
    bf16 = Encoder(fp32.model, source="random", is_random=True, precision="bf16")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"bf16 CPU support: {torch.backends.mkldnn.is_available()}; runs={args.runs}"
    )
    header = ("input", "frames", "fp32 ms", "bf16 ms", "fp32/bf16", "cosine")
    print(f"{header[0]:>6} {header[1]:>6} " + " ".join(f"{h:>9}" for h in header[2:]))
    for seconds in (1.0, 3.0, 10.0):
        wave = speech_like(seconds, seed=int(seconds))
        t32, out32 = median_time(fp32, wave, args.runs)
        t16, out16 = median_time(bf16, wave, args.runs)
        cos = torch.nn.functional.cosine_similarity(out32[-1].mean(0), out16[-1].mean(0), dim=0)
        print(
            f"{seconds:>5.0f}s {out32.shape[1]:>6d} {1e3 * t32:>9.1f} {1e3 * t16:>9.1f} "
            f"{t32 / t16:>9.2f} {float(cos):>9.5f}"
        )


if __name__ == "__main__":
    main()
