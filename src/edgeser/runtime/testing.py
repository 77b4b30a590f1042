"""A tiny model in the exported-model contract, for tests and benchmarks (needs torch).

:func:`make_dummy_model` writes ``model.onnx``, ``model.int8.onnx`` (a copy: the dummy has
nothing to quantise) and ``model.json`` with the real graph signature: ``waveform``
float32 ``[batch, samples]`` + ``lengths`` int64 ``[batch]`` -> ``probabilities`` float32
``[batch, 4]``. Inside, it masks each row to its length, applies pre-emphasis and peak
normalisation, and maps a few statistics (mean absolute value, energy, zero-crossing
rate, log duration) through a fixed linear layer and a softmax.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from edgeser import __version__
from edgeser.runtime.card import graph_metadata, make_card

DUMMY_LABELS = ["neutral", "happy", "sad", "angry"]


def make_dummy_model(out_dir: str | Path, labels: list[str] | None = None) -> Path:
    """Write the dummy model into ``out_dir``; returns the path of ``model.onnx``."""
    import torch
    from torch import nn

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
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return onnx_path
