"""The browser page's speed and size: onnxruntime-web (WASM) against native onnxruntime.

Usage::

    .venv/bin/python bench/web_speed.py [--out bench/out/web] [--runs 5] [--minutes 10]

1. exports the full-size DistilHuBERT architecture (random weights; speed does not depend
   on them) with bench/deploy_speed.py's ``build`` (reused when present);
2. serves it with ``edgeser web`` and opens the page in headless Chromium (Debian's
   chromium, npm's playwright-core from ``web/``), once per WASM thread count;
3. times ``model.int8.onnx`` on 1, 3 and 10 s of speech-like signal in the page (median of
   ``--runs`` after a warm-up) and the same waveforms with native onnxruntime at the same
   thread count, in one run;
4. measures the page's load time and the bytes it transferred;
5. times single operators at one thread in the page and natively (an 8-bit and a float32
   matrix product of a feed-forward layer's size, and the positional convolution): the
   kernels' own WASM/native ratio, the ceiling for the whole model's;
6. classifies every file of ``../shared/corpora/ravdess-mini`` in the page (the file
   picker's path) and with the Python runtime: parity on the full-size model;
7. listens for ``--minutes`` to a fake microphone looping real speech from
   ``../shared/corpora/ravdess-mini`` and samples the tab's memory once a minute
   (``performance.measureUserAgentSpecificMemory``; needs the cross-origin isolation the
   server gives): it must not grow with time.

Prints the hardware and markdown tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgeser.core.cpu import format_hardware
from edgeser.exporting.calibration import speech_like
from edgeser.runtime.model import OnnxEmotionModel
from edgeser.runtime.session import onnx_session
from edgeser.web.server import make_server

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = (1.0, 3.0, 10.0)
CORPUS = ROOT.parent / "shared" / "corpora" / "ravdess-mini"
#: frames of 3 s of audio x a transformer feed-forward layer (768 -> 3072)
GEMM = (149, 768, 3072)


def median_ms(run, runs: int) -> float:
    """Median milliseconds of ``run()`` over ``runs`` calls after a warm-up (the pause lets
    onnxruntime's spinning workers settle, see bench/README.md)."""
    run()
    times = []
    for _ in range(runs):
        time.sleep(0.2)
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def native_ms(path: Path, wave: np.ndarray, threads: int, runs: int) -> float:
    model = OnnxEmotionModel(path, threads=threads)
    return median_ms(lambda: model.run([wave]), runs)


def kernel_site(onnx_dir: Path, out: Path) -> tuple[Path, list[dict]]:
    """A copy of the export folder (hard links, or copies across file systems: the server
    follows no link out of the model folder) whose model.json also lists single-operator
    models, so ``edgeser web`` serves them; returns the folder and the kernels' inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    site = out / "site"
    site.mkdir(parents=True, exist_ok=True)
    card = json.loads((onnx_dir / "model.json").read_text(encoding="utf-8"))
    for name in card["files"].values():
        link = site / name
        if not link.exists():
            try:
                link.hardlink_to(onnx_dir / name)
            except OSError:
                shutil.copy2(onnx_dir / name, link)
    rng = np.random.default_rng(0)
    m, k, n = GEMM
    f32, u8 = TensorProto.FLOAT, TensorProto.UINT8
    kernels = {
        # uint8 activations x 7-bit int8 weights -> int32, as the 8-bit model's linears
        "kernel-matmulinteger.onnx": (
            helper.make_node("MatMulInteger", ["a", "w"], ["y"]),
            u8,
            [m, k],
            TensorProto.INT32,
            rng.integers(-64, 65, size=(k, n)).astype(np.int8),
        ),
        "kernel-matmul.onnx": (
            helper.make_node("MatMul", ["a", "w"], ["y"]),
            f32,
            [m, k],
            f32,
            rng.standard_normal((k, n)).astype(np.float32),
        ),
        # DistilHuBERT's positional convolution: 768 channels, 16 groups, 128 taps
        "kernel-posconv.onnx": (
            helper.make_node("Conv", ["a", "w"], ["y"], group=16, pads=[64, 64]),
            f32,
            [1, 768, m],
            f32,
            (0.01 * rng.standard_normal((768, 48, 128))).astype(np.float32),
        ),
    }
    items = []
    for name, (node, in_type, shape, out_type, weight) in kernels.items():
        graph = helper.make_graph(
            [node],
            name,
            [helper.make_tensor_value_info("a", in_type, shape)],
            [helper.make_tensor_value_info("y", out_type, None)],
            [numpy_helper.from_array(weight, "w")],
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9
        )  # what onnxruntime-web 1.30 reads
        onnx.save(model, site / name)
        card["files"][name.removesuffix(".onnx")] = name
        items.append(
            {
                "file": name,
                "inputs": {"a": {"type": "uint8" if in_type == u8 else "float32", "shape": shape}},
            }
        )
    (site / "model.json").write_text(json.dumps(card, indent=1), encoding="utf-8")
    return site, items


def kernel_input(spec: dict) -> np.ndarray:
    """The same values bench.mjs fills a kernel's input with."""
    i = np.arange(int(np.prod(spec["shape"])))
    if spec["type"] == "uint8":
        return ((i * 37) % 256).astype(np.uint8).reshape(spec["shape"])
    return np.sin(i * 0.37).astype(np.float32).reshape(spec["shape"])


def native_kernel_ms(path: Path, inputs: dict, runs: int) -> float:
    session = onnx_session(path, threads=1)
    feeds = {name: kernel_input(spec) for name, spec in inputs.items()}
    return median_ms(lambda: session.run(None, feeds), runs)


def parity(url: str, chromium: str, int8: Path) -> str:
    """Every ravdess-mini file through the page's file picker and through the Python
    runtime (``edgeser predict``'s code) on the same model."""
    files = sorted(str(p) for p in CORPUS.rglob("*.wav"))
    job = {"url": url, "chromium": chromium, "files": [files], "timeout": 3_600_000}
    run = subprocess.run(
        ["node", str(ROOT / "web" / "drive.mjs"), json.dumps(job)],
        capture_output=True,
        text=True,
        cwd=ROOT / "web",
        timeout=3700,
    )
    if run.returncode != 0:
        return f"parity run failed: {run.stderr[-2000:]}"
    got = json.loads(run.stdout.strip().splitlines()[-1])["batches"][0]["results"]
    native = OnnxEmotionModel(int8)
    same, deltas = 0, []
    for path, page in zip(files, got, strict=True):
        ref = native.analyse_file(path)
        same += page["label"] == ref.label
        deltas.append(
            np.mean([abs(page["probabilities"][k] - v) for k, v in ref.probabilities.items()])
        )
    return (
        f"page vs edgeser predict, full-size model, {len(files)} real files: same label "
        f"{same}/{len(files)} ({same / len(files):.1%}), mean |dp| {np.mean(deltas):.5f}, "
        f"max {max(deltas):.5f}"
    )


def speech_loop(minutes: float, out: Path) -> Path:
    """Real speech from ravdess-mini with pauses, about a minute, looped by the fake device."""
    import soundfile as sf

    from edgeser.audio.io import load_audio

    files = sorted(CORPUS.rglob("*.wav"))[::8]
    parts = []
    for f in files:
        parts += [load_audio(f, 48000), np.zeros(48000, np.float32)]
    sf.write(out, np.concatenate(parts), 48000, subtype="FLOAT")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/out/web"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=10.0, help="fake-microphone minutes")
    ap.add_argument(
        "--no-parity",
        dest="parity",
        action="store_false",
        help="skip classifying ravdess-mini in the page",
    )
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("Chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    print(format_hardware())
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True)
    npm = json.loads((ROOT / "web" / "package.json").read_text(encoding="utf-8"))
    print(
        f"browser: {version.stdout.strip()}; onnxruntime-web "
        f"{npm['dependencies']['onnxruntime-web']}"
    )
    sys.path.insert(0, str(ROOT / "bench"))
    from deploy_speed import build

    _, onnx_dir = build(args.out)
    int8 = onnx_dir / "model.int8.onnx"
    waves = {d: speech_like(d, np.random.default_rng(0)) for d in DURATIONS}
    site, kernels = kernel_site(onnx_dir, args.out.resolve())
    server = make_server(site, "127.0.0.1", 0).start()
    job = {
        "url": server.url,
        "chromium": chromium,
        "runs": args.runs,
        "threads": [1, 2],
        "kernels": kernels,
        "waves": {f"{d:g}": waves[d].tolist() for d in DURATIONS},
        "mic": (
            {
                "wav": str(speech_loop(args.minutes, args.out.resolve() / "loop.wav")),
                "minutes": args.minutes,
            }
            if args.minutes > 0
            else None
        ),
    }
    job_file = (args.out / "web_job.json").resolve()  # the waveforms do not fit in argv
    job_file.write_text(json.dumps(job), encoding="utf-8")
    run = subprocess.run(
        ["node", str(ROOT / "web" / "bench.mjs"), str(job_file)],
        capture_output=True,
        text=True,
        cwd=ROOT / "web",
        timeout=600 + 90 * args.minutes,
    )
    if run.returncode != 0:
        server.shutdown()
        print(run.stderr[-3000:], file=sys.stderr)
        return 1
    matched = (
        parity(job["url"], chromium, int8)
        if args.parity and CORPUS.is_dir()
        else "parity: skipped (--no-parity, or no ../shared/corpora/ravdess-mini)"
    )
    server.shutdown()
    res = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\nmodel.int8.onnx {int8.stat().st_size / 1e6:.1f} MB; median of {args.runs} runs\n")
    print(
        "| threads | " + " | ".join(f"{d:g} s: WASM ms / native ms (×)" for d in DURATIONS) + " |"
    )
    print("|---|" + "---|" * len(DURATIONS))
    for threads in (1, 2):
        cells = []
        for d in DURATIONS:
            wasm = res["latency"][str(threads)][f"{d:g}"]
            native = native_ms(int8, waves[d], threads, args.runs)
            cells.append(f"{wasm:.0f} / {native:.0f} ({wasm / native:.2f}×)")
        print(f"| {threads} | " + " | ".join(cells) + " |")
    print(
        f"\nsingle operators, 1 thread, median of {args.runs} (GEMM {GEMM[0]}x{GEMM[1]} @ "
        f"{GEMM[1]}x{GEMM[2]}: {2 * np.prod(GEMM) / 1e9:.2f} GFLOP)\n"
    )
    print("| operator | WASM ms | native ms | × |\n|---|---|---|---|")
    for item in kernels:
        wasm = res["kernels"][item["file"]]
        native = native_kernel_ms(site / item["file"], item["inputs"], args.runs)
        print(
            f"| {item['file'].removeprefix('kernel-').removesuffix('.onnx')} | {wasm:.1f} | "
            f"{native:.1f} | {wasm / native:.2f}× |"
        )
    print(f"\n{matched}")
    load = res["load"]
    print(
        f"\npage load until ready: {load['ms'] / 1000:.2f} s, {load['bytes'] / 1e6:.1f} MB "
        "transferred (from localhost, no cache)"
    )
    if res.get("memory"):
        print("\n| minute | tab memory MB | segments so far |\n|---|---|---|")
        for m in res["memory"]:
            print(f"| {m['seconds'] / 60:.0f} | {m['bytes'] / 1e6:.1f} | {m['segments']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
