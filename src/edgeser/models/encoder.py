"""The speech encoder: DistilHuBERT (and its SSL family) as a frozen feature extractor.

:func:`load_encoder` takes one ``source`` string and returns an :class:`Encoder`:

- ``"random"``: the exact DistilHuBERT architecture (:func:`distilhubert_config`) with a
  seeded random initialisation, for tests and dry runs only (a loud warning says so);
  ``"random:<alias>"`` does the same for another architecture of :data:`ALIASES`
  (``random:wav2vec2-base``: wav2vec 2.0 Base as ``Wav2Vec2Config()`` defines it, ~95 M
  parameters), so size and speed comparisons run offline;
- a short alias (:data:`ALIASES`) or a Hugging Face hub id such as
  ``ntu-spml/distilhubert``, fetched with ``AutoModel.from_pretrained`` (needs the network
  or the local hub cache; ``HF_HUB_OFFLINE=1`` makes the miss fail fast);
- a local Hugging Face model folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``); HuBERT, wav2vec 2.0 and WavLM folders all load this way;
- the original s3prl DistilHuBERT checkpoint (a torch pickle ``.ckpt`` with ``"Config"``
  and ``"Distiller"`` entries), converted to a ``transformers`` ``HubertModel``.

The :class:`Encoder` maps 16 kHz mono float waveforms to all hidden states
(``[num_hidden_states, frames, hidden]``, 49 frames per second). It is frozen by default;
:meth:`Encoder.unfreeze_upper` makes the projection, positional convolution and
transformer trainable over the frozen convolutional feature extractor, using the split
API :meth:`Encoder.conv_features` + :meth:`Encoder.forward_from_conv`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgeser.core.errors import EdgeserError

if TYPE_CHECKING:
    from transformers import HubertConfig, PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = [
    "ALIASES",
    "DISTILHUBERT_CONV_SPEC",
    "DISTILHUBERT_HUB_ID",
    "DISTILHUBERT_NUM_PARAMETERS",
    "PRECISIONS",
    "SAMPLE_RATE",
    "Encoder",
    "distilhubert_config",
    "load_encoder",
    "parse_conv_spec",
    "random_architecture",
    "random_encoder",
    "s3prl_to_hf_state_dict",
    "tiny_config",
]

SAMPLE_RATE = 16_000
DISTILHUBERT_HUB_ID = "ntu-spml/distilhubert"
#: Parameters of ``HubertModel(distilhubert_config())`` (incl. the 768-d mask embedding).
DISTILHUBERT_NUM_PARAMETERS = 23_491_968
DISTILHUBERT_CONV_SPEC = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

#: Short names accepted by :func:`load_encoder`.
ALIASES: dict[str, str] = {
    "distilhubert": DISTILHUBERT_HUB_ID,
    "hubert-base": "facebook/hubert-base-ls960",
    "wav2vec2-base": "facebook/wav2vec2-base",
    "wavlm-base-plus": "microsoft/wavlm-base-plus",
}

# Training-only parameter (SpecAugment mask embedding): never used on the feature path, so
# it may be absent from a checkpoint (s3prl's distiller has none) and is left out of
# ``Encoder.identity``.
_OPTIONAL_KEYS = frozenset({"masked_spec_embed"})

# Config entries that do not change what the encoder computes at inference (file and
# library metadata, training-only settings); left out of ``Encoder.identity`` so that the
# same weights reached through different sources (hub folder, s3prl .ckpt) share caches.
_VOLATILE_CONFIG_KEYS = frozenset(
    {
        "apply_spec_augment",
        "chunk_size_feed_forward",
        "classifier_proj_size",
        "id2label",
        "initializer_range",
        "is_encoder_decoder",
        "label2id",
        "problem_type",
        "use_weighted_layer_sum",
        "vocab_size",
        "transformers_version",
        "_name_or_path",
        "name_or_path",
        "_commit_hash",
        "architectures",
        "dtype",
        "torch_dtype",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "attn_implementation",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "use_return_dict",
        "layerdrop",
    }
)


# --------------------------------------------------------------------------- configs


def distilhubert_config(**overrides: Any) -> HubertConfig:
    """The exact DistilHuBERT architecture as a ``transformers.HubertConfig``.

    7 conv layers of 512 channels, kernels (10,3,3,3,3,2,2), strides (5,2,2,2,2,2,2), no
    conv bias, GroupNorm on the first layer only, GELU (a 400-sample receptive field and a
    320-sample hop: 49 frames per second); projection 512→768 without a LayerNorm before
    it; convolutional positional embedding (kernel 128, 16 groups, weight norm); 2 post-LN
    transformer layers, 768 wide, 12 heads, FFN 3072, GELU. ``HubertModel`` of it has
    :data:`DISTILHUBERT_NUM_PARAMETERS` parameters. Its feature extractor uses
    ``do_normalize=False``: the waveform is not standardised per utterance.
    ``overrides`` replace individual fields (used for s3prl checkpoints and tiny tests).
    """
    from transformers import HubertConfig

    fields: dict[str, Any] = {
        "vocab_size": 32,
        "hidden_size": 768,
        "num_hidden_layers": 2,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout": 0.1,
        "activation_dropout": 0.1,
        "attention_dropout": 0.1,
        "feat_proj_layer_norm": False,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
        "layerdrop": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "feat_extract_norm": "group",
        "feat_extract_activation": "gelu",
        "conv_dim": (512,) * 7,
        "conv_stride": (5, 2, 2, 2, 2, 2, 2),
        "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
        "conv_bias": False,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
        "do_stable_layer_norm": False,
        "apply_spec_augment": False,
        "mask_time_prob": 0.05,
        "architectures": ["HubertModel"],
    }
    fields.update(overrides)
    return HubertConfig(**fields)


def tiny_config(**overrides: Any) -> HubertConfig:
    """A tiny DistilHuBERT-shaped config for fast tests (2 conv layers, width 32, 1 layer).

    Receptive field 20 samples, hop 10 samples.
    """
    fields: dict[str, Any] = {
        "conv_dim": (32, 32),
        "conv_kernel": (10, 3),
        "conv_stride": (5, 2),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    }
    fields.update(overrides)
    return distilhubert_config(**fields)


# ------------------------------------------------------------------ conv-spec parser

_MAX_SPEC_CHARS = 2_000
_MAX_CONV_LAYERS = 64
_MAX_SPEC_INT = 1 << 20


def parse_conv_spec(spec: str) -> list[tuple[int, int, int]]:
    """Parse an s3prl/fairseq conv spec such as ``"[(512,10,5)] + [(512,3,2)] * 4"``.

    Returns ``[(channels, kernel, stride), ...]``. Only list/tuple literals of
    non-negative integers, ``+`` (concatenation) and ``*`` (repetition by an integer) are
    allowed; the string is parsed with :mod:`ast` and never evaluated, so names, calls,
    attributes and any other syntax are refused with :class:`EdgeserError`.
    """
    if not isinstance(spec, str):
        raise EdgeserError(f"conv spec must be a string, got {type(spec).__name__}")
    if len(spec) > _MAX_SPEC_CHARS:
        raise EdgeserError(f"conv spec is too long ({len(spec)} characters)")
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as exc:
        raise EdgeserError(f"conv spec {spec!r} is not a valid expression: {exc.msg}") from exc
    value = _eval_spec_node(tree.body, spec)
    if not isinstance(value, list | tuple) or not value:
        raise EdgeserError(f"conv spec {spec!r} must be a non-empty list of (dim, kernel, stride)")
    layers: list[tuple[int, int, int]] = []
    for item in value:
        if (
            not isinstance(item, tuple | list)
            or len(item) != 3
            or not all(isinstance(v, int) and v > 0 for v in item)
        ):
            raise EdgeserError(
                f"conv spec {spec!r}: each layer must be (dim, kernel, stride) of positive "
                f"integers, got {item!r}"
            )
        layers.append((int(item[0]), int(item[1]), int(item[2])))
    return layers


def _eval_spec_node(node: ast.AST, spec: str) -> Any:
    """Evaluate one node of a conv spec: int/list/tuple literals, ``+`` and ``*`` only."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise EdgeserError(f"conv spec {spec!r}: only integer constants are allowed")
        if not 0 <= value <= _MAX_SPEC_INT:
            raise EdgeserError(f"conv spec {spec!r}: integer {value} out of range")
        return value
    if isinstance(node, ast.List | ast.Tuple):
        if len(node.elts) > _MAX_CONV_LAYERS:
            raise EdgeserError(f"conv spec {spec!r}: literal too long")
        items = [_eval_spec_node(elt, spec) for elt in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
        left = _eval_spec_node(node.left, spec)
        right = _eval_spec_node(node.right, spec)
        if isinstance(node.op, ast.Add):
            if isinstance(left, list) and isinstance(right, list):
                result: Any = left + right
            elif isinstance(left, tuple) and isinstance(right, tuple):
                result = left + right
            else:
                raise EdgeserError(f"conv spec {spec!r}: '+' joins two lists (or two tuples)")
        else:
            if isinstance(left, list | tuple) and isinstance(right, int):
                seq, count = left, right
            elif isinstance(right, list | tuple) and isinstance(left, int):
                seq, count = right, left
            else:
                raise EdgeserError(f"conv spec {spec!r}: '*' repeats a list by an integer")
            if count > _MAX_CONV_LAYERS:
                raise EdgeserError(f"conv spec {spec!r}: repetition {count} is too large")
            result = seq * count
        if len(result) > _MAX_CONV_LAYERS:
            raise EdgeserError(f"conv spec {spec!r}: more than {_MAX_CONV_LAYERS} layers")
        return result
    raise EdgeserError(
        f"conv spec {spec!r}: unsupported syntax ({type(node).__name__}); only list/tuple "
        "literals of integers, '+' and '*' are allowed"
    )


# ------------------------------------------------------------------------- Encoder


class Encoder(nn.Module):
    """A frozen SSL speech encoder returning all hidden states of 16 kHz mono audio.

    Wraps a ``transformers`` HuBERT / wav2vec 2.0 / WavLM base model. Attributes:
    ``num_layers`` (transformer layers), ``hidden_size``, ``num_hidden_states``
    (``num_layers + 1``: the transformer input after the positional convolution and
    LayerNorm, then each layer's output, as HF ``output_hidden_states``), ``identity``
    (a short sha256 over weights, config and precision, computed once at construction, for
    feature caches), ``source``, ``is_random``, ``precision`` (``"fp32"`` or ``"bf16"``),
    ``do_normalize`` (per-utterance standardisation from the checkpoint's preprocessor
    config; False for DistilHuBERT), ``hop_length`` (320) and ``min_samples`` (the
    receptive field, 400).

    Inputs shorter than ``min_samples`` are zero-padded to it, so empty or very short
    input yields one frame instead of an error.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        source: str,
        is_random: bool = False,
        precision: str = "fp32",
        do_normalize: bool = False,
        batch_size: int = 8,
    ) -> None:
        super().__init__()
        _check_family(model)
        _check_precision(precision)
        if batch_size < 1:
            raise EdgeserError(f"batch_size must be >= 1, got {batch_size}")
        model.config.layerdrop = 0.0  # every layer must run: hidden states are features
        self.model = model.float()
        self.source = str(source)
        self.is_random = bool(is_random)
        self.precision = precision
        self.do_normalize = bool(do_normalize)
        self.batch_size = int(batch_size)
        config = model.config
        self.num_layers = len(model.encoder.layers)
        self.hidden_size = int(config.hidden_size)
        self.num_hidden_states = self.num_layers + 1
        self.conv_dim = int(config.conv_dim[-1])
        self._conv = tuple(
            (int(k), int(s)) for k, s in zip(config.conv_kernel, config.conv_stride, strict=True)
        )
        self.hop_length = math.prod(s for _, s in self._conv)
        receptive = 1
        for kernel, stride in reversed(self._conv):
            receptive = (receptive - 1) * stride + kernel
        self.min_samples = receptive
        self._upper_trainable = False
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.train(False)
        self.identity = _fingerprint(self.model, precision)
        _use_strided_matmul_first_conv(self.model)

    # ------------------------------------------------------------------ state

    def extra_repr(self) -> str:
        return (
            f"source={self.source!r}, layers={self.num_layers}, hidden={self.hidden_size}, "
            f"precision={self.precision}, random={self.is_random}, identity={self.identity}"
        )

    @property
    def upper_trainable(self) -> bool:
        """True after :meth:`unfreeze_upper` (until :meth:`freeze`)."""
        return self._upper_trainable

    def unfreeze_upper(self) -> Encoder:
        """Make projection, positional conv and transformer trainable; conv stays frozen."""
        for name, param in self.model.named_parameters():
            if name.startswith("feature_extractor.") or name in _OPTIONAL_KEYS:
                continue
            param.requires_grad_(True)
        self._upper_trainable = True
        self.train(self.training)
        return self

    def freeze(self) -> Encoder:
        """Freeze every parameter again (the default state)."""
        for param in self.model.parameters():
            param.requires_grad_(False)
        self._upper_trainable = False
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> Encoder:
        """Training mode reaches the wrapped model only when its upper part is trainable.

        A frozen encoder stays in eval mode (no dropout) whatever its parent does; the
        conv feature extractor is always in eval mode.
        """
        super().train(mode)
        if not (mode and self._upper_trainable):
            self.model.eval()
        self.model.feature_extractor.eval()
        return self

    # ------------------------------------------------------------------ frames

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (after padding to ``min_samples``).

        ``num_frames(16000) == 49`` for DistilHuBERT; 0 or 1 sample gives 1 frame.
        """
        if num_samples < 0:
            raise EdgeserError(f"num_samples must be >= 0, got {num_samples}")
        n = max(int(num_samples), self.min_samples)
        for kernel, stride in self._conv:
            n = (n - kernel) // stride + 1
        return n

    # ------------------------------------------------------------------ inference

    def encode(
        self, waves: Sequence[np.ndarray | torch.Tensor], *, batch_size: int | None = None
    ) -> list[torch.Tensor]:
        """Encode 16 kHz mono float waveforms of any lengths.

        Returns one float32 tensor ``[num_hidden_states, frames_i, hidden]`` per input, in
        input order, with ``frames_i == num_frames(len(wave_i))``. Inputs are sorted by
        length and batched; the conv extractor (GroupNorm over time) runs per group of
        equal lengths and the upper part on the padded batch with an attention mask, so
        every output equals encoding that input alone. Never tracks gradients and always
        runs in eval mode (no dropout), even while the upper part is being fine-tuned.
        """
        prepared = [self._prepare(wave, index=i) for i, wave in enumerate(waves)]
        size = int(batch_size or self.batch_size)
        if size < 1:
            raise EdgeserError(f"batch_size must be >= 1, got {size}")
        order = sorted(range(len(prepared)), key=lambda i: prepared[i].numel())
        results: list[torch.Tensor | None] = [None] * len(prepared)
        with self._eval_mode():
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                with torch.inference_mode():
                    feats = self._conv_batch([prepared[i] for i in chunk])
                    padded, mask = _pad_frames(feats)
                    states = self._upper(padded, mask)
                # Cloning outside inference mode gives ordinary tensors autograd accepts.
                for j, i in enumerate(chunk):
                    results[i] = states[:, j, : feats[j].shape[0]].clone()
        return [r for r in results if r is not None]

    def conv_features(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frozen conv-extractor output ``[frames, conv_dim]`` (float32) of one waveform."""
        prepared = self._prepare(wave, index=0)
        with torch.inference_mode():
            feats = self._conv_batch([prepared])[0]
        return feats.clone()

    def forward_from_conv(
        self, feats: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run projection, positional conv and transformer on padded conv features.

        ``feats`` is ``[B, frames, conv_dim]``, ``frame_mask`` ``[B, frames]`` bool (True
        for valid frames; None means all valid). Returns float32
        ``[num_hidden_states, B, frames, hidden]``; padded frames hold unspecified values.
        Tracks gradients after :meth:`unfreeze_upper` (if grad mode is on), otherwise runs
        under ``torch.inference_mode``.
        """
        if feats.ndim != 3 or feats.shape[-1] != self.conv_dim:
            raise EdgeserError(
                f"conv features must be [B, frames, {self.conv_dim}], got {tuple(feats.shape)}"
            )
        if frame_mask is None:
            frame_mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        if frame_mask.shape != feats.shape[:2]:
            raise EdgeserError(
                f"frame_mask shape {tuple(frame_mask.shape)} does not match features "
                f"{tuple(feats.shape[:2])}"
            )
        frame_mask = frame_mask.to(torch.bool)
        if self._upper_trainable:
            return self._upper(feats.float(), frame_mask)
        with torch.inference_mode():
            states = self._upper(feats.float(), frame_mask)
        return states.clone()

    def forward(self, feats: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Same as :meth:`forward_from_conv` (the differentiable path)."""
        return self.forward_from_conv(feats, frame_mask)

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Put the wrapped model in eval mode for the block, then restore the mode."""
        was_training = self.training
        self.train(False)
        try:
            yield
        finally:
            self.train(was_training)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _prepare(self, wave: np.ndarray | torch.Tensor, *, index: int) -> torch.Tensor:
        """Validate one waveform; standardise if configured; zero-pad to ``min_samples``."""
        if isinstance(wave, torch.Tensor):
            tensor = wave.detach().cpu()
        else:
            array = np.asarray(wave)
            if not np.issubdtype(array.dtype, np.floating):
                raise EdgeserError(
                    f"waveform {index}: expected float samples in [-1, 1], got dtype {array.dtype}"
                )
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        if not tensor.is_floating_point():
            raise EdgeserError(
                f"waveform {index}: expected float samples in [-1, 1], got dtype {tensor.dtype}"
            )
        if tensor.ndim != 1:
            raise EdgeserError(
                f"waveform {index}: expected a mono 1-D waveform, got shape {tuple(tensor.shape)}"
            )
        tensor = tensor.to(torch.float32)
        if tensor.numel() and not torch.isfinite(tensor).all():
            raise EdgeserError(f"waveform {index}: contains NaN or infinite samples")
        if self.do_normalize and tensor.numel():
            tensor = (tensor - tensor.mean()) / torch.sqrt(tensor.var(unbiased=False) + 1e-7)
        if tensor.numel() < self.min_samples:
            tensor = torch.nn.functional.pad(tensor, (0, self.min_samples - tensor.numel()))
        return tensor

    def _conv_batch(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Conv features ``[frames, conv_dim]`` float32 per wave, grouped by equal length."""
        out: list[torch.Tensor | None] = [None] * len(waves)
        groups: dict[int, list[int]] = {}
        for i, wave in enumerate(waves):
            groups.setdefault(wave.numel(), []).append(i)
        extractor = self.model.feature_extractor
        for indices in groups.values():
            batch = torch.stack([waves[i] for i in indices])
            with torch.no_grad(), self._autocast():
                feats = extractor(batch).transpose(1, 2).float()
            for j, i in enumerate(indices):
                out[i] = feats[j]
        return [f for f in out if f is not None]

    def _upper(self, feats: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Projection + encoder with hidden states collected by hooks on the layers."""
        model = self.model
        layers = model.encoder.layers
        states: list[torch.Tensor] = []

        def take_input(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            states.append(args[0] if args else kwargs["hidden_states"])

        def take_output(_module: nn.Module, _args: tuple, output: Any) -> None:
            states.append(output[0] if isinstance(output, tuple | list) else output)

        handles = [layers[0].register_forward_pre_hook(take_input, with_kwargs=True)]
        handles += [layer.register_forward_hook(take_output) for layer in layers]
        try:
            with self._autocast():
                hidden = model.feature_projection(feats)
                if isinstance(hidden, tuple):  # wav2vec 2.0 / WavLM also return normed feats
                    hidden = hidden[0]
                mask = None if bool(frame_mask.all()) else frame_mask
                output = model.encoder(hidden, attention_mask=mask)
        finally:
            for handle in handles:
                handle.remove()
        if len(states) != self.num_hidden_states:
            raise RuntimeError(
                f"collected {len(states)} hidden states, expected {self.num_hidden_states}"
            )
        # The last state is the encoder output: identical to the last layer's output for
        # post-LN models, and after the final LayerNorm for pre-LN ("stable") ones.
        states[-1] = output[0]
        return torch.stack([s.float() for s in states])


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


def _use_strided_matmul_first_conv(model: nn.Module) -> None:
    """Swap the feature extractor's first conv for :class:`StridedMatmulConv1d` in place."""
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    if not layers:
        return
    first = layers[0]
    conv = getattr(first, "conv", None)
    if isinstance(conv, nn.Conv1d) and conv.in_channels == 1 and conv.groups == 1 \
            and conv.padding in (0, (0,)) and conv.dilation in (1, (1,)):
        first.conv = StridedMatmulConv1d(conv)


def _pad_frames(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``[frames_i, C]`` tensors to ``[B, T, C]`` with a ``[B, T]`` valid mask."""
    lengths = torch.tensor([f.shape[0] for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence(list(feats), batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise EdgeserError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def _check_family(model: Any) -> None:
    """Refuse models that lack the HuBERT / wav2vec 2.0 / WavLM structure the code relies on."""
    config = getattr(model, "config", None)
    encoder = getattr(model, "encoder", None)
    ok = (
        config is not None
        and all(hasattr(config, a) for a in ("conv_dim", "conv_kernel", "conv_stride"))
        and hasattr(model, "feature_extractor")
        and hasattr(model, "feature_projection")
        and isinstance(getattr(encoder, "layers", None), nn.ModuleList)
        and len(encoder.layers) > 0
    )
    if not ok:
        raise EdgeserError(
            f"unsupported encoder {type(model).__name__}: expected a HuBERT, wav2vec 2.0 or "
            "WavLM style model (conv feature extractor + transformer encoder)"
        )
    if getattr(config, "add_adapter", False):
        raise EdgeserError(f"unsupported encoder {type(model).__name__}: adapter layers")


def _fingerprint(model: nn.Module, precision: str) -> str:
    """Short sha256 over the config JSON (inference-relevant keys), precision and weights."""
    digest = hashlib.sha256()
    config = {
        k: v
        for k, v in model.config.to_dict().items()
        if k not in _VOLATILE_CONFIG_KEYS
        and not any(part in k for part in ("dropout", "mask_", "ctc_", "token_id"))
    }
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"precision={precision}".encode())
    for key, tensor in sorted(model.state_dict().items()):
        if key in _OPTIONAL_KEYS:
            continue
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------- loading


def load_encoder(
    source: str,
    *,
    seed: int = 0,
    precision: str = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Encoder:
    """Load a frozen encoder from ``source`` (see the module docstring for the forms).

    ``seed`` only matters for ``"random"``; ``precision`` is ``"fp32"`` or ``"bf16"``
    (CPU autocast, float32 outputs); ``cache_dir`` is the Hugging Face cache for hub ids.
    Raises :class:`EdgeserError` for anything a user can fix (wrong path, unreachable hub
    id, a checkpoint of another architecture).
    """
    _check_precision(precision)
    text = str(source).strip()
    if not text:
        raise EdgeserError("encoder source is empty")
    if text.lower() == "random":
        return random_encoder(seed=seed, precision=precision)
    if text.lower().startswith("random:"):
        arch = text.split(":", 1)[1].strip().lower()
        config, do_normalize = random_architecture(arch)
        return random_encoder(config, seed=seed, precision=precision, source=f"random:{arch}",
                              do_normalize=do_normalize)
    resolved = text
    path = Path(text).expanduser()
    if not path.exists() and text.lower() in ALIASES:  # an existing path wins over an alias
        resolved = ALIASES[text.lower()]
        path = Path(resolved)
    if path.exists():  # local sources are recorded as absolute paths (runs reload them)
        path = path.resolve()
    if path.is_dir():
        model, do_normalize = _load_pretrained(str(path), local=True, cache_dir=None)
        return Encoder(model, source=str(path), precision=precision, do_normalize=do_normalize)
    if path.is_file():
        if path.suffix in {".safetensors", ".json"} or path.name == "pytorch_model.bin":
            raise EdgeserError(
                f"{path}: pass the Hugging Face model folder that holds this file, not the file"
            )
        model = _load_s3prl_checkpoint(path)
        return Encoder(model, source=str(path), precision=precision)
    if _HUB_ID.match(resolved) and path.suffix not in _CHECKPOINT_SUFFIXES:
        model, do_normalize = _load_pretrained(resolved, local=False, cache_dir=cache_dir)
        return Encoder(model, source=resolved, precision=precision, do_normalize=do_normalize)
    raise EdgeserError(
        f"encoder source {text!r}: no such file or folder, and not a hub id (owner/name); "
        f"use 'random', one of {', '.join(sorted(ALIASES))}, a hub id, a local Hugging Face "
        "model folder or an s3prl DistilHuBERT .ckpt"
    )


#: ``random:<alias>`` architectures: the transformers config defaults of each family are
#: the Base models; ``do_normalize`` is the released checkpoint's preprocessor setting.
_RANDOM_ARCHS: dict[str, tuple[str, bool]] = {
    "distilhubert": ("distilhubert", False),
    "hubert-base": ("HubertConfig", False),
    "wav2vec2-base": ("Wav2Vec2Config", True),
    "wavlm-base-plus": ("WavLMConfig", False),
}


def random_architecture(arch: str) -> tuple[Any, bool]:
    """``(config, do_normalize)`` of a named architecture for ``random:<arch>``."""
    if arch not in _RANDOM_ARCHS:
        raise EdgeserError(
            f"unknown architecture {arch!r} in 'random:{arch}'; use one of "
            f"{', '.join(sorted(_RANDOM_ARCHS))}"
        )
    name, do_normalize = _RANDOM_ARCHS[arch]
    if name == "distilhubert":
        return distilhubert_config(), do_normalize
    import transformers

    config = getattr(transformers, name)()
    config.apply_spec_augment = False
    return config, do_normalize


def random_encoder(
    config: Any | None = None, *, seed: int = 0, precision: str = "fp32",
    source: str = "random", do_normalize: bool = False,
) -> Encoder:
    """A randomly initialised encoder (default: exact DistilHuBERT architecture).

    Seeded and reproducible; the global torch RNG is left untouched. For tests and dry
    runs: its features carry no information about emotion.
    """
    from transformers import AutoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config if config is not None else distilhubert_config())
    logger.warning(
        "RANDOM ENCODER WEIGHTS (seed %d): this encoder was NOT pretrained; its features are "
        "meaningless for emotion recognition. Use it only for tests and dry runs; pass a hub "
        "id, a model folder or an s3prl .ckpt for real results.",
        seed,
    )
    return Encoder(model, source=source, is_random=True, precision=precision,
                   do_normalize=do_normalize)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_CHECKPOINT_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".pkl"})


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_offline() -> bool:
    if _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a transformers dependency
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _load_pretrained(
    source: str, *, local: bool, cache_dir: str | os.PathLike[str] | None
) -> tuple[PreTrainedModel, bool]:
    """Load a HF model folder or hub id with AutoConfig/AutoModel; return (model, do_normalize)."""
    from transformers import AutoConfig, AutoModel

    options: dict[str, Any] = {"local_files_only": local or _hub_offline()}
    if cache_dir is not None and not local:
        options["cache_dir"] = str(cache_dir)
    if local and not (Path(source) / "config.json").is_file():
        raise EdgeserError(f"{source}: not a Hugging Face model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except (OSError, ValueError, KeyError) as exc:
        if local:
            raise EdgeserError(f"{source}: unreadable model config: {_first_line(exc)}") from exc
        raise EdgeserError(
            f"could not fetch {source!r} from the Hugging Face hub (offline, not in the local "
            f"cache, or not a model id): {_first_line(exc)}. Download it where there is "
            f"internet (e.g. `hf download {source} --local-dir DIR`) and pass the folder, or "
            "pass the original s3prl DistilHuBERT .ckpt"
        ) from exc
    config.layerdrop = 0.0
    try:
        model, info = AutoModel.from_pretrained(
            source, config=config, dtype=torch.float32, output_loading_info=True, **options
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        where = source if local else f"hub model {source!r}"
        raise EdgeserError(
            f"{where}: weights do not load into {type(config).__name__}: {_first_line(exc)}"
        ) from exc
    _check_family(model)
    missing = sorted(set(info.get("missing_keys", ())) - _OPTIONAL_KEYS)
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise EdgeserError(
            f"{source}: weights do not match the architecture in its config.json "
            + _describe_keys(missing=missing, mismatched=mismatched)
        )
    if "masked_spec_embed" in set(info.get("missing_keys", ())):
        _zero_optional(model)
    unexpected = sorted(info.get("unexpected_keys", ()))
    if unexpected:
        logger.info(
            "%s: ignoring %d unused weights (e.g. %s)", source, len(unexpected), unexpected[0]
        )
    model.eval()
    logger.info("loaded %s (%s) from %s", type(model).__name__, config.model_type, source)
    return model, _read_do_normalize(source, options)


def _read_do_normalize(source: str, options: dict[str, Any]) -> bool:
    """``do_normalize`` of the model's feature extractor; False when it has no such file."""
    from transformers import AutoFeatureExtractor

    try:
        extractor = AutoFeatureExtractor.from_pretrained(source, **options)
    except (OSError, ValueError, KeyError):
        logger.info("%s: no feature-extractor config; assuming do_normalize=False", source)
        return False
    return bool(getattr(extractor, "do_normalize", False))


def _zero_optional(model: nn.Module) -> None:
    """Give parameters a checkpoint may lack (the mask embedding) a deterministic value."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in _OPTIONAL_KEYS:
                param.zero_()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _describe_keys(
    *,
    missing: Sequence[str] = (),
    unexpected: Sequence[str] = (),
    mismatched: Sequence[str] = (),
    limit: int = 5,
) -> str:
    parts = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch", mismatched),
    ):
        if keys:
            shown = ", ".join(keys[:limit]) + (
                f", ... ({len(keys)} in all)" if len(keys) > limit else ""
            )
            parts.append(f"{label}: {shown}")
    return "(" + "; ".join(parts) + ")"


# ------------------------------------------------------------------ s3prl checkpoints


def _load_pickle(path: Path) -> Any:
    """``torch.load`` a file the user named: weights-only first, full unpickling as fallback.

    The fallback runs only when the weights-only loader refuses a Python global it does not
    know (e.g. a training-script class stored in the checkpoint); it is logged as a warning
    naming the file, since full unpickling can run code from the file.
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if match is None:
            raise EdgeserError(f"{path}: not a readable torch checkpoint") from exc
        logger.warning(
            "%s: holds Python objects beyond tensors and plain containers (%s); loading it "
            "with full unpickling (weights_only=False). Only do this with files you trust.",
            path,
            match.group(1),
        )
    except Exception as exc:  # a corrupt or foreign file fails in many ways
        raise EdgeserError(f"{path}: not a readable torch checkpoint: {_first_line(exc)}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling can fail in arbitrary ways
        raise EdgeserError(f"{path}: could not unpickle: {_first_line(exc)}") from exc


_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new", "tanh": "tanh"}


def _config_from_distiller(cfg: Mapping[str, Any], path: Path) -> HubertConfig:
    """A ``HubertConfig`` from an s3prl ``Config["distiller"]`` dict (s3prl's defaults)."""
    spec = cfg.get("extractor_conv_feature_layers", cfg.get("conv_feature_layers"))
    layers = parse_conv_spec(str(spec) if spec is not None else DISTILHUBERT_CONV_SPEC)
    mode = str(cfg.get("extractor_mode", "default"))
    if mode not in {"default", "layer_norm"}:
        raise EdgeserError(f"{path}: unsupported extractor_mode {mode!r}")
    attention = str(cfg.get("attention_type", "original"))
    if attention != "original":
        raise EdgeserError(f"{path}: unsupported attention_type {attention!r}")
    activation = str(cfg.get("activation_fn", "gelu"))
    if activation not in _ACTIVATIONS:
        raise EdgeserError(f"{path}: unsupported activation_fn {activation!r}")
    try:
        fields: dict[str, Any] = {
            "conv_dim": tuple(c for c, _, _ in layers),
            "conv_kernel": tuple(k for _, k, _ in layers),
            "conv_stride": tuple(s for _, _, s in layers),
            "feat_extract_norm": "layer" if mode == "layer_norm" else "group",
            "hidden_size": int(cfg.get("encoder_embed_dim", 768)),
            "num_hidden_layers": int(cfg.get("encoder_layers", 1)),
            "intermediate_size": int(cfg.get("encoder_ffn_embed_dim", 3072)),
            "num_attention_heads": int(cfg.get("encoder_attention_heads", 12)),
            "num_conv_pos_embeddings": int(cfg.get("conv_pos", 128)),
            "num_conv_pos_embedding_groups": int(cfg.get("conv_pos_groups", 16)),
            "hidden_act": _ACTIVATIONS[activation],
            "do_stable_layer_norm": bool(cfg.get("layer_norm_first", False)),
            "hidden_dropout": float(cfg.get("dropout", 0.1)),
            "attention_dropout": float(cfg.get("attention_dropout", 0.1)),
            "activation_dropout": float(cfg.get("activation_dropout", 0.1)),
        }
    except (TypeError, ValueError) as exc:
        raise EdgeserError(f"{path}: malformed distiller config: {exc}") from exc
    hidden, heads = fields["hidden_size"], fields["num_attention_heads"]
    groups = fields["num_conv_pos_embedding_groups"]
    if fields["num_hidden_layers"] < 1 or hidden < 1 or heads < 1 or groups < 1:
        raise EdgeserError(f"{path}: the distiller config describes no transformer encoder")
    if hidden % heads or hidden % groups:
        raise EdgeserError(
            f"{path}: encoder_embed_dim {hidden} is not divisible by its {heads} heads and "
            f"{groups} positional-conv groups"
        )
    return distilhubert_config(**fields)


_S3PRL_LAYER_PARTS = {
    "self_attn.q_proj": "attention.q_proj",
    "self_attn.k_proj": "attention.k_proj",
    "self_attn.v_proj": "attention.v_proj",
    "self_attn.out_proj": "attention.out_proj",
    "self_attn_layer_norm": "layer_norm",
    "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense",
    "final_layer_norm": "final_layer_norm",
}
_S3PRL_LAYER = re.compile(
    r"^encoder\.layers\.(\d+)\.(" + "|".join(re.escape(p) for p in _S3PRL_LAYER_PARTS) + r")\.(.+)$"
)
_S3PRL_CONV = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(0|2|2\.1)\.(weight|bias)$")
_WEIGHT_NORM_NAMES = {
    "weight_g": "weight_g",
    "weight_v": "weight_v",
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


def _s3prl_key(key: str) -> str | None:
    """The HF ``HubertModel`` name of one s3prl distiller key; None for prediction heads.

    Unknown keys come back unchanged (and are then reported as unexpected).
    """
    if key.startswith("output_layer."):
        return None
    if key == "mask_emb":
        return "masked_spec_embed"
    if key.startswith("post_extract_proj."):
        return "feature_projection.projection." + key.removeprefix("post_extract_proj.")
    if key.startswith("encoder.pos_conv.0."):
        return "encoder.pos_conv_embed.conv." + key.removeprefix("encoder.pos_conv.0.")
    if key in {"encoder.layer_norm.weight", "encoder.layer_norm.bias"}:
        return key
    match = _S3PRL_LAYER.match(key)
    if match:
        index, part, rest = match.groups()
        return f"encoder.layers.{index}.{_S3PRL_LAYER_PARTS[part]}.{rest}"
    match = _S3PRL_CONV.match(key)
    if match:
        index, sub, name = match.groups()
        module = "conv" if sub == "0" else "layer_norm"
        return f"feature_extractor.conv_layers.{index}.{module}.{name}"
    return key


def s3prl_to_hf_state_dict(
    state: Mapping[str, torch.Tensor], target_keys: Sequence[str] | set[str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename an s3prl distiller state dict to ``HubertModel`` keys.

    Drops the prediction heads (``output_layer.*``) and maps weight-norm parameters,
    stored as ``weight_g``/``weight_v`` or ``parametrizations.weight.original0/1``, to the
    naming found in ``target_keys`` (the state-dict keys of the model to load into).
    Returns ``(converted, origin)`` where ``origin`` maps each new key to its s3prl key.
    """
    targets = set(target_keys)
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = _s3prl_key(str(key))
        if new is None:
            continue
        for suffix, kind in _WEIGHT_NORM_NAMES.items():
            if new.endswith("." + suffix):
                base = new[: -len(suffix)]
                index = 0 if kind == "weight_g" else 1
                modern = f"{base}parametrizations.weight.original{index}"
                legacy = base + kind
                new = legacy if legacy in targets and modern not in targets else modern
                break
        if new in converted:
            raise EdgeserError(f"s3prl checkpoint holds two tensors for {new} ({key})")
        converted[new] = value
        origin[new] = str(key)
    return converted, origin


def _load_s3prl_checkpoint(path: Path) -> PreTrainedModel:
    """Build a ``HubertModel`` from an original s3prl DistilHuBERT checkpoint."""
    from transformers import HubertModel

    obj = _load_pickle(path)
    if not isinstance(obj, Mapping) or "Distiller" not in obj or "Config" not in obj:
        found = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise EdgeserError(
            f"{path}: not an s3prl DistilHuBERT checkpoint (expected a dict with 'Config' and "
            f"'Distiller' entries; found {found})"
        )
    config_entry = obj["Config"]
    if isinstance(config_entry, argparse.Namespace):
        config_entry = vars(config_entry)
    distiller_cfg = config_entry.get("distiller") if isinstance(config_entry, Mapping) else None
    if isinstance(distiller_cfg, argparse.Namespace):
        distiller_cfg = vars(distiller_cfg)
    if not isinstance(distiller_cfg, Mapping):
        raise EdgeserError(f"{path}: its 'Config' entry has no 'distiller' section")
    state = obj["Distiller"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise EdgeserError(f"{path}: its 'Distiller' entry is not a state dict of tensors")
    config = _config_from_distiller(distiller_cfg, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HubertModel(config)
    expected = model.state_dict()
    converted, origin = s3prl_to_hf_state_dict(state, expected.keys())
    missing = [k for k in expected if k not in converted and k not in _OPTIONAL_KEYS]
    unexpected = [origin[k] for k in converted if k not in expected]
    mismatched = [
        f"{origin[k]} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise EdgeserError(
            f"{path}: weights do not match the architecture in its Config "
            f"({config.num_hidden_layers} layers, width {config.hidden_size}, "
            f"{len(config.conv_dim)} conv layers) "
            + _describe_keys(missing=missing, unexpected=unexpected, mismatched=mismatched)
        )
    if not any(k in converted for k in _OPTIONAL_KEYS):
        _zero_optional(model)
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    model.eval()
    dropped = sum(1 for k in state if str(k).startswith("output_layer."))
    logger.info(
        "loaded s3prl DistilHuBERT checkpoint %s (%d layers; dropped %d prediction-head tensors)",
        path,
        config.num_hidden_layers,
        dropped,
    )
    return model
