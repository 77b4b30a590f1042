"""An export-friendly PyTorch mirror of the whole SER model, waveform in, probabilities out.

:class:`ExportGraph` re-implements the forward pass of a ``transformers`` HuBERT-family
encoder (DistilHuBERT) plus the trained :class:`~edgeser.models.head.EmotionHead` with
weights copied from them, written so that ``torch.onnx.export`` yields a compact graph with
dynamic batch and sample axes:

- pre-emphasis and peak normalisation run inside the graph over each row's valid samples
  (``lengths``); rows are zero-padded to the longest, and a tail of ``min_samples`` zeros
  makes inputs shorter than the receptive field legal (as :class:`Encoder` pads them);
- the first convolution (one input channel, kernel a multiple of its stride) is a matmul
  over strided frames, ~15x faster than a 1-channel Conv on CPU runtimes;
- the first layer's GroupNorm (statistics over time) uses only valid frames, and the
  transformer attention and the pooling are masked, so a row of a padded batch gets the
  same probabilities as the same input alone;
- that GroupNorm's statistics come from the first convolution's *input* frames: the
  convolution is linear, so each channel's mean over time is ``w·μ + b`` and its variance
  ``wᵀ Σ w``, with ``μ`` and ``Σ`` the mean and the 10 x 10 covariance of the frames. The
  normalisation becomes a per-row affine map of the convolution's output, and the whole
  convolutional feature extractor is *local*: output frame ``t`` depends only on samples
  ``[320 t, 320 t + 400)``. :class:`ConvStack` holds it, laid out in ``n`` equal chunks
  of at most ``chunk_frames`` frames (the waveform padded to whole chunks, the at most
  ``n - 1`` surplus frames cut after), so that
  :func:`edgeser.exporting.chunked.loop_feature_extractor` can run it one chunk at a time in
  an ONNX ``Loop`` and memory stops growing with the input (the
  extractor's first layers hold 512 channels at 3,200 frames per second);
- the positional convolution's weight norm is folded into a plain weight.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeser.core.errors import EdgeserError

logger = logging.getLogger(__name__)

__all__ = [
    "CHUNK_FRAMES",
    "STACK_TENSORS",
    "ConvStack",
    "ExportGraph",
    "check_exportable",
    "masked_front",
]

_MASK_BIAS = -1.0e4  # additive attention bias on padded keys (fp16-safe, exp() underflows)
_PEAK_EPS = 1e-8  # as edgeser.audio.frontend.peak_normalize
#: Attention heads computed together (12 / 4 = 3 groups for DistilHuBERT): memory of one
#: group's scores against a few more, smaller operators (bench/README.md).
HEAD_GROUP = 4
#: Most output frames of the feature extractor computed per chunk (1 s of audio at 50
#: frames/s); an input of T frames runs in n = ceil(T / 50) equal chunks of ceil(T / n).
CHUNK_FRAMES = 50
#: Names of the tensors around the feature extractor in a graph exported with
#: ``expose_stack=True``: its input (padded to n equal chunks), the per-row affine
#: parameters of its first layer, its output (n chunks) and n.
STACK_TENSORS = ("stack_input", "stack_scale", "stack_shift", "stack_output", "stack_chunks")


def check_exportable(hf_model: Any) -> None:
    """Raise :class:`EdgeserError` unless ``hf_model`` is a HuBERT/DistilHuBERT or
    wav2vec 2.0 (Base-style, post-LN) encoder we can mirror. WavLM (gated relative
    position bias) is not mirrored."""
    from transformers import HubertModel, Wav2Vec2Model

    name = type(hf_model).__name__
    config = getattr(hf_model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not (
        (isinstance(hf_model, HubertModel) and model_type == "hubert")
        or (isinstance(hf_model, Wav2Vec2Model) and model_type == "wav2vec2")
    ):
        hint = ""
        if model_type == "wavlm":
            hint = (
                "; WavLM's gated relative position bias has no export graph: train "
                "--model distilhubert, hubert-base or wav2vec2-base to deploy"
            )
        raise EdgeserError(
            f"export supports HuBERT/DistilHuBERT and wav2vec 2.0 encoders only, got {name} "
            f"(model_type {model_type!r}){hint}"
        )

    problems = []
    if getattr(config, "feat_extract_norm", "group") != "group":
        problems.append(f"feat_extract_norm={config.feat_extract_norm!r} (need 'group')")
    if getattr(config, "do_stable_layer_norm", False):
        problems.append("do_stable_layer_norm=True (pre-LN transformer)")
    if getattr(config, "conv_pos_batch_norm", False):
        problems.append("conv_pos_batch_norm=True")
    for key in ("feat_extract_activation", "hidden_act"):
        if getattr(config, key, "gelu") != "gelu":
            problems.append(f"{key}={getattr(config, key)!r} (need 'gelu')")
    if problems:
        raise EdgeserError(f"cannot export this {name}: " + "; ".join(problems))


def masked_front(
    x: torch.Tensor,
    lengths: torch.Tensor,
    *,
    tail: int,
    preemphasis: float,
    peak_normalize: bool,
    standardize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The in-graph pre-processing of a zero-padded batch ``[B, S]``, row by row.

    Appends ``tail`` zeros (so short and empty inputs are legal), zeroes samples past each
    row's ``lengths``, then over the valid samples only: standardisation (HF
    ``do_normalize``, optional), pre-emphasis (as :func:`edgeser.audio.frontend.preemphasis`)
    and peak normalisation (as :func:`~edgeser.audio.frontend.peak_normalize`). Returns
    ``([B, S + tail], lengths clamped at 0)``.
    """
    pad = torch.zeros_like(lengths, dtype=x.dtype)[:, None].expand(-1, tail)
    x = torch.cat([x, pad], dim=1)
    idx = torch.arange(x.shape[1], dtype=torch.int64)[None, :]  # [1, N]
    lengths = torch.clamp(lengths.to(torch.int64), min=0)
    valid = idx < lengths[:, None]
    zero = torch.zeros((), dtype=x.dtype)
    x = torch.where(valid, x, zero)
    if standardize:
        count = torch.clamp(lengths, min=1).to(x.dtype)[:, None]
        mean = x.sum(dim=1, keepdim=True) / count
        centred = torch.where(valid, x - mean, zero)
        var = (centred * centred).sum(dim=1, keepdim=True) / count
        x = centred / torch.sqrt(var + 1e-7)
    if preemphasis:
        prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        x = torch.where(valid, x - preemphasis * prev, zero)
    if peak_normalize:
        peak = torch.amax(torch.abs(x), dim=1, keepdim=True)
        x = x / torch.where(peak < _PEAK_EPS, torch.ones_like(peak), peak)
    return x, lengths


