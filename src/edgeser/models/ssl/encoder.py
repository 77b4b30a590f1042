"""The :class:`Encoder`: a frozen SSL speech encoder returning all hidden states."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgeser.core.cpu import resolve_precision
from edgeser.core.errors import EdgeserError
from edgeser.models.ssl.configs import (
    BF16_IMPL,
    IMPLS,
    OPTIONAL_KEYS,
    VOLATILE_CONFIG_KEYS,
    conv_frames,
)
from edgeser.models.ssl.direct import DirectPath, use_strided_matmul_first_conv

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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
        check_family(model)
        precision = check_precision(precision)
        if batch_size < 1:
            raise EdgeserError(f"batch_size must be >= 1, got {batch_size}")
        if impl is None:
            impl = "direct+int8" if precision == "bf16" else "direct"
        if impl not in IMPLS:
            raise EdgeserError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")
        model.config.layerdrop = 0.0  # every layer must run: hidden states are features
        flag = (
            "is_activation_checkpointing"
            if hasattr(type(model), "is_activation_checkpointing")
            else "is_gradient_checkpointing"
        )  # the name transformers 5 deprecates
        if getattr(model, flag, False):
            # wav2vec 2.0 hub configs may say gradient_checkpointing: true; frozen and
            # inference use gains nothing from it, and fine-tuning would recompute
            disable = (
                getattr(model, "activation_checkpointing_disable", None)
                or model.gradient_checkpointing_disable
            )
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
        use_strided_matmul_first_conv(self.model)
        #: the direct implementation (:mod:`edgeser.models.ssl.direct`); the parts it does
        #: not support run through the modules
        self.direct = DirectPath(
            self.model,
            dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
            enabled=impl != "modules",
            int8=impl == "direct+int8",
        )
        direct = self.direct
        tag = None
        if precision == "bf16" and (direct.conv_supported or direct.upper_supported):
            tag = BF16_IMPL + ("+int8" if direct.int8 else "")
        elif direct.int8:
            tag = "direct+int8"
        self.identity = _fingerprint(self.model, precision, impl=tag)

    # ------------------------------------------------------------------ state

    def variant(self, *, precision: str | None = None, impl: str | None = None) -> Encoder:
        """An encoder over the same (shared, not copied) weights with another precision
        or implementation (``None``: this encoder's precision, that precision's default
        implementation)."""
        return Encoder(
            self.model,
            source=self.source,
            is_random=self.is_random,
            precision=precision or self.precision,
            do_normalize=self.do_normalize,
            batch_size=self.batch_size,
            impl=impl,
        )

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
            if name.startswith("feature_extractor.") or name in OPTIONAL_KEYS:
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
        return conv_frames(max(int(num_samples), self.min_samples), self._conv)

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
        if self.direct.conv_supported:
            return self.direct.conv(waves)
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
        if self.direct.upper_supported:
            return self.direct.upper(feats, frame_mask)
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


def _pad_frames(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``[frames_i, C]`` tensors to ``[B, T, C]`` with a ``[B, T]`` valid mask."""
    lengths = torch.tensor([f.shape[0] for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence(list(feats), batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def check_precision(precision: str) -> str:
    """``precision`` resolved (``"auto"``) and checked; see :mod:`edgeser.core.cpu`."""
    return resolve_precision(precision)


def check_family(model: Any) -> None:
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
        if k not in VOLATILE_CONFIG_KEYS
        and not any(part in k for part in ("dropout", "mask_", "ctc_", "token_id"))
    }
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"precision={precision}".encode())
    if impl:
        digest.update(f"|impl={impl}".encode())
    for key, tensor in sorted(model.state_dict().items()):
        if key in OPTIONAL_KEYS:
            continue
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
