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

``precision`` is ``"fp32"``, ``"bf16"`` or ``"auto"`` (the pipeline's default, resolved
once per process by :func:`edgeser.core.cpu.resolve_precision`: ``"bf16"`` only where
this CPU has native bfloat16 products, else ``"fp32"``). Both run a *direct*
implementation wherever the architecture allows it, rather than the ``transformers``
modules: the first convolution and its GroupNorm are folded into one product (the
normalisation's statistics follow exactly from the wave's input frames); the other
convolutions run time-major as matrix products over several utterances laid end to end;
the transformer keeps a float32 residual stream and LayerNorms with fused q/k/v
products.

In ``"bf16"`` the frozen weights are cast to bfloat16 once (and re-cast only when the
float32 master weights change), the first product runs at float32 accuracy as a split
bfloat16 product, the positional convolution as one product per group, and by default
the transformer layers' linear maps as dynamic int8 products (:data:`BF16_IMPL`). In
``"fp32"`` every product is float32 (the modules' arithmetic in another summation order;
the positional convolution is oneDNN's grouped convolution, faster in float32 than the
per-group products). Fine-tuning (:meth:`Encoder.unfreeze_upper`) still runs the upper
part through the modules (under autocast in ``"bf16"``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import pickle
import re
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgeser.core.errors import EdgeserError

if TYPE_CHECKING:
    from transformers import HubertConfig, PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = [
    "ALIASES",
    "BF16_IMPL",
    "DISTILHUBERT_CONV_SPEC",
    "DISTILHUBERT_HUB_ID",
    "DISTILHUBERT_NUM_PARAMETERS",
    "IMPLS",
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
#: Arithmetic an :class:`Encoder` runs in (``"auto"`` resolves to one of them).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: Tag of the direct bfloat16 implementation (see the module docstring). It is part of
#: the :attr:`Encoder.identity` of bf16 encoders that use it, so feature caches written by
#: the earlier autocast implementation are not reused; float32 identities do not change.
BF16_IMPL = "bf16-v2"
#: Choices of :class:`Encoder` ``impl``: the direct implementation with int8 transformer
#: linears (bf16's default; in fp32 measured 1.06x faster on an AVX2 CPU, but then no
#: longer float32 throughout, so not fp32's default), the direct implementation, or the
#: ``transformers`` modules.
IMPLS: tuple[str, ...] = ("direct+int8", "direct", "modules")

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
    feature caches), ``source``, ``is_random``, ``precision`` (``"fp32"`` or ``"bf16"``;
    ``"auto"`` is resolved at construction, see :mod:`edgeser.core.cpu`),
    ``do_normalize`` (per-utterance standardisation from the checkpoint's preprocessor
    config; False for DistilHuBERT), ``hop_length`` (320) and ``min_samples`` (the
    receptive field, 400).

    Inputs shorter than ``min_samples`` are zero-padded to it, so empty or very short
    input yields one frame instead of an error.

    ``impl`` selects how it runs (see the module docstring): ``"direct+int8"`` (the
    default for bf16) is the direct implementation with dynamic int8 products for the
    transformer layers' linear maps, ``"direct"`` (the default for fp32) the direct
    implementation alone, ``"modules"`` the ``transformers`` modules (bf16: under CPU
    autocast; for comparisons). Parts an architecture does not support fall back to the
    modules, and int8 to the plain products when this torch build has no quantized CPU
    kernels. The identity says which implementation computed the features where that
    changes the arithmetic (float32 identities are the same for ``"direct"`` and
    ``"modules"``).
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
        impl: str | None = None,
    ) -> None:
        super().__init__()
        _check_family(model)
        precision = _check_precision(precision)
        if batch_size < 1:
            raise EdgeserError(f"batch_size must be >= 1, got {batch_size}")
        if impl is None:
            impl = "direct+int8" if precision == "bf16" else "direct"
        if impl not in IMPLS:
            raise EdgeserError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")
        model.config.layerdrop = 0.0  # every layer must run: hidden states are features
        flag = ("is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing")
                else "is_gradient_checkpointing")  # the name transformers 5 deprecates
        if getattr(model, flag, False):
            # wav2vec 2.0 hub configs may say gradient_checkpointing: true; frozen and
            # inference use gains nothing from it, and fine-tuning would recompute
            disable = getattr(model, "activation_checkpointing_disable", None) or \
                model.gradient_checkpointing_disable
            disable()
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
        _use_strided_matmul_first_conv(self.model)
        direct = impl != "modules"
        self._dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self._fast_conv = direct and _fast_conv_supported(self.model)
        self._fast_upper = direct and _fast_upper_supported(self.model)
        self._int8 = self._fast_upper and impl == "direct+int8" and _int8_available()
        self._casts = _CastCache()
        tag = None
        if precision == "bf16" and (self._fast_conv or self._fast_upper):
            tag = BF16_IMPL + ("+int8" if self._int8 else "")
        elif self._int8:
            tag = "direct+int8"
        self.identity = _fingerprint(self.model, precision, impl=tag)

    # ------------------------------------------------------------------ state

    def variant(self, *, precision: str | None = None, impl: str | None = None) -> Encoder:
        """An encoder over the same (shared, not copied) weights with another precision
        or implementation (``None``: this encoder's precision, that precision's default
        implementation)."""
        return Encoder(self.model, source=self.source, is_random=self.is_random,
                       precision=precision or self.precision, do_normalize=self.do_normalize,
                       batch_size=self.batch_size, impl=impl)

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
        equal lengths (bf16: per group of utterances laid end to end, each normalised on
        its own) and the upper part on the padded batch with an attention mask, so every
        output equals encoding that input alone (in bf16, up to bfloat16 rounding). Never
        tracks gradients and always runs in eval mode (no dropout), even while the upper
        part is being fine-tuned.
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
                    states = self._upper_frozen(padded, mask)
                # Cloning outside inference mode gives ordinary tensors autograd accepts.
                for j, i in enumerate(chunk):
                    results[i] = states[:, j, : feats[j].shape[0]].clone()
        return [r for r in results if r is not None]

    def conv_features(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frozen conv-extractor output ``[frames, conv_dim]`` (float32) of one waveform."""
        prepared = self._prepare(wave, index=0)
        with torch.inference_mode():
            feats = self._conv_batch([prepared])[0]
        # Outside inference mode, so that the result is an ordinary tensor.
        return feats.float() if feats.dtype != torch.float32 else feats.clone()

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
            states = self._upper_frozen(feats, frame_mask)
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
        """Conv features ``[frames, conv_dim]`` per wave (float32; bfloat16 on the direct
        bf16 path), laid end to end (direct) or grouped by equal length (modules)."""
        if self._fast_conv:
            return self._conv_direct(waves)
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

    def _upper_frozen(self, feats: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """The upper part without gradients: direct when possible, else :meth:`_upper`."""
        if self._fast_upper:
            return self._upper_direct(feats, frame_mask)
        return self._upper(feats.float(), frame_mask)

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

    # ------------------------------------------------------ direct implementation

    def _conv_direct(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Conv features ``[frames, conv_dim]`` per wave in the compute dtype (direct path).

        Consecutive waves are laid end to end, up to :data:`_CONV_GROUP_SAMPLES` samples
        per group (a longer wave forms a group of its own), and each group runs through
        the extractor at once (:meth:`_conv_group_direct`).
        """
        out: list[torch.Tensor] = []
        start = 0
        while start < len(waves):
            stop, total = start + 1, waves[start].numel()
            while stop < len(waves) and total + waves[stop].numel() <= _CONV_GROUP_SAMPLES:
                total += waves[stop].numel()
                stop += 1
            out += self._conv_group_direct(waves[start:stop])
            start = stop
        return out

    def _conv_group_direct(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
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
        hidden = self._first_conv_direct(waves, bounds)
        for index in range(1, len(layers)):
            hidden = self._conv_layer_direct(index, hidden)
        out = []
        for wave, (start, _) in zip(waves, bounds, strict=True):
            first = start // hop
            out.append(hidden[first : first + self.num_frames(wave.numel())])
        return out

    def _first_conv_direct(
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
        dtype = self._dtype
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

    def _conv_layer_direct(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """One strided conv + GELU on a time-major ``[rows, C]`` sequence (compute dtype).

        ``out[t] = sum_j hidden[stride * t + j] @ W_j``: the taps are split into blocks of
        at most ``stride`` taps, and each block is a product of a strided view of
        ``hidden`` (row ``t`` = the block's input rows, contiguous in memory) with the
        block's stacked weights, so no input is copied.
        """
        conv = self.model.feature_extractor.conv_layers[index].conv
        kernel, stride = int(conv.kernel_size[0]), int(conv.stride[0])
        blocks, bias = self._casts.get(
            f"conv{index}", (conv.weight, conv.bias), lambda: _tap_blocks(conv, stride, self._dtype)
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

    def _upper_direct(self, feats: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """What :meth:`_upper` computes, directly: float32 residual stream and LayerNorms,
        matrix products in the compute dtype (transformer layers: optionally int8) with
        weights cast once."""
        model = self.model
        projection = model.feature_projection
        norm = _projection_norm(projection)
        x = feats
        if norm is not None:
            x = _layer_norm(x, norm)
        hidden = self._linear_direct("projection", projection.projection, x)
        mask = None if bool(frame_mask.all()) else frame_mask
        if mask is not None:  # padded frames enter the positional conv as zeros
            hidden = hidden.masked_fill(~mask[..., None], 0.0)
        encoder = model.encoder
        stable = type(encoder).__name__ in _STABLE_ENCODERS
        hidden = hidden.float() + self._pos_conv_direct(hidden)
        attn_mask = None if mask is None else mask[:, None, None, :]
        if not stable:
            hidden = _layer_norm(hidden, encoder.layer_norm)
        states = []
        for index, layer in enumerate(encoder.layers):
            states.append(hidden)
            if stable:
                attended = self._attention_direct(
                    index, layer.attention, _layer_norm(hidden, layer.layer_norm), attn_mask
                )
                hidden = hidden + attended
                hidden = hidden + self._feed_forward_direct(
                    index, layer.feed_forward, _layer_norm(hidden, layer.final_layer_norm)
                )
            else:
                attended = self._attention_direct(index, layer.attention, hidden, attn_mask)
                hidden = _layer_norm(hidden + attended, layer.layer_norm)
                hidden = _layer_norm(
                    hidden + self._feed_forward_direct(index, layer.feed_forward, hidden),
                    layer.final_layer_norm,
                )
        states.append(_layer_norm(hidden, encoder.layer_norm) if stable else hidden)
        return torch.stack(states)

    def _linear_direct(self, key: str, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype
        weight, bias = self._casts.get(
            key, (linear.weight, linear.bias),
            lambda: (_cast(linear.weight, dtype), _cast(linear.bias, dtype)),
        )
        return F.linear(x.to(dtype), weight, bias)

    def _attention_direct(
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
        qkv = self._layer_linear(f"layer{index}.qkv", parts, x).to(self._dtype)
        query, key, value = qkv.view(batch, frames, 3, heads, width // heads).permute(
            2, 0, 3, 1, 4
        )
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, scale=float(attention.scaling)
        )
        out = out.transpose(1, 2).reshape(batch, frames, width)
        return self._layer_linear(f"layer{index}.out", (attention.out_proj,), out)

    def _feed_forward_direct(self, index: int, ff: nn.Module, x: torch.Tensor) -> torch.Tensor:
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
        if self._int8:
            packed, bias = self._casts.get(key + ".int8", sources, lambda: _pack_int8(linears))
            return _int8_linear(x, packed, bias)
        dtype = self._dtype
        weight, bias = self._casts.get(
            key,
            sources,
            lambda: (
                _cast(torch.cat([m.weight for m in linears]), dtype),
                _cast(torch.cat([m.bias for m in linears]), dtype),
            ),
        )
        return F.linear(x.to(dtype), weight, bias)

    def _pos_conv_direct(self, hidden: torch.Tensor) -> torch.Tensor:
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
        if self._dtype == torch.float32:
            weight, bias = self._casts.get(
                "pos_conv_fp32", _conv_weight_sources(conv),
                lambda: (_cast(conv.weight, torch.float32), _cast(conv.bias, torch.float32)),
            )
            out = F.conv1d(hidden.transpose(1, 2), weight, bias, padding=pad, groups=groups)
            out = out[:, :, : hidden.shape[1]].transpose(1, 2)
            return F.gelu(out)
        blocks, bias = self._casts.get(
            "pos_conv", _conv_weight_sources(conv), lambda: _group_blocks(conv, self._dtype)
        )
        batch, frames, width = hidden.shape
        size = width // groups
        padded = F.pad(hidden, (0, 0, pad, pad))  # [B, T + 2 pad, D]
        # [G, B, T + 2 pad, C_g]
        grouped = padded.view(batch, -1, groups, size).permute(2, 0, 1, 3).contiguous()
        out = torch.empty(groups, batch, frames, size, dtype=self._dtype)
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


# ------------------------------------------------------ direct implementation helpers

#: Samples of audio laid end to end per conv-extractor group on the direct path.
_CONV_GROUP_SAMPLES = 8 * SAMPLE_RATE
#: Frames of gathered windows per product in the positional conv (at least one utterance).
_POS_CONV_ROWS = 2048
_POST_LN_ENCODERS = frozenset({"HubertEncoder", "Wav2Vec2Encoder"})
_STABLE_ENCODERS = frozenset({"HubertEncoderStableLayerNorm", "Wav2Vec2EncoderStableLayerNorm"})


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

    def get(
        self, key: str, sources: Sequence[torch.Tensor | None], make: Callable[[], Any]
    ) -> Any:
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
    if getattr(config, "hidden_act", None) != "gelu" or getattr(
        config, "feat_extract_activation", None
    ) != "gelu":
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


def _pad_frames(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``[frames_i, C]`` tensors to ``[B, T, C]`` with a ``[B, T]`` valid mask."""
    lengths = torch.tensor([f.shape[0] for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence(list(feats), batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def _check_precision(precision: str) -> str:
    """``precision`` resolved (``"auto"``) and checked; see :mod:`edgeser.core.cpu`."""
    from edgeser.core.cpu import resolve_precision

    return resolve_precision(precision)


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


def _fingerprint(model: nn.Module, precision: str, *, impl: str | None = None) -> str:
    """Short sha256 over the config JSON (inference-relevant keys), precision and weights.

    ``impl`` names an implementation whose arithmetic differs from the modules' (the
    direct bf16 one, :data:`BF16_IMPL`; int8 transformer linears); plain float32
    identities never depend on the implementation.
    """
    digest = hashlib.sha256()
    config = {
        k: v
        for k, v in model.config.to_dict().items()
        if k not in _VOLATILE_CONFIG_KEYS
        and not any(part in k for part in ("dropout", "mask_", "ctc_", "token_id"))
    }
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"precision={precision}".encode())
    if impl:
        digest.update(f"|impl={impl}".encode())
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

    ``seed`` only matters for ``"random"``; ``precision`` is ``"fp32"``, ``"bf16"`` or
    ``"auto"`` (float32 outputs in every case; see the module docstring); ``cache_dir``
    is the Hugging Face cache for hub ids. Raises :class:`EdgeserError` for anything a
    user can fix (wrong path, unreachable hub id, a checkpoint of another architecture).
    """
    precision = _check_precision(precision)
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


#: Seconds to wait for the hub's TCP handshake before calling the machine offline.
_HUB_PROBE_SECONDS = 3.0


def _hub_reachable(timeout: float = _HUB_PROBE_SECONDS) -> tuple[bool, str]:
    """Whether the Hugging Face hub's host accepts a TCP connection within ``timeout``
    (one quick check, instead of the hub client's retries with back-off), and the host."""
    import socket
    from urllib.parse import urlsplit

    try:
        from huggingface_hub import constants

        endpoint = str(getattr(constants, "ENDPOINT", "https://huggingface.co"))
    except ImportError:  # pragma: no cover - a transformers dependency
        endpoint = "https://huggingface.co"
    parts = urlsplit(endpoint)
    host = parts.hostname or "huggingface.co"
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, host
    except OSError:
        return False, host


def _fetch_error(source: str, why: str) -> EdgeserError:
    return EdgeserError(
        f"could not fetch {source!r} from the Hugging Face hub ({why}). Pass a local model "
        f"folder instead (download it where there is internet, e.g. `hf download {source} "
        "--local-dir DIR`, then --encoder DIR), the original s3prl DistilHuBERT .ckpt, or "
        "--encoder random for a dry run"
    )


def _load_pretrained(
    source: str, *, local: bool, cache_dir: str | os.PathLike[str] | None
) -> tuple[PreTrainedModel, bool]:
    """Load a HF model folder or hub id with AutoConfig/AutoModel; return (model, do_normalize).

    A hub id is looked up in the local cache first; only a miss goes to the network, after
    one quick check that the hub is reachable (offline, the error comes within seconds).
    """
    from transformers import AutoConfig, AutoModel

    options: dict[str, Any] = {"local_files_only": True}
    if cache_dir is not None and not local:
        options["cache_dir"] = str(cache_dir)
    if local and not (Path(source) / "config.json").is_file():
        raise EdgeserError(f"{source}: not a Hugging Face model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except (OSError, ValueError, KeyError) as exc:
        if local:
            raise EdgeserError(f"{source}: unreadable model config: {_first_line(exc)}") from exc
        if _hub_offline():
            raise _fetch_error(source, "HF_HUB_OFFLINE is set and it is not in the local "
                               "cache") from exc
        reachable, host = _hub_reachable()
        if not reachable:
            raise _fetch_error(source, f"{host} is unreachable: offline? It is not in the "
                               "local cache either") from exc
        options["local_files_only"] = False
        try:
            config = AutoConfig.from_pretrained(source, **options)
        except (OSError, ValueError, KeyError) as exc2:
            raise _fetch_error(source, f"not a model id, or the download failed: "
                               f"{_first_line(exc2)}") from exc2
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


class InertObject:
    """Stands in for a class or function of a checkpoint that the loader does not know.

    :func:`_load_pickle` maps every such global (an optimizer schedule of the training
    toolkit, say) to a subclass of this one, named after it: the unpickler then builds an
    instance that only records the arguments and state the file holds (``args``,
    ``state``); nothing the file names is imported or run.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert stand-in for {self.qualified_name}>"


def _stand_in(name: str) -> type[InertObject]:
    return type(name.rsplit(".", 1)[-1], (InertObject,), {"qualified_name": name})


#: Unknown globals one checkpoint may bring before the loader gives up.
_MAX_STAND_INS = 64


def _load_pickle(path: Path) -> tuple[Any, list[str]]:
    """``torch.load`` a file the user named, weights-only, never with full unpickling.

    Tensors, plain containers and ``argparse.Namespace`` load as themselves; every other
    global the file names (a class of the toolkit that wrote it, which need not be
    installed here) is replaced by an inert stand-in (:class:`InertObject`): recorded,
    never imported or called. Returns the object and the names of the globals stood in
    for. Globals of modules torch blocks outright (``os``, ``sys``, ...) are refused.
    """
    stand_ins: dict[str, type[InertObject]] = {}
    while True:
        allowed: list[Any] = [argparse.Namespace, *((c, n) for n, c in stand_ins.items())]
        try:
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(path, map_location="cpu", weights_only=True)
            return obj, sorted(stand_ins)
        except pickle.UnpicklingError as exc:
            match = re.search(r"Unsupported global: GLOBAL (\S+) was not", str(exc))
            if match is None:
                raise EdgeserError(
                    f"{path}: not a readable torch checkpoint: {_first_line(exc)}") from exc
            name = match.group(1)
            if "." not in name:  # torch prints builtins without their module
                name = f"builtins.{name}"
            if name in stand_ins or len(stand_ins) >= _MAX_STAND_INS:
                raise EdgeserError(f"{path}: could not read it weights-only (at {name}): "
                                   f"{_first_line(exc)}") from exc
            stand_ins[name] = _stand_in(name)
        except Exception as exc:  # a corrupt or foreign file fails in many ways
            raise EdgeserError(f"{path}: not a readable torch checkpoint: {_first_line(exc)}") \
                from exc


def _stand_ins_in(obj: Any, depth: int = 0) -> set[str]:
    """Qualified names of the :class:`InertObject` stand-ins anywhere inside ``obj``."""
    if isinstance(obj, InertObject):
        return {obj.qualified_name} | _stand_ins_in((obj.args, obj.state), depth + 1)
    if depth > 32:
        return set()
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, list | tuple | set):
        found: set[str] = set()
        for item in obj:
            found |= _stand_ins_in(item, depth + 1)
        return found
    return set()


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

    obj, _ = _load_pickle(path)
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
    unknown = _stand_ins_in(distiller_cfg)
    if unknown:
        raise EdgeserError(f"{path}: its Config['distiller'] holds objects of unknown classes "
                           f"({', '.join(sorted(unknown))})")
    ignored = []
    for key in obj:
        if key in ("Distiller", "Config"):
            continue
        inner = sorted(_stand_ins_in(obj[key]))
        ignored.append(f"{key} ({', '.join(inner)})" if inner else str(key))
    if ignored:
        logger.info("%s: ignored: %s", path.name, ", ".join(ignored))
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