class _Layer(nn.Module):
    """One post-LN transformer layer (HF ``HubertEncoderLayer``) with masked attention."""

    def __init__(self, hf_layer: nn.Module, num_heads: int) -> None:
        super().__init__()
        att = hf_layer.attention
        self.q_proj = copy.deepcopy(att.q_proj)
        self.k_proj = copy.deepcopy(att.k_proj)
        self.v_proj = copy.deepcopy(att.v_proj)
        self.out_proj = copy.deepcopy(att.out_proj)
        self.layer_norm = copy.deepcopy(hf_layer.layer_norm)
        self.fc1 = copy.deepcopy(hf_layer.feed_forward.intermediate_dense)
        self.fc2 = copy.deepcopy(hf_layer.feed_forward.output_dense)
        self.final_layer_norm = copy.deepcopy(hf_layer.final_layer_norm)
        self.num_heads = num_heads
        self.head_dim = self.q_proj.out_features // num_heads
        self.scale = self.head_dim**-0.5

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # HEAD_GROUP heads at a time: only their [T, T] scores are live at once, not those
        # of all 12 (36 MB at 10 s of audio with the softmax's copy; the same arithmetic)
        b, t, _ = h.shape
        group = min(HEAD_GROUP, self.num_heads)
        width = group * self.head_dim
        shape = (b, t, group, self.head_dim)
        qs, ks, vs = (
            proj(h).split(width, dim=2) for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        parts = []
        for q, k, v in zip(qs, ks, vs, strict=True):
            q, k, v = (x.reshape(shape).transpose(1, 2) for x in (q, k, v))
            scores = torch.matmul(q, k.transpose(2, 3)) * self.scale + bias
            att = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, group, T, hd]
            parts.append(att.transpose(1, 2).reshape(b, t, width))
        att = self.out_proj(torch.cat(parts, dim=2))
        h = self.layer_norm(h + att)
        h = h + self.fc2(F.gelu(self.fc1(h)))
        return self.final_layer_norm(h)


