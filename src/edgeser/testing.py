"""Public helpers that build small corpora and signals in the real formats, for tests.

These write tiny trees with exactly the real folder layouts, file names and
label-file formats, including the traps a parser must survive (the IEMOCAP
mocap-marker letter, non-summary sub-folders, empty WAVs, stereo 48 kHz files).
For realistic speech-like corpora use :mod:`edgeser.data.synth` instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf


def tone(
    duration: float,
    sample_rate: int = 16_000,
    freq: float = 220.0,
    seed: int = 0,
    channels: int = 1,
    silence: float = 0.0,
) -> np.ndarray:
    """A harmonic tone with a little noise, optionally padded with ``silence`` seconds."""
    rng = np.random.default_rng(seed)
    n = max(round(duration * sample_rate), 0)
    t = np.arange(n) / sample_rate
    x = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 5))
    x = 0.3 * x / 2.1 + 0.01 * rng.standard_normal(n)
    pad = np.zeros(round(silence * sample_rate))
    x = np.concatenate([pad, x, pad]).astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    return x


def write_wav(
    path: str | Path, signal: np.ndarray, sample_rate: int = 16_000, subtype: str = "PCM_16"
) -> Path:
    """Write ``signal`` (``[n]`` or ``[n, channels]``) as a WAV file, creating folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(p, signal, sample_rate, subtype=subtype)
    return p


def write_empty_wav(path: str | Path, sample_rate: int = 16_000) -> Path:
    """A valid WAV header with zero frames (like CREMA-D's ``1076_MTI_SAD_XX.wav``)."""
    return write_wav(path, np.zeros(0, dtype=np.float32), sample_rate)


def iemocap_summary_line(
    start: float, end: float, utt: str, label: str, vad: Sequence[float] = (2.5, 2.5, 2.5)
) -> str:
    """One EmoEvaluation summary line, tab-separated as in the release."""
    v = ", ".join(f"{x:.4f}" for x in vad)
    return f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[{v}]"


