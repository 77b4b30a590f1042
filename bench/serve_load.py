"""Load on ``edgeser serve``: N concurrent real-time streams over loopback, and RSS over
many connect/stream/disconnect cycles.

    .venv/bin/python bench/serve_load.py --model DIR [--clients 8 16 32 48] [--seconds 30]
                                         [--cycles 1000] [--ray REPLICAS]

Starts ``edgeser serve MODEL --no-page`` in its own process (``--workers``, ``--threads``;
``--max-streams`` above the largest N, so refusals mean failures, not the limit). For
each N, N clients each stream ``--seconds`` of real speech with pauses (the RAVDESS files
of ``--speech``, ``ravdess-mini`` by default, concatenated with 0.4-1.2 s gaps; every
client starts at another file, within one utterance cycle of the track (``--stagger``), so
that the streams speak out of step as independent callers do) at 1x real time in 100 ms
``pcm_s16le`` frames. Latency of an utterance: from sending the frame that holds its last
sample (the result's ``end``) to receiving its ``utterance.result``; it includes the
``min_silence`` (0.1 s) the VAD waits before it closes an utterance. Per N: p50/p95/p99
(and the p99 of the utterances that ended while all N streams were open), the server's CPU
(cores busy: its CPU time over the wall time) and RSS, where the server's share of the
latency went (its ``edgeser_result_stage_seconds``: VAD, queue behind the stream's earlier
utterances, wait for a model thread, model, send), the clients' own CPU, refusals (errors,
refused or failed connections) and drops (an ``utterance.start`` without its result, a
session without ``session.end``). The knee is the largest N with both p99s <= 500 ms and
nothing refused or dropped. Then ``--cycles`` short sessions (1 s of speech, every other
one cut off mid-utterance without a close frame), 8 at a time, with the server's RSS
after each tenth of them. Clients run in this process (on the same CPU).

``--ray N``: the same levels against ``edgeser serve --ray --replicas N`` (Ray Serve, the
model in N replicas), with Ray, the server and the clients (this script again, inside) in
a network namespace that holds only ``lo``; the server's CPU and RSS are then those of
every process in the namespace but the clients (Ray's own included), and the stage split
is not scraped (each replica has its own metrics).

Prints the hardware first, then markdown tables; measures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "corpora" / "ravdess-mini"
SR = 16_000
FRAME = 1_600  # 100 ms


def speech_track(folder: Path, seconds: float, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Real speech with pauses, ``seconds`` long (16 kHz int16), and where each file starts."""
    from edgeser.audio.io import load_audio

    files = sorted(folder.glob("Actor_*/*.wav"))
    if not files:
        raise SystemExit(f"no RAVDESS files under {folder} (--speech DIR)")
    rng = np.random.default_rng(seed)
    parts, starts, n, i = [], [], 0, 0
    total = round(seconds * SR)
    while n < total:
        x = load_audio(files[i % len(files)], SR)
        gap = np.zeros(round(rng.uniform(0.4, 1.2) * SR), dtype=np.float32)
        starts.append(n)
        parts += [x, gap]
        n += x.size + gap.size
        i += 1
    track = np.concatenate(parts)
    pcm = (np.clip(track, -1, 1) * 32767).astype("<i2")
    return pcm, starts


def server_stats(pids: list[int]) -> tuple[float, float, float]:
    """(CPU seconds, RSS MB, peak RSS MB) summed over processes (gone ones count 0)."""
    total = [0.0, 0.0, 0.0]
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            for i, v in enumerate(proc_stats(pid)):
                total[i] += v
    return total[0], total[1], total[2]


