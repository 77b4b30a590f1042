"""LIGHT-SERNET export: one ONNX graph from waveform to probabilities, and its int8 model.

:class:`LightSERNetGraph` has the contract of :class:`~edgeser.exporting.graph.ExportGraph`
(``waveform [B, S] float32, lengths [B] int64 -> probabilities [B, C]``, dynamic batch and
sample axes) so the runtime can load either model the same way. Inside the graph:

1. samples past each row's ``lengths`` are zeroed;
2. pre-emphasis and peak normalisation over each row's valid samples, exactly as
   :func:`edgeser.audio.frontend.preemphasis` / :func:`~edgeser.audio.frontend.peak_normalize`
   (the same formulas as ``ExportGraph._front``);
3. crop to the first ``mfcc_cfg.num_samples`` samples or zero-pad to it (a zero tail of
   ``num_samples`` is appended first, so any input length works, including 0);
4. :class:`~edgeser.models.lightsernet.MFCC` (ONNX ``STFT``), the network in eval mode,
   softmax.

A row of a zero-padded batch therefore gets the same probabilities as the same row alone.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeser.core.errors import EdgeserError
from edgeser.core.io import atomic_path
from edgeser.exporting.graph import masked_front
from edgeser.exporting.quantize import static_qdq
from edgeser.exporting.saturation import require_no_saturation
from edgeser.models.lightsernet import MFCC, LightSERNet, MFCCConfig

logger = logging.getLogger(__name__)

__all__ = [
    "LightSERNetGraph",
    "lightsernet_quantized_nodes",
    "quantize_lightsernet_int8",
]


class LightSERNetGraph(nn.Module):
    """``(waveform [B, S] float32, lengths [B] int64) -> probabilities [B, C]``.

    Args:
        net: the trained :class:`LightSERNet` (copied, eval mode, frozen).
        mfcc_cfg: the front end the net was trained with (duration included).
        preemphasis: pre-emphasis coefficient applied in the graph (0 disables it).
        peak_normalize: peak-normalise each row in the graph.
    """

    def __init__(
        self,
        net: LightSERNet,
        mfcc_cfg: MFCCConfig,
        *,
        preemphasis: float = 0.97,
        peak_normalize: bool = True,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.temperature = float(temperature)
        if net.cfg.mfcc.n_mfcc != mfcc_cfg.n_mfcc:
            raise EdgeserError(
                f"the net takes {net.cfg.mfcc.n_mfcc} MFCC, the front end gives {mfcc_cfg.n_mfcc}"
            )
        self.mfcc_cfg = mfcc_cfg
        self.num_samples = int(mfcc_cfg.num_samples)
        self.preemphasis = float(preemphasis)
        self.peak_normalize = bool(peak_normalize)
        self.mfcc = MFCC(mfcc_cfg)
        self.net = copy.deepcopy(net)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LightSERNetGraph:
        """Always eval: BatchNorm running statistics and no dropout."""
        return super().train(False)

    def front(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mask, pre-emphasise, peak-normalise, then crop/zero-pad: ``[B, num_samples]``."""
        x, _ = masked_front(
            waveform.to(torch.float32),
            lengths,
            tail=self.num_samples,
            preemphasis=self.preemphasis,
            peak_normalize=self.peak_normalize,
        )
        return x[:, : self.num_samples]  # S + num_samples >= num_samples, also for S == 0

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats = self.mfcc(self.front(waveform, lengths))
        return torch.softmax(self.net(feats) / self.temperature, dim=-1)


# ------------------------------------------------------------------------- int8

_WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
_QUANTISED_PREFIX = "/net/body/"  # ONNX names of the 3x3 / 1x1 body convolutions


def lightsernet_quantized_nodes(model: object) -> tuple[list[str], list[str]]:
    """``(quantised, kept_float)`` names of the weight-bearing nodes of an exported graph.

    Quantised: the five body convolutions (``/net/body/...``, 456,192 of the 460,740
    weights; the exporter folds each BatchNorm into its Conv). Kept float, and why:

    - ``/mfcc/MatMul`` (mel filterbank): its input is the linear STFT magnitude, whose
      dynamic range (~1e5 within an utterance) 8-bit activations would flatten to zero in
      quiet bands before the log; ``/mfcc/MatMul_1`` (DCT): its output is the MFCC image,
      see next point. The ``STFT`` op has no quantised form anyway.
    - the three input-path convs (``/net/paths.*``, 1,024 weights): a uint8 MFCC image
      would get one scale for a range set by c0 (clipped to +-10) while the other
      coefficients mostly lie within +-1, i.e. ~10 levels; measured, this alone doubled
      the int8 error of the pooled embedding;
    - the classifier (``/net/classifier/Gemm``, 1,284 weights): class scores hang on small
      differences of the pooled embedding; quantising it saves nothing and costs fidelity.
    """
    import onnx

    assert isinstance(model, onnx.ModelProto)
    quantised: list[str] = []
    kept: list[str] = []
    for node in model.graph.node:
        if node.op_type not in _WEIGHT_OPS:
            continue
        wanted = node.op_type == "Conv" and node.name.startswith(_QUANTISED_PREFIX)
        (quantised if wanted else kept).append(node.name)
    return quantised, kept


def quantize_lightsernet_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration_waves: Sequence[np.ndarray],
) -> None:
    """Static int8 quantisation (QDQ) of an exported LIGHT-SERNET graph, written atomically.

    Per-channel symmetric 7-bit int8 weights (no pair sum can saturate on CPUs without
    VNNI; checked), uint8 asymmetric activations (MinMax), for the network's body
    convolutions (see :func:`lightsernet_quantized_nodes`: the MFCC front
    end, the input-path convs and the classifier stay float32). ``calibration_waves``:
    16 kHz waveforms as the runtime feeds them (trimmed, not pre-emphasised), fed one at a
    time. Deterministic for the same input.
    """
    import onnx

    waves = [np.asarray(w, np.float32).reshape(-1) for w in calibration_waves]
    if not waves:
        raise EdgeserError("int8 export needs at least one calibration waveform")
    quantised, kept = lightsernet_quantized_nodes(onnx.load(str(fp32_path)))
    if not quantised:
        raise EdgeserError(
            f"{fp32_path}: no LIGHT-SERNET body convolutions ({_QUANTISED_PREFIX}...) found"
        )
    with atomic_path(int8_path) as tmp:
        static_qdq(fp32_path, tmp, waves, quantised, ["Conv"], weights="uint8")
        require_no_saturation(tmp)
    logger.info(
        "LIGHT-SERNET int8: %d nodes static QDQ, kept float: %s",
        len(quantised),
        ", ".join(kept) or "none",
    )