def make_iemocap_tree(
    root: str | Path,
    utterances: Iterable[tuple[str, str]],
    *,
    duration: float = 0.5,
    missing_audio: Iterable[str] = (),
    empty_audio: Iterable[str] = (),
    extra_lines: Iterable[tuple[str, str]] = (),
    ratings: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Write ``IEMOCAP_full_release/`` holding ``(utterance, label)`` pairs.

    ``ratings`` gives utterances their summary line's ``[V, A, D]`` (default 2.5 each).

    Each dialog's label file has the ``%`` header, summary lines followed by
    per-annotator lines, and the ``Categorical/``, ``Attribute/`` and
    ``Self-evaluation/`` sub-folders, whose files look like summaries to a naive
    parser. ``extra_lines`` appends ``(dialog, raw line)`` pairs verbatim.
    """
    r = Path(root) / "IEMOCAP_full_release"
    missing, empty = set(missing_audio), set(empty_audio)
    dialogs: dict[str, list[tuple[str, str]]] = {}
    for utt, label in utterances:
        dialogs.setdefault(utt.rsplit("_", 1)[0], []).append((utt, label))
    extra: dict[str, list[str]] = {}
    for dialog, line in extra_lines:
        extra.setdefault(dialog, []).append(line)
        dialogs.setdefault(dialog, [])
    for i, (dialog, items) in enumerate(sorted(dialogs.items())):
        session = int(dialog[3:5])
        emo = r / f"Session{session}" / "dialog" / "EmoEvaluation"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        t = 1.0
        for j, (utt, label) in enumerate(items):
            lines += [
                iemocap_summary_line(
                    t, t + duration, utt, label, (ratings or {}).get(utt, (2.5, 2.5, 2.5))
                ),
                "C-E2:\tNeutral;\t()",
                "C-E3:\tNeutral; Frustration;\t()",
                "A-E3:\tval 3; act 2; dom  2;\t()",
                "",
            ]
            t += duration + 0.5
            wav = r / f"Session{session}" / "sentences" / "wav" / dialog / f"{utt}.wav"
            if utt in missing:
                continue
            if utt in empty:
                write_empty_wav(wav)
            else:
                write_wav(wav, tone(duration, freq=150.0 + 10 * (i + j), seed=i * 100 + j))
        lines += extra.get(dialog, [])
        emo.mkdir(parents=True, exist_ok=True)
        (emo / f"{dialog}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        # Non-summary sub-folders: a naive glob("**/*.txt") would read these.
        for sub, suffix in (
            ("Categorical", "_e1_cat"),
            ("Attribute", "_e1_atr"),
            ("Self-evaluation", ""),
        ):
            (emo / sub).mkdir(exist_ok=True)
            body = "".join(f"{iemocap_summary_line(0.0, 1.0, u, 'ang')}\n" for u, _ in items)
            (emo / sub / f"{dialog}{suffix}.txt").write_text(body, encoding="utf-8")
    return r


def make_cremad_tree(
    root: str | Path,
    names: Iterable[str],
    *,
    duration: float = 0.5,
    empty: Iterable[str] = (),
    demographics: dict[str, str] | None = None,
) -> Path:
    """Write ``AudioWAV/<name>.wav`` for each CREMA-D file stem, plus demographics."""
    r = Path(root)
    empty = set(empty)
    for i, name in enumerate(names):
        wav = r / "AudioWAV" / f"{name}.wav"
        if name in empty:
            write_empty_wav(wav)
        else:
            write_wav(wav, tone(duration, freq=180.0 + 5 * i, seed=i))
    if demographics is not None:
        rows = ["ActorID,Age,Sex,Race,Ethnicity"]
        rows += [f"{a},30,{s},Caucasian,Not Hispanic" for a, s in demographics.items()]
        (r / "VideoDemographics.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return r


def make_ravdess_tree(
    root: str | Path,
    names: Iterable[str],
    *,
    duration: float = 0.5,
    sample_rate: int = 48_000,
    stereo: Iterable[str] = (),
) -> Path:
    """Write ``Actor_XX/<name>.wav`` (48 kHz) for each RAVDESS file stem."""
    r = Path(root)
    stereo = set(stereo)
    for i, name in enumerate(names):
        actor = name.rsplit("-", 1)[1]
        sig = tone(
            duration, sample_rate, freq=200.0 + 5 * i, seed=i, channels=2 if name in stereo else 1
        )
        write_wav(r / f"Actor_{actor}" / f"{name}.wav", sig, sample_rate)
    return r


# --------------------------------------------------------------------------- Ray
class NamespaceUnavailable(RuntimeError):
    """No loopback-only network namespace here (not root, no ``ip``, no Ray)."""


@dataclass
class LoopbackRayCluster:
    """A Ray cluster whose every process lives in network namespace ``namespace``."""

    namespace: str
    address: str
    env: dict[str, str]

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` run inside the namespace."""
        return ["ip", "netns", "exec", self.namespace, *args]

    def run(
        self, args: Sequence[str], *, timeout: float = 300, **kw: Any
    ) -> subprocess.CompletedProcess:
        """``args`` in the namespace, ``RAY_ADDRESS`` set to the cluster, output captured."""
        return subprocess.run(
            self.command(args), env=self.env, capture_output=True, text=True, timeout=timeout, **kw
        )


def _namespace_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@contextlib.contextmanager
def loopback_ray_cluster(
    num_cpus: int = 2,
    *,
    worker_nodes: int = 0,
    worker_cpus: int = 1,
    port: int = 6379,
) -> Iterator[LoopbackRayCluster]:
    """A local Ray cluster inside a new network namespace that has only ``lo``.

    A Ray node finds "its" address by probing a public one and registers on the machine's
    outward interface; in a namespace with only loopback it starts on 127.0.0.1 and no
    traffic can leave the machine. Starts a head node with ``num_cpus`` CPUs and
    ``worker_nodes`` more nodes of ``worker_cpus`` CPUs each (``ray start --address``: a
    simulated multi-node cluster); at exit kills the namespace's processes by id and
    deletes it. Needs root, ``ip`` and Ray; :class:`NamespaceUnavailable` otherwise.
    """
    if importlib.util.find_spec("ray") is None:
        raise NamespaceUnavailable("Ray is not installed (pip install 'edgeser[distributed]')")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise NamespaceUnavailable("a loopback-only network namespace needs root and `ip`")
    ns = f"edgeser-{os.getpid()}-{next(_NAMESPACES)}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        raise NamespaceUnavailable(f"cannot create network namespace {ns}")
    temp = Path(tempfile.mkdtemp(prefix="edgeser-ray-"))  # short: Ray's socket paths
    # HOME: a token file another cluster left in ~/.ray makes a head demand a token its
    # clients do not send; this cluster reads and writes Ray's files in its own folder
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ADDRESS": f"127.0.0.1:{port}",
        "HOME": str(temp),
        "PYTHONUNBUFFERED": "1",
    }
    cluster = LoopbackRayCluster(ns, f"127.0.0.1:{port}", env)
    ray_bin = str(Path(sys.executable).parent / "ray")
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run(cluster.command(["ip", "link", "set", "lo", "up"]), check=True)
        starts = [
            [
                ray_bin,
                "start",
                "--head",
                f"--port={port}",
                f"--num-cpus={num_cpus}",
                "--include-dashboard=false",
                f"--temp-dir={temp}",
                *common,
            ]
        ]
        starts += [
            [ray_bin, "start", f"--address=127.0.0.1:{port}", f"--num-cpus={worker_cpus}", *common]
        ] * worker_nodes
        for args in starts:
            res = cluster.run(args, timeout=180)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(args[:3])} failed: {res.stderr[-2000:]}")
        yield cluster
    finally:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
            for pid in _namespace_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while _namespace_pids(ns) and time.monotonic() < deadline:
                time.sleep(0.2)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