def proc_stats(pid: int) -> tuple[float, float, float]:
    """(CPU seconds, RSS MB, peak RSS MB) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = peak = 0.0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cpu, rss, peak


async def client(
    url: str, pcm: np.ndarray, offset: int, seconds: float, delay: float, out: dict
) -> None:
    """One real-time stream; appends latencies (s) and counts to ``out``."""
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    audio = np.roll(pcm, -offset)[: round(seconds * SR)]
    sent_at: list[float] = []
    starts: set[float] = set()
    results = 0
    try:
        async with connect(url, max_size=1 << 20, compression=None, open_timeout=30) as ws:
            await ws.send(
                json.dumps({"type": "session.start", "format": "pcm_s16le", "sample_rate": SR})
            )
            ready = json.loads(await ws.recv())
            if ready["type"] != "session.ready":
                out["refused"] += 1
                return

            async def send() -> None:
                t0 = time.monotonic()
                for k, i in enumerate(range(0, audio.size, FRAME)):
                    wait = t0 + k * FRAME / SR - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    sent_at.append(time.monotonic())
                    await ws.send(audio[i : i + FRAME].tobytes())
                await ws.send(json.dumps({"type": "session.end"}))

            sender = asyncio.create_task(send())
            ended = False
            async for message in ws:
                now = time.monotonic()
                event = json.loads(message)
                kind = event["type"]
                if kind == "utterance.start":
                    starts.add(event["start"])
                elif kind == "utterance.result":
                    results += 1
                    starts.discard(event["start"])
                    frame = min(int(event["end"] * SR) // FRAME, len(sent_at) - 1)
                    out["latency"].append((sent_at[frame], now - sent_at[frame]))
                elif kind == "session.end":
                    ended = event["utterances"] == results
                    break
                elif kind == "error":
                    out["refused"] += 1
                    out["errors"].append(event["code"])
                    break
            await sender
            out["spans"].append((sent_at[0], sent_at[-1]))
            out["utterances"] += results
            out["dropped"] += len(starts) + (0 if ended else 1)
    except Exception as e:  # a refused or failed connection counts; the run goes on
        out["refused"] += 1
        out["errors"].append(type(e).__name__)


async def load_level(
    url: str, pcm: np.ndarray, starts: list[int], n: int, seconds: float, stagger: float, seed: int
) -> dict:
    """``n`` clients, each starting after a delay drawn uniformly from ``[0, stagger)``;
    ``out["full"]``: the latencies of the utterances whose last frame was sent while all
    ``n`` streams were open."""
    rng = np.random.default_rng(seed)
    out: dict = {
        "latency": [],
        "spans": [],
        "refused": 0,
        "dropped": 0,
        "utterances": 0,
        "errors": [],
    }
    await asyncio.gather(
        *(
            client(
                url,
                pcm,
                starts[(i * 7) % len(starts)],
                seconds,
                float(rng.uniform(0, stagger)),
                out,
            )
            for i in range(n)
        )
    )
    spans = out["spans"]
    lo, hi = (max(a for a, _ in spans), min(b for _, b in spans)) if spans else (0.0, -1.0)
    out["full"] = [lat for t, lat in out["latency"] if lo <= t <= hi]
    out["latency"] = [lat for _, lat in out["latency"]]
    return out


async def cycles(
    url: str,
    pcm: np.ndarray,
    starts: list[int],
    count: int,
    pids: Callable[[], list[int]],
    concurrency: int = 8,
) -> list[tuple[int, float]]:
    """``count`` short sessions; every other one is cut off mid-utterance."""
    from websockets.asyncio.client import connect

    done, rss = 0, []
    step = max(1, count // 10)

    async def one(k: int) -> None:
        start = starts[k % len(starts)]
        audio = pcm[start : start + SR]
        async with connect(url, compression=None) as ws:
            await ws.send(
                json.dumps({"type": "session.start", "format": "pcm_s16le", "sample_rate": SR})
            )
            await ws.recv()
            for i in range(0, audio.size, FRAME):
                await ws.send(audio[i : i + FRAME].tobytes())
            if k % 2:
                ws.transport.abort()
                return
            await ws.send(json.dumps({"type": "session.end"}))
            async for message in ws:
                if json.loads(message)["type"] == "session.end":
                    break

    sem = asyncio.Semaphore(concurrency)

    async def guarded(k: int) -> None:
        nonlocal done
        async with sem:
            with contextlib.suppress(Exception):  # an aborted connection's own errors
                await one(k)
            done += 1
            if done % step == 0:
                at = done
                await asyncio.sleep(0.5)  # let the server notice the aborted ones
                rss.append((at, server_stats(pids())[1]))

    await asyncio.gather(*(guarded(k) for k in range(count)))
    return rss


def quantiles_ms(values: list[float], qs: tuple[float, ...]) -> list[float]:
    """Nearest-rank quantiles of ``values`` (seconds) in milliseconds (NaN when empty)."""
    v = sorted(values)
    if not v:
        return [float("nan")] * len(qs)
    return [1000 * v[min(len(v) - 1, int(q * len(v)))] for q in qs]


STAGES = ("vad", "queue", "pool", "model", "send")


def stage_samples(base: str) -> dict[tuple[str, str], float]:
    """The server's ``edgeser_result_stage_seconds`` samples: {(stage, le|'sum'): value}."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(base + "metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "edgeser_result_stage_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                out[sample.labels["stage"], sample.labels["le"]] = sample.value
            elif sample.name.endswith("_sum"):
                out[sample.labels["stage"], "sum"] = sample.value
    return out


