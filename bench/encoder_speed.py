"""Single-utterance encoder latency: the float32 ``transformers`` modules vs the precision
``auto`` picks on this CPU (and bf16 with ``--bf16`` where it is not native).

Full DistilHuBERT architecture with random weights (speed does not depend on their values)
and a speech-like signal (``edgeser.exporting.exporter.speech_like``). For 1 s, 3 s and 10 s
inputs prints the median of several runs of ``Encoder.encode`` per variant, the ratio to
the modules and the cosine similarity of the mean-pooled last hidden states. Batched
extraction (the feature cache's workload) is ``bench/extract_speed.py``. Not a test:
figures depend on the machine (printed).

    .venv/bin/python bench/encoder_speed.py [--runs 7] [--threads N] [--bf16]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from edgeser.core.cpu import format_hardware, resolve_precision
from edgeser.exporting.calibration import speech_like
from edgeser.models.ssl import Encoder, load_encoder

SR = 16_000


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
    parser.add_argument("--bf16", action="store_true", help="also bf16 where it is emulated")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(format_hardware())
    base = load_encoder("random", seed=0)
    variants = {"fp32 modules": base.variant(impl="modules")}
    auto = resolve_precision("auto")
    variants[f"auto ({auto})"] = base.variant(precision=auto)
    if args.bf16 and auto != "bf16":
        variants["bf16"] = base.variant(precision="bf16")
    print(f"runs={args.runs}")
    print(
        f"{'input':>6} {'frames':>6} "
        + " ".join(f"{v + ' ms':>18} {'ratio':>6} {'cos':>8}" for v in variants)
    )
    for seconds in (1.0, 3.0, 10.0):
        wave = speech_like(seconds, np.random.default_rng(int(seconds)))
        cells, ref_time, ref_out = [], None, None
        for enc in variants.values():
            t, out = median_time(enc, wave, args.runs)
            if ref_time is None:
                ref_time, ref_out = t, out
            cos = torch.nn.functional.cosine_similarity(ref_out[-1].mean(0), out[-1].mean(0), dim=0)
            cells.append(f"{1e3 * t:>18.1f} {ref_time / t:>5.2f}x {float(cos):>8.5f}")
        print(f"{seconds:>5.0f}s {ref_out.shape[1]:>6d} " + " ".join(cells))


if __name__ == "__main__":
    main()