_NAMESPACES = itertools.count()


def write_tiny_manifests(root: str | Path, duration: float) -> dict[str, Path]:
    """Tiny IEMOCAP (3 sessions x 2 speakers x 6 utterances) and RAVDESS (2 actors x 4
    emotions) manifests of synthetic tones: ``{"iemocap": CSV, "ravdess": CSV}``."""
    from edgeser.data.manifest import write_manifest
    from edgeser.data.recipes import prepare_iemocap, prepare_ravdess

    labels = ["neu", "ang", "sad", "hap", "exc"]
    utts = [
        (f"Ses0{s}{'FM'[i % 2]}_impro01_{spk}{i:03d}", labels[i % 5])
        for s in range(1, 4)
        for spk in "FM"
        for i in range(6)
    ]
    ravdess = [f"03-01-0{e}-01-01-01-0{a}" for a in (1, 2) for e in (1, 3, 4, 5)]
    root = Path(root)
    ie = prepare_iemocap(make_iemocap_tree(root / "ie", utts, duration=duration))
    rv = prepare_ravdess(make_ravdess_tree(root / "rv", ravdess, duration=duration))
    write_manifest(ie, root / "ie.csv")
    write_manifest(rv, root / "rv.csv")
    return {"iemocap": root / "ie.csv", "ravdess": root / "rv.csv"}


def export_tiny_model(root: str | Path, *, sharpen: float = 8.0) -> dict[str, Path]:
    """A tiny randomly initialised model (DistilHuBERT's layout, small sizes; layer weights
    drawn, the classifier's last layer multiplied by ``sharpen`` so its answers are
    confident and labels meaningful), saved under ``root/production`` and exported to
    ``root/onnx``: :func:`~edgeser.exporting.export_model`'s ``{kind: path}``. Needs torch."""
    import torch

    from edgeser.config import TrainConfig
    from edgeser.exporting.exporter import export_model
    from edgeser.models.ssl import random_encoder, tiny_config
    from edgeser.training.folder import build_model, save_model

    root = Path(root)
    encoder = random_encoder(tiny_config(), seed=0)
    cfg = TrainConfig(encoder="random", precision="fp32")
    model = build_model(cfg, encoder, "pooled")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.head.layer_logits.copy_(torch.randn(model.head.layer_logits.shape, generator=gen))
        model.head.classifier[-1].weight.mul_(sharpen)
    save_model(
        root / "production", model, cfg, encoder, model.kind, {"name": "production", "metrics": {}}
    )
    return export_model(root / "production", root / "onnx", encoder=encoder)


