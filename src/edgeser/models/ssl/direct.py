"""The direct implementation of a frozen SSL encoder's forward pass.

What :class:`DirectPath` computes equals the ``transformers`` modules' forward pass, in
fewer and larger operations (see :mod:`edgeser.models.ssl`): the first convolution with its
GroupNorm folded into one product, the other convolutions time-major as matrix products
over several utterances laid end to end, the transformer with a float32 residual stream
and fused q/k/v products; in bfloat16 with weights cast once and, by default, dynamic int8
products for the transformer layers' linear maps. Derived weights (casts, re-laid-out
blocks, int8 packs) are cached and rebuilt whenever the float32 masters change.

These operations are hand-written because no library offers them for these models: the
``transformers`` modules run one utterance length per batch, the convolutions at a few
GFLOP/s on CPU for the first layer, and neither casts once nor packs int8 weights.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edgeser.audio.io import SAMPLE_RATE
from edgeser.models.ssl.configs import conv_frames


class StridedMatmulConv1d(nn.Module):
    """A single-input-channel ``Conv1d`` computed as one matmul over strided frames.

    The first layer of the wav2vec 2.0 / HuBERT feature extractor (kernel 10, stride 5,
    one input channel) runs at a few GFLOP/s as a convolution on CPU, but the same
    product written as ``frames [B, T', k] @ weight [k, C]`` runs near matmul peak
    (about 7x faster in float32 here). The parameters are the original conv's, under
    the same names, so state dicts and fingerprints are unchanged.
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        if conv.in_channels != 1 or conv.groups != 1 or conv.padding not in (0, (0,)):
            raise ValueError("only a single-channel, unpadded Conv1d can be rewritten")
        self.kernel_size = int(conv.kernel_size[0])
        self.stride = int(conv.stride[0])
        self.dilation = int(conv.dilation[0])
        if self.dilation != 1:
            raise ValueError("dilated convolutions are not rewritten")
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.unfold(-1, self.kernel_size, self.stride)[:, 0]  # [B, T', k]
        out = torch.matmul(frames, self.weight[:, 0].t())  # [B, T', C]
        if self.bias is not None:
            out = out + self.bias
        return out.transpose(1, 2)


def use_strided_matmul_first_conv(model: nn.Module) -> None:
    """Swap the feature extractor's first conv for :class:`StridedMatmulConv1d` in place."""
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    if not layers:
        return
    first = layers[0]
    conv = getattr(first, "conv", None)
    if (
        isinstance(conv, nn.Conv1d)
        and conv.in_channels == 1
        and conv.groups == 1
        and conv.padding in (0, (0,))
        and conv.dilation in (1, (1,))
    ):
        first.conv = StridedMatmulConv1d(conv)


#: Samples of audio laid end to end per conv-extractor group on the direct path.
_CONV_GROUP_SAMPLES = 8 * SAMPLE_RATE

#: Frames of gathered windows per product in the positional conv (at least one utterance).
_POS_CONV_ROWS = 2048

_POST_LN_ENCODERS = frozenset({"HubertEncoder", "Wav2Vec2Encoder"})

_STABLE_ENCODERS = frozenset({"HubertEncoderStableLayerNorm", "Wav2Vec2EncoderStableLayerNorm"})


class DirectPath:
    """The frozen forward pass of one HF HuBERT / wav2vec 2.0 model, done directly.

    ``dtype`` is the compute dtype (float32 or bfloat16); ``int8`` asks for dynamic int8
    transformer linears. ``conv_supported`` / ``upper_supported`` say which parts of this
    architecture the direct path covers (the rest is left to the modules); ``int8`` is
    True only where it is used (the torch build has quantized CPU kernels).
    """

    def __init__(
        self, model: nn.Module, *, dtype: torch.dtype, enabled: bool = True, int8: bool = False
    ) -> None:
        self.model = model
        self.dtype = dtype
        config = model.config
        self._conv = tuple(
            (int(k), int(s)) for k, s in zip(config.conv_kernel, config.conv_stride, strict=True)
        )
        self.hop_length = math.prod(s for _, s in self._conv)
        self.conv_supported = enabled and _fast_conv_supported(model)
        self.upper_supported = enabled and _fast_upper_supported(model)
        self.int8 = self.upper_supported and int8 and _int8_available()
        self.casts = _CastCache()

    def num_frames(self, num_samples: int) -> int:
        """Frames for ``num_samples`` samples (at least the receptive field)."""
        return conv_frames(num_samples, self._conv)

    def conv(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Conv features ``[frames, conv_dim]`` per wave in the compute dtype (direct path).

        Consecutive waves are laid end to end, up to :data:`_CONV_GROUP_SAMPLES` samples
        per group (a longer wave forms a group of its own), and each group runs through
        the extractor at once (:meth:`_conv_group`).
        """
        out: list[torch.Tensor] = []
        start = 0
        while start < len(waves):
            stop, total = start + 1, waves[start].numel()
            while stop < len(waves) and total + waves[stop].numel() <= _CONV_GROUP_SAMPLES:
                total += waves[stop].numel()
                stop += 1
            out += self._conv_group(waves[start:stop])
            start = stop
        return out

    def _conv_group(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Run the conv extractor on waves laid end to end in one time-major sequence.

        Every wave starts at a multiple of the hop, so at every layer its frames start
        at an integer row and each of its output frames depends on its own input frames
        only (the rows between two waves hold values no valid frame reads). The first
        layer and its GroupNorm run per wave, so each wave is normalised over its own
        frames exactly as when it is encoded alone.
        """
        layers = self.model.feature_extractor.conv_layers
        hop = self.hop_length
        bounds: list[tuple[int, int]] = []
        total = 0
        for wave in waves:
            span = -(-wave.numel() // hop) * hop
            bounds.append((total, total + span))
            total += span
        hidden = self.first_conv(waves, bounds)
        for index in range(1, len(layers)):
            hidden = self.conv_layer(index, hidden)
        out = []
        for wave, (start, _) in zip(waves, bounds, strict=True):
            first = start // hop
            out.append(hidden[first : first + self.num_frames(wave.numel())])
        return out

    def first_conv(
        self, waves: Sequence[torch.Tensor], bounds: Sequence[tuple[int, int]]
    ) -> torch.Tensor:
        """First conv + GroupNorm + GELU per wave, at float32 accuracy; ``[rows, C]`` in the
        compute dtype.

        The GroupNorm (one group per channel, statistics over the wave's frames) is
        folded into the convolution: its per-channel mean and variance follow exactly
        from the mean and covariance of the wave's input frames (float64), so one product
        with the folded weights and shift gives the normalised output. In float32 that
        is one product; in bfloat16 it runs as a split bfloat16 product (each float32
        operand as the sum of a high and a low bfloat16 part; the tiny low x low term is
        dropped), accumulated in float32 and rounded once to bfloat16, before the GELU.
        """
        layer = self.model.feature_extractor.conv_layers[0]
        conv, norm = layer.conv, layer.layer_norm
        kernel, stride = conv.kernel_size, conv.stride
        weight = conv.weight[:, 0].double()  # [C, kernel]
        dtype = self.dtype
        hidden = torch.empty(bounds[-1][1] // stride, weight.shape[0], dtype=dtype)
        for wave, (start, stop) in zip(waves, bounds, strict=True):
            frames = wave.unfold(0, kernel, stride)  # [T, kernel], overlapping views
            count = frames.shape[0]
            folded, shift = _fold_group_norm(frames, weight, norm)
            first = start // stride
            target = hidden[first : first + count]
            if dtype == torch.float32:
                torch.addmm(shift, frames, folded, out=target)
            else:
                folded = torch.cat([folded, shift[None]])  # [kernel + 1, C]
                w_high = folded.to(dtype)
                w_low = (folded - w_high.float()).to(dtype)
                high = wave.to(dtype)
                low = (wave - high.float()).to(dtype)
                ones = torch.ones(count, 1, dtype=dtype)
                x_high = high.unfold(0, kernel, stride)[:count]
                x_low = low.unfold(0, kernel, stride)[:count]
                torch.mm(  # x_hi w_hi + s_hi + x_lo w_hi + x_hi w_lo + s_lo
                    torch.cat([x_high, ones, x_low, torch.zeros_like(ones), x_high, ones], dim=1),
                    torch.cat([w_high, w_high, w_low]),
                    out=target,
                )
            hidden[first + count : stop // stride].zero_()
        torch.ops.aten.gelu_(hidden)
        return hidden

    def conv_layer(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """One strided conv + GELU on a time-major ``[rows, C]`` sequence (compute dtype).

        ``out[t] = sum_j hidden[stride * t + j] @ W_j``: the taps are split into blocks of
        at most ``stride`` taps, and each block is a product of a strided view of
        ``hidden`` (row ``t`` = the block's input rows, contiguous in memory) with the
        block's stacked weights, so no input is copied.
        """
        conv = self.model.feature_extractor.conv_layers[index].conv
        kernel, stride = int(conv.kernel_size[0]), int(conv.stride[0])
        blocks, bias = self.casts.get(
            f"conv{index}", (conv.weight, conv.bias), lambda: _tap_blocks(conv, stride, self.dtype)
        )
        hidden = hidden.contiguous()
        rows_in, channels = hidden.shape
        rows = (rows_in - kernel) // stride + 1
        out: torch.Tensor | None = None
        for first_tap, block in blocks:
            view = hidden.as_strided(
                (rows, block.shape[0]),
                (stride * channels, 1),
                hidden.storage_offset() + first_tap * channels,
            )
            if out is None:
                out = torch.mm(view, block) if bias is None else torch.addmm(bias, view, block)
            else:
                out.addmm_(view, block)
        assert out is not None
        torch.ops.aten.gelu_(out)
        return out

    def upper(self, feats: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """What :meth:`_upper` computes, directly: float32 residual stream and LayerNorms,
        matrix products in the compute dtype (transformer layers: optionally int8) with
        weights cast once."""
        model = self.model
        projection = model.feature_projection
        norm = _projection_norm(projection)
        x = feats
        if norm is not None:
            x = _layer_norm(x, norm)
        hidden = self._linear("projection", projection.projection, x)
        mask = None if bool(frame_mask.all()) else frame_mask
        if mask is not None:  # padded frames enter the positional conv as zeros
            hidden = hidden.masked_fill(~mask[..., None], 0.0)
        encoder = model.encoder
        stable = type(encoder).__name__ in _STABLE_ENCODERS
        hidden = hidden.float() + self.pos_conv(hidden)
        attn_mask = None if mask is None else mask[:, None, None, :]
        if not stable:
            hidden = _layer_norm(hidden, encoder.layer_norm)
        states = []
        for index, layer in enumerate(encoder.layers):
            states.append(hidden)
            if stable:
                attended = self._attention(
                    index, layer.attention, _layer_norm(hidden, layer.layer_norm), attn_mask
                )
                hidden = hidden + attended
                hidden = hidden + self._feed_forward(
                    index, layer.feed_forward, _layer_norm(hidden, layer.final_layer_norm)
                )
            else:
                attended = self._attention(index, layer.attention, hidden, attn_mask)
                hidden = _layer_norm(hidden + attended, layer.layer_norm)
                hidden = _layer_norm(
                    hidden + self._feed_forward(index, layer.feed_forward, hidden),
                    layer.final_layer_norm,
                )
        states.append(_layer_norm(hidden, encoder.layer_norm) if stable else hidden)
        return torch.stack(states)

    def _linear(self, key: str, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype
        weight, bias = self.casts.get(
            key,
            (linear.weight, linear.bias),
            lambda: (_cast(linear.weight, dtype), _cast(linear.bias, dtype)),
        )
        return F.linear(x.to(dtype), weight, bias)

    def _attention(
        self,
        index: int,
        attention: nn.Module,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Self-attention with one fused q/k/v product; ``[B, T, D]``."""
        parts = (attention.q_proj, attention.k_proj, attention.v_proj)
        batch, frames, width = x.shape
        heads = int(attention.num_heads)
        qkv = self._layer_linear(f"layer{index}.qkv", parts, x).to(self.dtype)
        query, key, value = qkv.view(batch, frames, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, scale=float(attention.scaling)
        )
        out = out.transpose(1, 2).reshape(batch, frames, width)
        return self._layer_linear(f"layer{index}.out", (attention.out_proj,), out)

    def _feed_forward(self, index: int, ff: nn.Module, x: torch.Tensor) -> torch.Tensor:
        hidden = self._layer_linear(f"layer{index}.ffn_in", (ff.intermediate_dense,), x)
        torch.ops.aten.gelu_(hidden)
        return self._layer_linear(f"layer{index}.ffn_out", (ff.output_dense,), hidden)

    def _layer_linear(
        self, key: str, linears: Sequence[nn.Linear], x: torch.Tensor
    ) -> torch.Tensor:
        """The linear maps ``linears`` (outputs concatenated) of a transformer layer.

        Dynamic int8 when enabled (:func:`_int8_linear`: per-channel int8 weights, each
        frame's activations quantised on their own scale, float32 out), else in the compute
        dtype with pre-cast weights (compute dtype out).
        """
        sources = tuple(m.weight for m in linears) + tuple(m.bias for m in linears)
        if self.int8:
            packed, bias = self.casts.get(key + ".int8", sources, lambda: _pack_int8(linears))
            return _int8_linear(x, packed, bias)
        dtype = self.dtype
        weight, bias = self.casts.get(
            key,
            sources,
            lambda: (
                _cast(torch.cat([m.weight for m in linears]), dtype),
                _cast(torch.cat([m.bias for m in linears]), dtype),
            ),
        )
        return F.linear(x.to(dtype), weight, bias)

    def pos_conv(self, hidden: torch.Tensor) -> torch.Tensor:
        """Positional grouped conv + GELU on ``[B, T, D]`` in the compute dtype (same shape out).

        In bfloat16, each group runs as one product of its input windows with its
        weights: in a group-major, time-major, zero-padded copy of the input, the window of
        output frame ``t`` (``K`` frames of ``C_g`` channels) is one contiguous run of
        memory, so gathering the windows is a block copy; this is faster than the
        grouped convolution with bfloat16 weights. In float32, oneDNN's grouped
        convolution is faster than those products (2.2x on an AVX2 CPU), so it is used,
        with the weight-normed weight computed once.
        """
        conv = self.model.encoder.pos_conv_embed.conv
        kernel, groups, pad = int(conv.kernel_size[0]), int(conv.groups), int(conv.padding[0])
        if self.dtype == torch.float32:
            weight, bias = self.casts.get(
                "pos_conv_fp32",
                _conv_weight_sources(conv),
                lambda: (_cast(conv.weight, torch.float32), _cast(conv.bias, torch.float32)),
            )
            out = F.conv1d(hidden.transpose(1, 2), weight, bias, padding=pad, groups=groups)
            out = out[:, :, : hidden.shape[1]].transpose(1, 2)
            return F.gelu(out)
        blocks, bias = self.casts.get(
            "pos_conv", _conv_weight_sources(conv), lambda: _group_blocks(conv, self.dtype)
        )
        batch, frames, width = hidden.shape
        size = width // groups
        padded = F.pad(hidden, (0, 0, pad, pad))  # [B, T + 2 pad, D]
        # [G, B, T + 2 pad, C_g]
        grouped = padded.view(batch, -1, groups, size).permute(2, 0, 1, 3).contiguous()
        out = torch.empty(groups, batch, frames, size, dtype=self.dtype)
        span = max(1, _POS_CONV_ROWS // frames)  # whole utterances per product, or ...
        steps = min(frames, _POS_CONV_ROWS)  # ... frames of one (very long) utterance
        for g in range(groups):
            for b0 in range(0, batch, span):
                b1 = min(batch, b0 + span)
                for t0 in range(0, frames, steps):
                    t1 = min(frames, t0 + steps)
                    windows = grouped[g].as_strided(
                        (b1 - b0, t1 - t0, kernel * size),
                        (grouped.stride(1), size, 1),
                        grouped[g].storage_offset() + b0 * grouped.stride(1) + t0 * size,
                    )
                    torch.mm(
                        windows.reshape(-1, kernel * size),
                        blocks[g],
                        out=out[g, b0:b1, t0:t1].view(-1, size),
                    )
        result = out.permute(1, 2, 0, 3).reshape(batch, frames, width)
        if bias is not None:
            result += bias
        torch.ops.aten.gelu_(result)
        return result


class _CastCache:
    """Derived copies of weights (casts, re-laid-out blocks, int8 packs), made once.

    Each entry records weak references to its source tensors and their version counters,
    which every in-place update bumps (optimiser steps, ``load_state_dict``, edits under
    ``no_grad``): an entry whose sources changed or were replaced is rebuilt, so
    fine-tuned or reloaded weights are never served stale. Copies of an encoder
    (``copy.deepcopy``, pickling) start with an empty cache.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[tuple[Any, Any], ...], Any]] = {}

    def get(self, key: str, sources: Sequence[torch.Tensor | None], make: Callable[[], Any]) -> Any:
        tensors = [t for t in sources if t is not None]
        entry = self._entries.get(key)
        if (
            entry is not None
            and len(entry[0]) == len(tensors)
            and all(
                ref() is t and version == _version(t)
                for (ref, version), t in zip(entry[0], tensors, strict=True)
            )
        ):
            return entry[1]
        with torch.no_grad():
            value = make()
        self._entries[key] = (tuple((weakref.ref(t), _version(t)) for t in tensors), value)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __deepcopy__(self, memo: dict[int, Any]) -> _CastCache:
        return _CastCache()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._entries = {}


def _version(tensor: torch.Tensor) -> Any:
    try:
        return tensor._version
    except RuntimeError:  # inference tensors have no version counter: never reuse
        return object()


def _cast(tensor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A detached contiguous copy of ``tensor`` in ``dtype`` (a new tensor even when the
    dtype is unchanged, so that re-laid-out weights never alias the masters)."""
    return None if tensor is None else tensor.detach().to(dtype, copy=True).contiguous()


@functools.cache
def _int8_available() -> bool:
    """True if this torch build runs dynamic int8 linear maps on the CPU."""
    try:
        with torch.random.fork_rng(devices=[]):  # leave the global RNG untouched
            probe = nn.Linear(8, 4)
        packed, bias = _pack_int8([probe])
        out = _int8_linear(torch.ones(2, 8), packed, bias)
    except Exception:  # no quantized engine, or the quantized API was removed
        return False
    return tuple(out.shape) == (2, 4) and bool(torch.isfinite(out).all())


def _pack_int8(linears: Sequence[nn.Linear]) -> tuple[Any, torch.Tensor]:
    """The concatenated weights of ``linears`` packed as per-channel symmetric int8
    (without bias), and the concatenated float32 bias."""
    import warnings

    weight = torch.cat([m.weight.detach() for m in linears]).float()
    bias = torch.cat([m.bias.detach() for m in linears]).float()
    scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors are deprecated in recent torch
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(qweight, None), bias


def _int8_linear(x: torch.Tensor, packed: Any, bias: torch.Tensor) -> torch.Tensor:
    """``x @ W.T + bias`` with int8 weights and per-frame int8 activations (float32 out).

    The dynamic int8 kernel quantises its whole input on one range, taken from the
    input's minimum and maximum. Each row is scaled to a largest magnitude of 1 first, and
    one extra row holding -1 and +1 pins the range to [-1, 1] for every call: every row
    is then quantised on its own scale, more finely than on a shared one, and (integer
    products being exact) its result does not depend on the other rows of the batch.
    """
    rows = x.reshape(-1, x.shape[-1]).float()
    count = rows.shape[0]
    # largest magnitude per row (two plain reductions: much faster than an inf-norm here)
    scale = torch.maximum(rows.amax(dim=1, keepdim=True), rows.amin(dim=1, keepdim=True).neg_())
    scale.clamp_min_(1e-30)
    scaled = torch.empty(count + 1, rows.shape[1])
    torch.div(rows, scale, out=scaled[:count])
    scaled[count].zero_()
    scaled[count, 0] = 1.0
    scaled[count, -1] = -1.0
    out = torch.ops.quantized.linear_dynamic(scaled, packed, True)[:count]
    return torch.addcmul(bias, out, scale).view(*x.shape[:-1], -1)


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm`` applied in float32 (float32 output), as autocast runs it."""
    return F.layer_norm(x.float(), norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _fold_group_norm(
    frames: torch.Tensor, weight: torch.Tensor, norm: nn.GroupNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a per-channel GroupNorm over time into a bias-free conv's weights.

    ``frames`` ``[T, k]`` are the conv's input windows, ``weight`` ``[C, k]`` (float64).
    The conv output ``y_t = W x_t`` has channel means ``W mu`` and variances
    ``diag(W S W^T)`` (``mu``, ``S``: mean and covariance of the frames), so the
    normalised output is ``x_t @ folded + shift``. Returns float32 ``folded`` ``[k, C]``
    and ``shift`` ``[C]``. (A conv bias cancels in the normalisation.)
    """
    x = frames.double()
    mean = x.mean(dim=0)
    centred = x - mean
    cov = centred.t() @ centred / max(x.shape[0], 1)
    var = ((weight @ cov) * weight).sum(dim=1).clamp_min(0.0)
    scale = norm.weight.double() / torch.sqrt(var + norm.eps)
    folded = (weight * scale[:, None]).t()
    shift = norm.bias.double() - scale * (weight @ mean)
    return folded.float().contiguous(), shift.float()


def _tap_blocks(
    conv: nn.Conv1d, stride: int, dtype: torch.dtype
) -> tuple[list[tuple[int, torch.Tensor]], torch.Tensor | None]:
    """``([(first_tap, block [taps * C_in, C_out]), ...], bias)`` of a strided conv in
    ``dtype``: its kernel split into blocks of at most ``stride`` consecutive taps."""
    weight = conv.weight.detach()  # [C_out, C_in, K]
    kernel = weight.shape[-1]
    blocks = []
    for first in range(0, kernel, stride):
        part = weight[:, :, first : min(kernel, first + stride)]
        blocks.append((first, _cast(part.permute(2, 1, 0).reshape(-1, weight.shape[0]), dtype)))
    return blocks, _cast(conv.bias, dtype)


def _conv_weight_sources(conv: nn.Conv1d) -> tuple[torch.Tensor | None, ...]:
    """The parameters a (possibly weight-normed) conv's weight is computed from."""
    parametrizations = getattr(conv, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return (*parametrizations.weight.parameters(recurse=False), conv.bias)
    return (conv.weight, conv.bias)


def _group_blocks(
    conv: nn.Conv1d, dtype: torch.dtype
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Per-group weights ``[K * C_g, C_g]`` (in ``dtype``) of a grouped conv, rows ordered
    as a time-major window (tap, channel), and its bias."""
    weight = conv.weight.detach()  # [D, C_g, K] (weight norm applied)
    groups = int(conv.groups)
    size = weight.shape[0] // groups
    blocks = [
        _cast(weight[g * size : (g + 1) * size].permute(2, 1, 0).reshape(-1, size), dtype)
        for g in range(groups)
    ]
    return blocks, _cast(conv.bias, dtype)


def _projection_norm(projection: nn.Module) -> nn.LayerNorm | None:
    """The LayerNorm a feature projection applies before its linear map, if any."""
    if not getattr(projection, "feat_proj_layer_norm", True):  # HuBERT's switch
        return None
    norm = getattr(projection, "layer_norm", None)
    return norm if isinstance(norm, nn.LayerNorm) else None


def _fast_conv_supported(model: nn.Module) -> bool:
    """True if the conv extractor can run on the direct path: GroupNorm first layer
    (one group per channel, rewritten as :class:`StridedMatmulConv1d`), then plain
    unpadded convolutions, all with exact GELU."""
    config = model.config
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    if (
        not layers
        or getattr(config, "feat_extract_norm", None) != "group"
        or getattr(config, "feat_extract_activation", None) != "gelu"
    ):
        return False
    first = layers[0]
    norm = getattr(first, "layer_norm", None)
    if not (
        type(first).__name__.endswith("GroupNormConvLayer")
        and isinstance(getattr(first, "conv", None), StridedMatmulConv1d)
        and isinstance(norm, nn.GroupNorm)
        and norm.affine
        and norm.num_groups == norm.num_channels == first.conv.weight.shape[0]
    ):
        return False
    for layer in layers[1:]:
        conv = getattr(layer, "conv", None)
        if not (
            type(layer).__name__.endswith("NoLayerNormConvLayer")
            and type(conv) is nn.Conv1d
            and conv.groups == 1
            and conv.padding in (0, (0,))
            and conv.dilation == (1,)
        ):
            return False
    return True


def _fast_upper_supported(model: nn.Module) -> bool:
    """True if the upper part can run on the direct path: a HuBERT or wav2vec 2.0
    encoder (post- or pre-LN) with a weight-normed positional conv, standard attention
    and exact GELU (WavLM, adapters and other variants keep autocast)."""
    config = model.config
    encoder = getattr(model, "encoder", None)
    name = type(encoder).__name__
    if name not in _POST_LN_ENCODERS | _STABLE_ENCODERS:
        return False
    if (
        getattr(config, "hidden_act", None) != "gelu"
        or getattr(config, "feat_extract_activation", None) != "gelu"
    ):
        return False
    projection = getattr(model, "feature_projection", None)
    if not isinstance(getattr(projection, "projection", None), nn.Linear):
        return False
    pos = getattr(encoder, "pos_conv_embed", None)
    conv = getattr(pos, "conv", None)
    trim = getattr(getattr(pos, "padding", None), "num_pad_remove", None)
    if (
        not isinstance(conv, nn.Conv1d)
        or getattr(pos, "batch_norm", None) is not None
        or hasattr(conv, "weight_g")  # legacy weight_norm hook: weight set in forward
        or trim is None
        or conv.stride != (1,)
        or conv.dilation != (1,)
        or conv.in_channels != conv.out_channels
        or 2 * int(conv.padding[0]) - int(conv.kernel_size[0]) + 1 != int(trim)
    ):
        return False
    layer_name = name.replace("Encoder", "EncoderLayer")
    for layer in encoder.layers:
        attention = getattr(layer, "attention", None)
        ff = getattr(layer, "feed_forward", None)
        linears = [getattr(attention, n, None) for n in ("q_proj", "k_proj", "v_proj", "out_proj")]
        linears += [getattr(ff, n, None) for n in ("intermediate_dense", "output_dense")]
        if (
            type(layer).__name__ != layer_name
            or getattr(layer, "adapter_layer", None) is not None
            or getattr(attention, "is_causal", False)
            or not all(isinstance(m, nn.Linear) and m.bias is not None for m in linears)
            or not hasattr(attention, "scaling")
            or not hasattr(attention, "num_heads")
        ):
            return False
    return True
