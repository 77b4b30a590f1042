"""Feature-extraction throughput, local against Ray, and a simulated multi-node cluster.

The workload is ``edgeser.features.extract`` with the full DistilHuBERT architecture
(random weights: speed does not depend on them), ``precision: auto``, clean views only, on
speech-like utterances of 3-5 s (``edgeser.exporting.calibration.speech_like``, written as
16 kHz WAV files) in length-sorted batches of 30 s (``train``/``evaluate`` use 60 s).
Each configuration starts with an empty feature cache:

* ``local``: this process (torch's default threads);
* ``ray, 1 actor x 2 threads``: the default on this 2-CPU head node (the driver's thread
  count, so the features are bitwise those of ``local``);
* ``ray, 2 actors x 1 thread`` (``--worker-threads 1``);
* ``simulated cluster``: a head node with no CPUs and ``--nodes`` worker nodes of 1 CPU
  each (``ray start --address``), ``--worker-threads 1``: one actor per node; the batches
  each node encoded are printed.

Throughput is audio hours per wall-clock hour, ``wall`` including the actors' start (import
torch, rebuild the encoder from the driver's weights) and ``steady`` over the batches after
each actor's first (the rate a long run approaches). Every Ray process runs in a network
namespace that has only ``lo`` (:func:`edgeser.testing.loopback_ray_cluster`; needs root).
Ends with the estimate for 10,000 h of audio on N nodes.

    .venv/bin/python bench/ray_speed.py [--seconds 300] [--nodes 3]

Not a test: figures depend on the machine and on its load (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 16_000
#: Audio per batch: finer than extract's default 60 s, so the steady rate has batches to
#: average over.
BATCH_SECONDS = 30.0
#: float32 direct path, DistilHuBERT, this 2-core AVX2 CPU (bench/README.md: extract_speed).
MS_PER_AUDIO_SECOND_2_CORES = 49.4
#: model.int8.onnx, 3 s utterances, 2 threads, the same CPU (bench/README.md: RTF 0.029).
MS_PER_AUDIO_SECOND_INT8_2_THREADS = 29.0


def make_corpus(root: Path, seconds: float) -> Path:
    """Speech-like utterances of 3-5 s totalling about ``seconds``, and their manifest."""
    import pandas as pd

    from edgeser.exporting.calibration import speech_like
    from edgeser.testing import write_wav

    rng = np.random.default_rng(0)
    rows, total, i = [], 0.0, 0
    while total < seconds:
        d = float(rng.uniform(3.0, 5.0))
        path = write_wav(root / "audio" / f"u{i:04d}.wav", speech_like(d, rng), SR)
        rows.append({"utt_id": f"u{i:04d}", "path": str(path), "duration": d})
        total, i = total + d, i + 1
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def run_extract(
    manifest: Path,
    cache: Path,
    executor: str,
    workers: int | None,
    threads: int | None,
    batch_seconds: float,
) -> dict[str, object]:
    """One extraction with an empty cache; timings and where each batch ran."""
    import pandas as pd

    import edgeser.features.distributed as dist
    from edgeser.core.executor import parse_executor
    from edgeser.features import FeatureStore, extract
    from edgeser.models.ssl import random_encoder

    df = pd.read_csv(manifest, dtype={"utt_id": str})
    encoder = random_encoder(precision="auto")
    store = FeatureStore(cache, encoder.identity, precision=encoder.precision)
    done: list[tuple[float, str, int, int]] = []
    original = dist.ray_batches

    def recorded(*args, **kwargs):  # type: ignore[no-untyped-def]
        def on_batch(index: int, node: str, pid: int) -> None:
            done.append((time.perf_counter(), node, pid, index))

        return original(*args, **kwargs, on_batch=on_batch)

    dist.ray_batches = recorded
    t0 = time.perf_counter()
    extract(
        df,
        encoder,
        store,
        progress=False,
        batch_seconds=batch_seconds,
        executor=parse_executor(executor, workers=workers, worker_threads=threads),
    )
    wall = time.perf_counter() - t0
    audio = float(df["duration"].sum())
    out: dict[str, object] = {"audio_s": audio, "wall_s": wall, "precision": encoder.precision}
    k = len({pid for _, _, pid, _ in done})  # actors: their first batches end together
    if len(done) > k:
        # audio of the batches after the actors' first ones, over the time they took
        order = sorted(df["duration"].tolist())
        batches, cur, tot = [], [], 0.0
        for d in order:  # the same cut as extract's batches
            if cur and tot + d > batch_seconds:
                batches.append(sum(cur))
                cur, tot = [], 0.0
            cur.append(d)
            tot += d
        batches.append(sum(cur))
        later = sum(batches[i] for _, _, _, i in done[k:])
        out["steady_s_per_s"] = (done[-1][0] - done[k - 1][0]) / later
        nodes: dict[str, int] = {}
        for _, node, _, _ in done:
            nodes[node[:8]] = nodes.get(node[:8], 0) + 1
        out["batches_per_node"] = nodes
        out["actor_pids"] = len({pid for _, _, pid, _ in done})
    return out


def inner(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("manifest", type=Path)
    p.add_argument("cache", type=Path)
    p.add_argument("executor")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--worker-threads", type=int, default=None)
    p.add_argument("--batch-seconds", type=float, default=30.0)
    a = p.parse_args(argv)
    res = run_extract(a.manifest, a.cache, a.executor, a.workers, a.worker_threads, a.batch_seconds)
    print("RESULT " + json.dumps(res), flush=True)


def _row(name: str, r: dict[str, object]) -> str:
    audio, wall = float(r["audio_s"]), float(r["wall_s"])  # type: ignore[arg-type]
    steady = r.get("steady_s_per_s")
    steady_txt = f"{1 / float(steady):7.1f} h/h" if steady else "      -"  # type: ignore[arg-type]
    nodes = r.get("batches_per_node")
    where = ", ".join(f"{n} {c}" for n, c in nodes.items()) if nodes else "this process"
    return (
        f"| {name} | {audio / 60:.1f} min | {wall:.1f} s | {audio / wall:.1f} h/h | "
        f"{steady_txt} | {where} |"
    )


def _in_cluster(
    cluster,
    manifest: Path,
    cache: Path,
    executor: str,  # type: ignore[no-untyped-def]
    *extra: str,
) -> dict[str, object]:
    res = cluster.run(
        [
            sys.executable,
            __file__,
            "--inner",
            str(manifest),
            str(cache),
            executor,
            "--batch-seconds",
            str(BATCH_SECONDS),
            *extra,
        ],
        timeout=3600,
    )
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{executor} {' '.join(extra)} failed:\n{res.stderr[-3000:]}")


def estimate(hours: float = 10_000.0) -> str:
    """The written estimate for ``hours`` of audio: feature extraction (float32 direct
    path) and archive scoring (``model.int8.onnx``), from this CPU's measured figures."""
    lines = []
    for what, ms in (
        ("features, float32 direct path", MS_PER_AUDIO_SECOND_2_CORES),
        ("predict, model.int8.onnx", MS_PER_AUDIO_SECOND_INT8_2_THREADS),
    ):
        core_s = ms / 1000 * 2  # two cores busy for `ms` per audio second
        core_hours = hours * core_s
        lines.append(
            f"{what}: {hours:,.0f} h x {ms} ms per audio second on 2 cores = "
            f"{core_s:.4f} core-s per audio s -> {core_hours:,.0f} core-hours"
        )
        for nodes, cores in ((1, 2), (8, 16), (32, 16), (64, 32)):
            h = core_hours / (nodes * cores)
            lines.append(f"  {nodes:3d} nodes x {cores:2d} cores: {h:8.1f} h")
    tb = hours * 3600 * SR * 2 / 1e12
    lines.append(
        f"audio moved (16 kHz 16-bit mono): {tb:.2f} TB; at 1 GB/s into the driver "
        f"{tb * 1e3 / 3600:.2f} h (features: the driver ships every file's bytes)"
    )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        inner(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=300.0, help="audio per run (default 300)")
    p.add_argument("--nodes", type=int, default=3, help="simulated worker nodes (default 3)")
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from edgeser.core.cpu import format_hardware
    from edgeser.testing import loopback_ray_cluster

    print(format_hardware())
    print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    root = Path(tempfile.mkdtemp(prefix="edgeser-ray-bench-"))
    try:
        manifest = make_corpus(root, args.seconds)
        rows = [
            _row(
                "local", run_extract(manifest, root / "c-local", "local", None, None, BATCH_SECONDS)
            )
        ]
        with loopback_ray_cluster(num_cpus=os.cpu_count() or 2) as c:
            addr = f"ray:{c.address}"
            rows.append(
                _row(
                    "ray, 1 actor x 2 threads",
                    _in_cluster(c, manifest, root / "c-r1", addr, "--workers", "1"),
                )
            )
            rows.append(
                _row(
                    "ray, 2 actors x 1 thread",
                    _in_cluster(
                        c, manifest, root / "c-r2", addr, "--workers", "2", "--worker-threads", "1"
                    ),
                )
            )
        with loopback_ray_cluster(num_cpus=0, worker_nodes=args.nodes, worker_cpus=1) as c:
            rows.append(
                _row(
                    f"simulated cluster: {args.nodes} nodes x 1 CPU",
                    _in_cluster(
                        c, manifest, root / "c-sim", f"ray:{c.address}", "--worker-threads", "1"
                    ),
                )
            )
        print(
            "\n| executor | audio | wall | wall throughput | steady throughput | "
            "batches per node |\n|---|---|---|---|---|---|"
        )
        print("\n".join(rows))
        print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("\n" + estimate())
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