#: The dummy model's labels (:func:`make_dummy_model`).
DUMMY_LABELS = ["neutral", "happy", "sad", "angry"]


def make_dummy_model(out_dir: str | Path, labels: list[str] | None = None) -> Path:
    """A tiny model in the exported-model contract, for tests and benchmarks (needs torch):
    ``model.onnx``, ``model.int8.onnx`` (a copy: the dummy has nothing to quantise) and its
    model card ``model.json`` with the real graph signature, ``waveform`` float32 ``[batch,
    samples]`` + ``lengths`` int64 ``[batch]`` -> ``probabilities`` float32 ``[batch,
    classes]``. Inside, it masks each row to its length, applies pre-emphasis and peak
    normalisation, and maps a few statistics (mean absolute value, energy, zero-crossing
    rate, log duration) through a fixed linear layer and a softmax. Returns the path of
    ``model.onnx``."""
    import json
    import warnings

    import torch
    from torch import nn

    from edgeser import __version__
    from edgeser.runtime.card import CARD_NAME, graph_metadata, make_card

    labels = list(labels or DUMMY_LABELS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    class Dummy(nn.Module):
        def __init__(self, n_classes: int) -> None:
            super().__init__()
            self.linear = nn.Linear(4, n_classes)
            # Hand-set weights over centred features: zero-crossing rate (pitch) and
            # duration decide, so different tones and lengths get different labels.
            base = torch.tensor(
                [
                    [0.0, 0.0, -2.0, -0.5],
                    [0.0, 0.0, 2.0, -0.5],
                    [-1.0, 0.0, 0.0, 1.5],
                    [1.0, 0.0, 0.5, 0.5],
                ]
            )
            weight = torch.zeros(n_classes, 4)
            for i in range(n_classes):
                weight[i] = base[i % 4] * (1.0 + 0.1 * (i // 4))
            with torch.no_grad():
                self.linear.weight.copy_(weight)
                self.linear.bias.zero_()

        def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            n = waveform.shape[1]
            idx = torch.arange(n, device=waveform.device).unsqueeze(0)
            mask = (idx < lengths.unsqueeze(1)).to(waveform.dtype)
            x = waveform * mask
            prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
            y = (x - 0.97 * prev) * mask
            peak = y.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
            y = y / peak
            cnt = lengths.to(waveform.dtype).clamp_min(1.0).unsqueeze(1)
            mean_abs = y.abs().sum(dim=1, keepdim=True) / cnt
            energy = (y * y).sum(dim=1, keepdim=True) / cnt
            sign = (x[:, 1:] * x[:, :-1] < 0).to(waveform.dtype) * mask[:, 1:]
            zcr = sign.sum(dim=1, keepdim=True) / cnt
            dur = torch.log(cnt / 16000.0)
            feats = torch.cat([(mean_abs - 0.5) * 4.0, energy, (zcr - 0.04) * 40.0, dur], dim=1)
            return torch.softmax(self.linear(feats), dim=1)

    model = Dummy(len(labels)).eval()
    wave = torch.zeros(2, 8000)
    lengths = torch.tensor([8000, 4000], dtype=torch.int64)
    onnx_path = out / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter
        torch.onnx.export(
            model,
            (wave, lengths),
            str(onnx_path),
            input_names=["waveform", "lengths"],
            output_names=["probabilities"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={
                "waveform": {0: "batch", 1: "samples"},
                "lengths": {0: "batch"},
                "probabilities": {0: "batch"},
            },
        )
    import onnx

    graph = onnx.load(str(onnx_path))
    for key, value in graph_metadata(labels).items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(onnx_path))
    shutil.copyfile(onnx_path, out / "model.int8.onnx")
    card = make_card(
        edgeser_version=__version__,
        labels=labels,
        model="dummy",
        min_samples=400,
        outside_graph={
            "resample": 16000,
            "mono": "mean of channels",
            "trim": {"top_db": 20, "frame_length": 2048, "hop_length": 512},
        },
        inside_graph={"preemphasis": 0.97, "peak_normalize": True},
        files={"float32": "model.onnx", "int8": "model.int8.onnx"},
        encoder="dummy (tests only)",
    )
    (out / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return onnx_path