def size_div(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
    """``a // b`` for sizes, which are never negative here (every input carries a tail of
    at least the receptive field): truncation equals the floor, and exports as one ``Div``
    where the floor's sign handling is eight operators (a smaller ``.ort`` file)."""
    return torch.div(a, b, rounding_mode="trunc")


def conv_frames(samples: torch.Tensor, spec: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Output frames of the stack of ``(kernel, stride)`` convolutions ``spec`` over
    ``samples >= receptive field`` inputs, in closed form: ``(samples - receptive) // hop
    + 1`` equals the layer-by-layer ``(n - kernel) // stride + 1`` exactly (nested floors
    of integers), in three operators instead of three per layer."""
    receptive, hop = 1, 1
    for kernel, stride in spec:
        receptive += (kernel - 1) * hop
        hop *= stride
    return size_div(samples - receptive, hop) + 1


def _frames(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """The first convolution's input frames ``[B, kernel, F]`` of ``x`` ``[B, S]`` (kernel a
    multiple of the stride): ``F = (S - kernel) // stride + 1``, built from strided blocks
    (slices and a concatenation: no gather)."""
    batch = x.shape[0]
    steps = x.shape[1] // stride
    blocks = x[:, : steps * stride].reshape(batch, steps, stride).transpose(1, 2)
    r = kernel // stride
    count = steps - r + 1
    return torch.cat([blocks[:, :, j : j + count] for j in range(r)], dim=1)


class ConvStack(nn.Module):
    """The convolutional feature extractor with its first GroupNorm as a per-row affine
    map: ``(x [B, S], scale [B, C, 1], shift [B, C, 1]) -> [B, C, F]``. Local: every output
    frame depends on its own receptive field only, so any stretch of ``x`` starting at a
    multiple of the total stride gives the same frames as the whole."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        convs: nn.ModuleList,
        conv_spec: list[tuple[int, int]],
    ) -> None:
        super().__init__()
        self.conv0 = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            self.conv0.weight.copy_(weight)
            if bias is not None:
                self.conv0.bias.copy_(bias)
        self.convs = convs
        self.kernel, self.stride = conv_spec[0]

    def forward(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        frames = _frames(x, self.kernel, self.stride)
        h = torch.matmul(self.conv0.weight, frames)  # [C0, k] @ [B, k, F] -> [B, C0, F]
        if self.conv0.bias is not None:
            h = h + self.conv0.bias[:, None]
        h = F.gelu(h * scale + shift)
        for conv in self.convs:
            h = F.gelu(conv(h))
        return h


class GroupedConv(nn.Module):
    """A grouped 1-D convolution (the positional convolution: 16 groups, 128 taps) as one
    ``Conv`` per group, outputs concatenated: the same arithmetic, and in the 8-bit model
    each group's weight is widened just before its own convolution (1.2 MB of float32 at
    a time, not the whole 19 MB). The weight norm is folded: the parametrised ``.weight``
    is the product."""

    def __init__(self, src: nn.Conv1d) -> None:
        super().__init__()
        groups = int(src.groups)
        self.width = src.in_channels // groups
        step = src.out_channels // groups
        self.convs = nn.ModuleList()
        weight, bias = src.weight.detach(), src.bias.detach()
        for g in range(groups):
            conv = nn.Conv1d(
                self.width, step, kernel_size=src.kernel_size[0], padding=src.padding[0]
            )
            with torch.no_grad():
                conv.weight.copy_(weight[g * step : (g + 1) * step])
                conv.bias.copy_(bias[g * step : (g + 1) * step])
            self.convs.append(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.width, dim=1)
        return torch.cat([conv(p) for p, conv in zip(parts, self.convs, strict=True)], dim=1)


class ExportGraph(nn.Module):
    """``(waveform [B, S] float32, lengths [B] int64) -> probabilities [B, C]`` (and
    ``dimensions [B, K]`` when the head has a dimensional output).

    Args:
        hf_model: the encoder's ``transformers`` ``HubertModel`` (weights are copied).
        head: the trained :class:`~edgeser.models.head.EmotionHead` (copied, eval mode).
        preemphasis: pre-emphasis coefficient applied in the graph (0 disables it).
        peak_normalize: peak-normalise each row in the graph.
        do_normalize: standardise each row over its valid samples (HF ``do_normalize``).
        temperature: the calibration temperature the logits are divided by before the
            softmax (:mod:`edgeser.evaluation.confidence`; 1: as trained).
    """

    def __init__(
        self,
        hf_model: nn.Module,
        head: nn.Module,
        *,
        preemphasis: float = 0.97,
        peak_normalize: bool = True,
        do_normalize: bool = False,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        check_exportable(hf_model)
        self.temperature = float(temperature)
        config = hf_model.config
        self.preemphasis = float(preemphasis)
        self.peak_normalize = bool(peak_normalize)
        self.do_normalize = bool(do_normalize)
        self.conv_spec = [
            (int(k), int(s)) for k, s in zip(config.conv_kernel, config.conv_stride, strict=True)
        ]
        receptive = 1
        for kernel, stride in reversed(self.conv_spec):
            receptive = (receptive - 1) * stride + kernel
        self.min_samples = receptive
        layers = hf_model.feature_extractor.conv_layers
        first = layers[0]
        k0, s0 = self.conv_spec[0]
        w0 = first.conv.weight.detach().float()  # [C0, 1, k0]
        self.first_as_matmul = k0 % s0 == 0 and w0.shape[1] == 1
        convs = nn.ModuleList([copy.deepcopy(layer.conv) for layer in layers[1:]])
        #: the chunked layout needs the first convolution as a product over frames
        self.stack = (
            ConvStack(w0[:, 0, :], first.conv.bias, convs, self.conv_spec)
            if self.first_as_matmul
            else None
        )
        self.conv0 = None if self.first_as_matmul else copy.deepcopy(first.conv)
        self.convs = None if self.first_as_matmul else convs
        norm = first.layer_norm
        self.gn_weight = nn.Parameter(norm.weight.detach().clone().float())
        self.gn_bias = nn.Parameter(norm.bias.detach().clone().float())
        self.gn_eps = float(norm.eps)
        self.hop = math.prod(s for _, s in self.conv_spec)
        self.chunk_frames = CHUNK_FRAMES
        #: return the tensors of :data:`STACK_TENSORS` as extra outputs (for the exporter)
        self.expose_stack = False
        proj = hf_model.feature_projection
        # wav2vec 2.0's projection always normalises; HuBERT's only with feat_proj_layer_norm
        has_norm = getattr(proj, "feat_proj_layer_norm", True)
        self.proj_norm = copy.deepcopy(proj.layer_norm) if has_norm else None
        self.projection = copy.deepcopy(proj.projection)
        pos = hf_model.encoder.pos_conv_embed
        src = pos.conv
        self.pos_conv = GroupedConv(src)
        self.pos_trim = int(pos.padding.num_pad_remove)
        self.enc_norm = copy.deepcopy(hf_model.encoder.layer_norm)
        heads = int(config.num_attention_heads)
        self.layers = nn.ModuleList([_Layer(layer, heads) for layer in hf_model.encoder.layers])
        self.head = copy.deepcopy(head)
        self.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ pieces

    def _frames_after(self, samples: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        return conv_frames(samples, self.conv_spec[:upto])

    def _front(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask, (standardise), pre-emphasise and peak-normalise; append the zero tail."""
        x, lengths = masked_front(
            x,
            lengths,
            tail=self.min_samples,
            preemphasis=self.preemphasis,
            peak_normalize=self.peak_normalize,
            standardize=self.do_normalize,
        )
        return x, torch.clamp(lengths, min=self.min_samples)

    def _first_conv(self, x: torch.Tensor) -> torch.Tensor:
        """First conv layer output ``[B, C0, F0]`` (before its GroupNorm), for a first
        convolution that is not a product over frames (no :class:`ConvStack`)."""
        return self.conv0(x[:, None, :])

    def _masked_group_norm(self, h: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Per-channel normalisation over each row's valid frames (h: ``[B, C, T]``)."""
        idx = torch.arange(h.shape[2], dtype=torch.int64)[None, None, :]
        mask = (idx < frames[:, None, None]).to(h.dtype)  # [B, 1, T]
        count = torch.clamp(frames, min=1).to(h.dtype)[:, None, None]
        mean = (h * mask).sum(dim=2, keepdim=True) / count
        centred = (h - mean) * mask
        var = (centred * centred).sum(dim=2, keepdim=True) / count
        scale = self.gn_weight[:, None] / torch.sqrt(var + self.gn_eps)  # [B, C, 1]
        return (h - mean) * scale + self.gn_bias[:, None]

    # ------------------------------------------------------------------ forward

    def hidden_states(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All hidden states ``[L, B, T, D]`` and the valid-frame mask ``[B, T]``."""
        x, eff = self._front(waveform.to(torch.float32), lengths)
        h = self._features(x, eff)  # [B, C, T]
        h = h.transpose(1, 2)  # [B, T, C]
        frames = self._frames_after(eff)
        idx = torch.arange(h.shape[1], dtype=torch.int64)[None, :]
        mask = idx < frames[:, None]  # [B, T]
        if self.proj_norm is not None:
            h = self.proj_norm(h)
        h = self.projection(h)
        h = torch.where(mask[:, :, None], h, torch.zeros((), dtype=h.dtype))
        pos = self.pos_conv(h.transpose(1, 2))
        if self.pos_trim:
            pos = pos[:, :, : -self.pos_trim]
        h = self.enc_norm(h + F.gelu(pos).transpose(1, 2))
        bias = torch.where(mask, 0.0, _MASK_BIAS).to(h.dtype)[:, None, None, :]
        states = [h]
        for layer in self.layers:
            h = layer(h, bias)
            states.append(h)
        return torch.stack(states), mask

    def _first_norm(self, x: torch.Tensor, eff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first GroupNorm (one group per channel, statistics over each row's valid
        frames) as ``(scale, shift)`` ``[B, C, 1]`` of the first convolution's output,
        from the mean and covariance of its input frames (see the module docstring)."""
        frames = _frames(x, *self.conv_spec[0])  # [B, k, F]
        valid = self._frames_after(eff, 1)
        idx = torch.arange(frames.shape[2], dtype=torch.int64)[None, None, :]
        mask = (idx < valid[:, None, None]).to(frames.dtype)  # [B, 1, F]
        count = torch.clamp(valid, min=1).to(frames.dtype)[:, None]  # [B, 1]
        mean = (frames * mask).sum(dim=2) / count  # [B, k]
        centred = (frames - mean[:, :, None]) * mask
        cov = torch.matmul(centred, centred.transpose(1, 2)) / count[:, :, None]  # [B, k, k]
        w = self.stack.conv0.weight  # [C, k], as the stack uses it (one initializer)
        bias = self.stack.conv0.bias
        channel_mean = torch.matmul(w, mean[:, :, None])[:, :, 0]  # [B, C]
        if bias is not None:
            channel_mean = channel_mean + bias
        channel_var = (torch.matmul(w, cov) * w).sum(dim=2)  # diag(W Σ Wᵀ): [B, C]
        scale = self.gn_weight / torch.sqrt(torch.clamp(channel_var, min=0.0) + self.gn_eps)
        shift = self.gn_bias - channel_mean * scale
        return scale[:, :, None], shift[:, :, None]

    def _features(self, x: torch.Tensor, eff: torch.Tensor) -> torch.Tensor:
        """The feature extractor's output ``[B, C, T]`` (``T`` frames of ``x``)."""
        if self.stack is None:  # a first convolution that is not a product over frames
            h = self._first_conv(x)
            h = F.gelu(self._masked_group_norm(h, self._frames_after(eff, 1)))
            for conv in self.convs:
                h = F.gelu(conv(h))
            return h
        from torch.onnx.operators import shape_as_tensor

        scale, shift = self._first_norm(x, eff)
        # n equal chunks of c frames need n * c * hop + (receptive - hop) samples (sizes as
        # tensors: the exported graph computes them from x's shape, and n is exposed)
        total = conv_frames(shape_as_tensor(x)[1], self.conv_spec)
        n = size_div(total + self.chunk_frames - 1, self.chunk_frames)
        c = size_div(total + n - 1, n)
        need = n * c * self.hop + (self.min_samples - self.hop)
        pad = torch.zeros((x.shape[0], self.chunk_frames * self.hop), dtype=x.dtype)
        padded = torch.cat([x, pad], dim=1)[:, :need]
        h = self.stack(padded, scale, shift)
        self._exposed = (padded, scale, shift, h, n)
        return h[:, :, :total]

    @property
    def has_dimensions(self) -> bool:
        """Whether the graph has the second output, ``dimensions`` ``[B, K]``."""
        return getattr(self.head, "regressor", None) is not None

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        hidden, mask = self.hidden_states(waveform, lengths)
        z = self.head.embed(hidden, mask)
        probs = torch.softmax(self.head.classifier(z) / self.temperature, dim=-1)
        outputs = (probs, self.head.dimensions(z)) if self.has_dimensions else (probs,)
        if self.expose_stack and self.stack is not None:
            outputs = (*outputs, *self._exposed)
        return outputs if len(outputs) > 1 else probs


def num_weights(module: nn.Module) -> int:
    """Total number of parameter elements (for logs)."""
    return sum(math.prod(p.shape) for p in module.parameters())