def stage_summary(before: dict, after: dict) -> str:
    """Per stage, over one level: mean ms and the bucket bound under which 95 % fell."""
    parts = []
    for stage in STAGES:
        d = {k[1]: after.get(k, 0.0) - before.get(k, 0.0) for k in after if k[0] == stage}
        count = d.get("+Inf", 0.0)
        if not count:
            continue
        bounds = sorted((float(le), v) for le, v in d.items() if le != "sum")
        p95 = next(le for le, v in bounds if v >= 0.95 * count)
        bound = f"<= {1000 * p95:.0f}" if p95 != float("inf") else "> 10000"
        parts.append(f"{stage} {1000 * d['sum'] / count:.0f} (p95 {bound})")
    return "; ".join(parts)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} CPUs"


def run_levels(
    args: argparse.Namespace, base: str, pids: Callable[[], list[int]], stages: bool
) -> None:
    """Every ``--clients`` level against the server at ``base`` (``http://HOST:PORT/``),
    then ``--cycles``; ``pids()``: the server's processes (CPU and RSS are their sums);
    ``stages``: scrape ``/metrics`` for the stage split (one process answers all)."""
    pcm, starts = speech_track(args.speech, 120.0)
    stagger = args.stagger if args.stagger is not None else pcm.size / SR / len(starts)
    print(
        f"speech track: {pcm.size / SR:.0f} s, {len(starts)} utterances; clients start "
        f"within {stagger:.1f} s"
    )
    url = base.replace("http://", "ws://") + "v1/stream"
    cpu0, rss0, _ = server_stats(pids())
    print(f"server RSS at rest {rss0:.0f} MB ({len(pids())} processes)\n", flush=True)
    rows = []
    for n in args.clients:
        cpu_a, _, _ = server_stats(pids())
        stages_a, own_a = stage_samples(base) if stages else {}, os.times()
        t0 = time.monotonic()
        r = asyncio.run(load_level(url, pcm, starts, n, args.seconds, stagger, seed=n))
        wall = time.monotonic() - t0
        cpu_b, rss, peak = server_stats(pids())
        own_b = os.times()
        own = (own_b.user + own_b.system - own_a.user - own_a.system) / wall
        p50, p95, p99 = quantiles_ms(r["latency"], (0.5, 0.95, 0.99))
        (full99,) = quantiles_ms(r["full"], (0.99,))
        row = (
            n,
            p50,
            p95,
            p99,
            full99,
            len(r["full"]),
            (cpu_b - cpu_a) / wall,
            rss,
            peak,
            r["refused"],
            r["dropped"],
            r["utterances"],
        )
        rows.append(row)
        print(
            f"N={n}: p50 {p50:.0f} ms, p95 {p95:.0f}, p99 {p99:.0f} (p99 {full99:.0f} "
            f"over the {len(r['full'])} with all {n} open); CPU "
            f"{row[6]:.2f} cores; RSS {rss:.0f} MB (peak {peak:.0f}); refused "
            f"{r['refused']} {sorted(set(r['errors']))}, dropped {r['dropped']}; "
            f"{r['utterances']} utterances; clients' CPU {own:.2f} cores",
            flush=True,
        )
        if stages:
            print(f"  server stages, mean ms: {stage_summary(stages_a, stage_samples(base))}")
    print(
        "\n| N | p50 ms | p95 ms | p99 ms | p99 ms, all N open (utterances) | "
        "server CPU (cores) | RSS MB (peak) | refused | dropped | utterances |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, p50, p95, p99, full99, nfull, cpu, rss, peak, refused, dropped, utts in rows:
        print(
            f"| {n} | {p50:.0f} | {p95:.0f} | {p99:.0f} | {full99:.0f} ({nfull}) | "
            f"{cpu:.2f} | {rss:.0f} ({peak:.0f}) | {refused} | {dropped} | {utts} |"
        )
    good = [r[0] for r in rows if max(r[3], r[4]) <= 500 and r[9] == 0 and r[10] == 0]
    print(
        f"\nknee (largest N with p99 <= 500 ms, nothing refused or dropped): "
        f"{max(good) if good else 'none'}"
    )
    if args.cycles:
        t0 = time.monotonic()
        rss_after = asyncio.run(cycles(url, pcm, starts, args.cycles, pids))
        print(
            f"\n{args.cycles} connect/stream/disconnect cycles in "
            f"{time.monotonic() - t0:.0f} s; server RSS MB after each tenth: "
            + ", ".join(f"{k}: {v:.0f}" for k, v in rss_after)
        )
    cpu1, _, _ = server_stats(pids())
    print(f"server CPU time in all: {cpu1 - cpu0:.0f} s", flush=True)


def serve_command(args: argparse.Namespace, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgeser.cli",
        "-q",
        "serve",
        str(args.model),
        "--no-page",
        "--max-streams",
        str(max(args.clients) + 8),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        *extra,
    ]


def run_ray(args: argparse.Namespace, argv: list[str]) -> int:
    """The same levels against ``edgeser serve --ray --replicas N`` in a loopback-only
    network namespace: Ray, the server and this script's clients all run inside it."""
    from edgeser.testing import loopback_ray_cluster

    port = 8000
    with loopback_ray_cluster(num_cpus=os.cpu_count() or 2) as cluster:
        cmd = serve_command(
            args,
            f"--ray={cluster.address}",
            "--replicas",
            str(args.ray),
            "--replica-cpus",
            str(args.replica_cpus),
            "--port",
            str(port),
        )
        print(f"server: {' '.join(cmd[2:])} (Ray cluster in network namespace {cluster.namespace})")
        log = Path(tempfile.mkdtemp(prefix="edgeser-serve-load-")) / "server.log"
        print(f"the server's and Ray's log: {log}")
        server = subprocess.Popen(
            cluster.command(cmd),
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        try:
            line = server.stdout.readline()
            if "Ray Serve" not in line:
                raise SystemExit(f"the Ray Serve app did not start: {line!r}")
            print(line.strip(), flush=True)
            clients = [sys.executable, str(Path(__file__).resolve()), *argv]
            clients += ["--url", f"http://127.0.0.1:{port}/", "--netns", cluster.namespace]
            return subprocess.run(cluster.command(clients), env=cluster.env).returncode
        finally:
            server.terminate()
            server.wait(timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="exported model folder")
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 16, 24, 32, 40, 48])
    ap.add_argument("--seconds", type=float, default=30.0, help="audio per client and level")
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--speech", type=Path, default=SPEECH)
    ap.add_argument(
        "--stagger",
        type=float,
        default=None,
        help="clients start within this many seconds (default: one utterance cycle of the "
        "track, so that the streams' utterances are out of step as independent callers' "
        "are; 1 starts them together)",
    )
    ap.add_argument(
        "--ray",
        type=int,
        default=0,
        metavar="REPLICAS",
        help="serve as a Ray Serve deployment of this many replicas, Ray, server and clients "
        "in a loopback-only network namespace (needs root and `ip`)",
    )
    ap.add_argument("--replica-cpus", type=float, default=1.0)
    ap.add_argument("--url", help=argparse.SUPPRESS)  # --ray's clients, inside the namespace
    ap.add_argument("--netns", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = ap.parse_args(argv)

    print(f"CPU: {cpu_model()}")
    try:
        from edgeser.core.cpu import format_hardware

        print(format_hardware())
    except Exception as e:  # the hardware line is informative only
        print(f"(hardware summary unavailable: {e})")
    if args.ray and not args.url:
        return run_ray(args, argv)
    if args.url:  # inside --ray's namespace: the server is every other process in it
        me = os.getpid()

        def namespace_pids() -> list[int]:
            out = subprocess.run(
                ["ip", "netns", "pids", args.netns], capture_output=True, text=True
            ).stdout
            return [int(p) for p in out.split() if int(p) != me]

        run_levels(args, args.url, namespace_pids, stages=False)
        return 0
    cmd = serve_command(args, "--port", "0")
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        base = line.split(" at ", 1)[1].split(" ", 1)[0]
        print(f"server: {' '.join(cmd[2:])}")
        run_levels(args, base, lambda: [server.pid], stages=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
