"""Time the whole ``reproduce`` protocol on paper-scale synthetic corpora.

Usage::

    .venv/bin/python bench/reproduce_speed.py [--views 3] [--out bench/out/paper]
        [--slice 48] [--scale paper]

1. synthesises IEMOCAP, CREMA-D and RAVDESS at the real corpora's sizes (kept under
   ``--out``/data, reused by later runs);
2. runs ``reproduce`` with the full-size random DistilHuBERT (``--precision``, default
   ``auto``: the encoder path this CPU runs fastest), ``--views`` augmented views, 25
   epochs, and reports the time for feature extraction, all LOSO trainings and the rest
   (a warm feature cache is cleared first, so extraction is measured);
3. measures a straightforward loop on a slice of training utterances (load, pre-process,
   augment and re-encode every batch through the frozen float32 encoder, then the head
   step) and extrapolates it to the same protocol: 10 LOSO trainings + the production
   model, 25 epochs each;
4. checks feature fidelity: cosine of the run's precision vs the float32 ``transformers``
   modules on pooled features.

Prints the hardware and a markdown table; figures are noisy on a shared machine (median of repeats
where it is cheap to repeat).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edgeser.audio.augment import Augmenter
from edgeser.config import TrainConfig
from edgeser.core.cpu import format_hardware
from edgeser.data.synth import synthesize_corpus
from edgeser.experiments.reproduce import load_corpus, reproduce
from edgeser.features import Item, load_waveform
from edgeser.models.head import EmotionHead, HeadConfig
from edgeser.models.ssl import random_encoder
from edgeser.training.losses import make_loss


def straightforward_seconds_per_utt(frame, n: int, cfg: TrainConfig, repeats: int = 3) -> float:
    """Seconds per utterance-epoch of the re-encode-every-batch loop (median of repeats)."""
    enc = random_encoder(seed=0, precision="fp32").variant(impl="modules")
    head = EmotionHead(HeadConfig(enc.num_hidden_states, enc.hidden_size))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    loss_fn = make_loss("focal", [1, 1, 1, 1])
    aug = Augmenter(cfg.augment)
    rows = frame.sample(n=n, random_state=0)
    items = [Item(u, p, 1) for u, p in zip(rows["utt_id"], rows["path"], strict=True)]
    labels = torch.randint(0, 4, (len(items),))
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(items), cfg.batch_size):
            batch = items[i : i + cfg.batch_size]
            waves = [load_waveform(it, cfg.front_end, aug, 1000 + r) for it in batch]
            hidden = enc.encode(waves)
            pooled = torch.stack([h.mean(dim=1) for h in hidden], dim=1)  # [L, B, D]
            loss = loss_fn(head.forward_pooled(pooled), labels[i : i + len(batch)])
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append((time.perf_counter() - t0) / len(items))
    return statistics.median(times)


def fidelity(frame, precision: str, n: int = 24) -> float:
    """Lowest cosine between ``precision`` and the float32 modules' mean-pooled features
    over ``n`` utterances."""
    fp32 = random_encoder(seed=0, precision="fp32").variant(impl="modules")
    bf16 = fp32.variant(precision=precision, impl=None)
    from edgeser.audio.frontend import FrontEnd

    rows = frame.sample(n=n, random_state=1)
    waves = [
        load_waveform(Item(u, p, 0), FrontEnd(), None, 0)
        for u, p in zip(rows["utt_id"], rows["path"], strict=True)
    ]
    worst = 1.0
    for a, b in zip(fp32.encode(waves), bf16.encode(waves), strict=True):
        va, vb = a.mean(dim=1).flatten(), b.mean(dim=1).flatten()
        worst = min(worst, float(torch.nn.functional.cosine_similarity(va, vb, dim=0)))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/out/paper"))
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--slice", type=int, default=48, help="utterances for the baseline loop")
    ap.add_argument("--scale", default="paper", choices=["small", "paper"])
    ap.add_argument("--keep-cache", action="store_true", help="do not clear the feature cache")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    print(format_hardware())
    data = args.out / "data"
    t0 = time.perf_counter()
    roots = {
        name: synthesize_corpus(name, data / name, scale=args.scale, seed=0)
        for name in ("iemocap", "cremad", "ravdess")
    }
    synth_s = time.perf_counter() - t0
    run = args.out / "run"
    if not args.keep_cache:
        shutil.rmtree(run, ignore_errors=True)
    cfg = TrainConfig(
        encoder="random", precision=args.precision, aug_views=args.views, epochs=args.epochs
    )
    res = reproduce(
        cfg,
        iemocap=roots["iemocap"],
        cremad=roots["cremad"],
        ravdess=roots["ravdess"],
        out=run,
        progress=True,
    )
    t = res["timings_seconds"]
    ie = load_corpus("iemocap", roots["iemocap"], args.out / "scratch")
    n_train_total = sum(f["n_train"] for s in res["loso"].values() for f in s["folds"])
    n_train_total += res["production"]["n_train"]
    per_utt = straightforward_seconds_per_utt(ie, args.slice, cfg)
    baseline = per_utt * n_train_total * args.epochs
    cos = fidelity(ie, cfg.precision)
    hours = sum(d["hours"] for d in res["data"].values())
    print()
    sizes = ", ".join(f"{k} {v['n']}" for k, v in res["data"].items())
    print(f"| corpora ({args.scale}) | {sizes} utterances, {hours:.2f} h of audio |")
    print("|---|---|")
    print(f"| synthesis (not part of the protocol) | {synth_s:.0f} s |")
    print(
        f"| feature extraction (clean + {args.views} views, {cfg.precision}) | "
        f"{t['features']:.0f} s |"
    )
    print(f"| all 10 LOSO trainings ({args.epochs} epochs) | {t['loso_training']:.0f} s |")
    print(f"| production model + RAVDESS | {t['production_and_cross_corpus']:.0f} s |")
    print(f"| whole reproduce | {t['total']:.0f} s ({t['total'] / 60:.1f} min) |")
    print(
        f"| straightforward loop, measured | {per_utt * 1000:.0f} ms per utterance-epoch "
        f"(slice of {args.slice}) |"
    )
    print(
        f"| straightforward loop, extrapolated | {baseline / 3600:.1f} h for "
        f"{n_train_total} utterances x {args.epochs} epochs |"
    )
    print(f"| speed-up | {baseline / t['total']:.0f}x |")
    print(f"| feature fidelity (min cosine {cfg.precision} vs fp32 modules, 24 utts) | {cos:.5f} |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
