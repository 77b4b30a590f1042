"""Emotion classification head over the hidden states of a frozen speech encoder.

Default design (``pooling="mean"``, ``hidden=256``, ``dropout=0.2``), following SUPERB's
emotion task and Pepino et al. (2021) for a frozen self-supervised encoder:

1. a learnable **softmax-weighted sum over all L hidden layers** (the embedding output
   included; L = 3 for DistilHuBERT), initialised to equal weights, because emotion cues
   are spread over layers and the last layer of an SSL model is not always the best;
2. **mean pooling** over the valid (unpadded) frames, the SUPERB choice: cheap and robust
   on utterances of 1-30 s;
3. a small **MLP** (Linear → ReLU → Dropout → Linear; ``hidden=0`` gives a single linear
   layer, SUPERB's probe).

About 0.2 M trainable parameters for D = 768, so the head trains in minutes on CPU.

With ``num_dimensions = K > 0`` (``--dimensions``) the head has a second output: a
regressor MLP of its own (hidden width ``min(hidden, 64)``: three outputs need less width
than four classes' decision boundaries, and it keeps the 8-bit DistilHuBERT model within
24 MB) on the same pooled, layer-weighted vector, ending in a sigmoid, so it predicts K
values on ``[0, 1]`` (arousal, valence, dominance; :mod:`edgeser.evaluation.dimensions`).
The two outputs share the layer weights and pooling; separate MLPs keep the classifier
exactly as it is without the flag (same parameters, same checkpoint keys).

Pooling per layer first: the head computes ``pool_layers`` (one pooled vector per layer)
and *then* takes the weighted sum. For mean pooling that equals pooling the weighted sum
(both are linear), and it lets a feature cache store ``[L, D]`` per utterance and train
with :meth:`EmotionHead.forward_pooled` without keeping frames. For ``"meanstd"`` the
statistics are per layer too (the weighted sum of per-layer mean‖std vectors), which is
what makes the cache possible for it. ``"attention"`` pooling weights frames with scores
computed from the layer-summed frames, so it needs the frames and has no pooled path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["POOLINGS", "EmotionHead", "HeadConfig", "pool_layers"]

POOLINGS: tuple[str, ...] = ("mean", "meanstd", "attention")
#: Poolings that can run from per-layer pooled vectors (a feature cache).
CACHEABLE_POOLINGS: tuple[str, ...] = ("mean", "meanstd")
_STD_EPS = 1e-6
#: Widest hidden layer of the dimensional regressor.
REGRESSOR_HIDDEN = 64


@dataclass(frozen=True)
class HeadConfig:
    """Shape and options of an :class:`EmotionHead`.

    Attributes:
        num_layers: number of hidden-state tensors L (embedding output + transformer layers).
        hidden_size: encoder width D.
        num_classes: number of emotion classes.
        pooling: ``"mean"`` (default), ``"meanstd"`` or ``"attention"``.
        hidden: MLP hidden width; 0 for a linear classifier.
        dropout: dropout after the MLP's hidden layer.
        normalize: standardise every layer's frames with stored per-layer statistics
            (buffers ``norm_mean``/``norm_std`` ``[L, D]``, set by
            :meth:`EmotionHead.set_normalization`) before pooling.
        num_dimensions: size of the dimensional output (0: none; 3 with ``--dimensions``).
    """

    num_layers: int
    hidden_size: int
    num_classes: int = 4
    pooling: str = "mean"
    hidden: int = 256
    dropout: float = 0.2
    normalize: bool = False
    num_dimensions: int = 0

    def __post_init__(self) -> None:
        if self.num_layers < 1 or self.hidden_size < 1 or self.num_classes < 2:
            raise ValueError(
                "num_layers and hidden_size must be >= 1 and num_classes >= 2, got "
                f"{self.num_layers}, {self.hidden_size}, {self.num_classes}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_dimensions < 0:
            raise ValueError(f"num_dimensions must be >= 0, got {self.num_dimensions}")

    @property
    def pooled_size(self) -> int:
        """Width of one pooled vector (2·D for mean+std)."""
        return 2 * self.hidden_size if self.pooling == "meanstd" else self.hidden_size

    def to_dict(self) -> dict[str, object]:
        """Plain dict (for checkpoints and JSON)."""
        return asdict(self)


def _as_layers(hidden: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack a tuple of ``[B, T, D]`` tensors (HF ``hidden_states``) into ``[L, B, T, D]``."""
    if isinstance(hidden, torch.Tensor):
        if hidden.ndim != 4:
            raise ValueError(f"hidden states must be [L, B, T, D], got {tuple(hidden.shape)}")
        return hidden
    return torch.stack(list(hidden), dim=0)


def _frame_mask(
    mask: torch.Tensor | None, batch: int, frames: int, device: torch.device
) -> torch.Tensor:
    """Validate/construct a ``[B, T]`` bool mask (True = valid frame)."""
    if mask is None:
        return torch.ones(batch, frames, dtype=torch.bool, device=device)
    if mask.shape != (batch, frames):
        raise ValueError(f"mask must be [B, T]=({batch}, {frames}), got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def pool_layers(
    hidden: torch.Tensor | Sequence[torch.Tensor],
    mask: torch.Tensor | None = None,
    pooling: str = "mean",
) -> torch.Tensor:
    """Pool every layer over its valid frames: ``[L, B, T, D]`` → ``[L, B, D]`` (or 2·D).

    ``mask`` is ``[B, T]`` bool, True on real frames (``None``: all frames valid). Padded
    frames never influence the result. ``"meanstd"`` concatenates the mean and the
    population standard deviation (``sqrt(var + 1e-6)``, finite gradients). An utterance
    without any valid frame pools to zeros. Attention pooling is not available here.
    """
    if pooling not in CACHEABLE_POOLINGS:
        raise ValueError(
            f"pool_layers supports {', '.join(CACHEABLE_POOLINGS)} pooling, got {pooling!r} "
            "(attention pooling needs the frames: use EmotionHead.forward)"
        )
    h = _as_layers(hidden)
    _, batch, frames, _ = h.shape
    m = _frame_mask(mask, batch, frames, h.device).to(h.dtype)[None, :, :, None]  # [1,B,T,1]
    count = m.sum(dim=2).clamp_min(1.0)  # [1, B, 1]
    # where() rather than multiply, so NaN/inf junk in padded frames cannot leak in
    zero = torch.zeros((), dtype=h.dtype, device=h.device)
    hm = torch.where(m > 0, h, zero)
    mean = hm.sum(dim=2) / count  # [L, B, D]
    if pooling == "mean":
        return mean
    centred = torch.where(m > 0, h - mean[:, :, None, :], zero)
    var = centred.pow(2).sum(dim=2) / count
    std = torch.sqrt(var + _STD_EPS)
    return torch.cat([mean, std], dim=-1)


class EmotionHead(nn.Module):
    """Weighted layer sum → pooling over valid frames → MLP, giving ``[B, C]`` logits."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        # zeros → softmax gives equal weights 1/L
        self.layer_logits = nn.Parameter(torch.zeros(config.num_layers))
        self.attention: nn.Linear | None = (
            nn.Linear(config.hidden_size, 1) if config.pooling == "attention" else None
        )
        if config.normalize:
            shape = (config.num_layers, config.hidden_size)
            self.register_buffer("norm_mean", torch.zeros(shape))
            self.register_buffer("norm_std", torch.ones(shape))
        self.classifier: nn.Module = _mlp(config, config.num_classes)
        self.regressor: nn.Module | None = (
            _mlp(config, config.num_dimensions, min(config.hidden, REGRESSOR_HIDDEN))
            if config.num_dimensions > 0
            else None
        )
        logger.debug("EmotionHead %s: %d parameters", config, self.num_parameters())

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per-layer feature statistics ``[L, D]`` (needs ``normalize=True``)."""
        if not self.config.normalize:
            raise ValueError("this head was built without normalize=True")
        self.norm_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.norm_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def _normalize_frames(self, h: torch.Tensor) -> torch.Tensor:
        if not self.config.normalize:
            return h
        mean = self.norm_mean.to(h.dtype)[:, None, None, :]
        return (h - mean) / self.norm_std.to(h.dtype)[:, None, None, :]

    def _normalize_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Per-layer mean (and std) vectors of normalised frames, from raw ones."""
        if not self.config.normalize:
            return pooled
        d = self.config.hidden_size
        mean = self.norm_mean.to(pooled.dtype)[:, None, :]
        std = self.norm_std.to(pooled.dtype)[:, None, :]
        parts = [(pooled[..., :d] - mean) / std]
        if pooled.shape[-1] > d:
            parts.append(pooled[..., d:] / std)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def layer_weights(self) -> torch.Tensor:
        """Softmax-normalised layer weights ``[L]`` (sum to 1)."""
        return F.softmax(self.layer_logits, dim=0)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check_layers(self, h: torch.Tensor) -> None:
        cfg = self.config
        if h.shape[0] != cfg.num_layers or h.shape[-1] != cfg.hidden_size:
            raise ValueError(
                f"expected {cfg.num_layers} layers of width {cfg.hidden_size}, got "
                f"{h.shape[0]} layers of width {h.shape[-1]}"
            )

    def pool_layers(
        self, hidden: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-layer pooled vectors ``[L, B, P]`` for this head's pooling (mean/meanstd)."""
        h = _as_layers(hidden)
        self._check_layers(h)
        return pool_layers(h, mask, self.config.pooling)  # raw: forward_pooled normalises

    def _weighted(self, x: torch.Tensor) -> torch.Tensor:
        """Weighted sum over the leading layer axis."""
        w = self.layer_weights().to(x.dtype)
        return torch.tensordot(w, x, dims=([0], [0]))

    def forward(
        self, hidden: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[B, C]`` from hidden states ``[L, B, T, D]`` and a ``[B, T]`` frame mask."""
        return self.classifier(self.embed(hidden, mask))

    def embed(
        self, hidden: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The pooled, layer-weighted vector ``[B, P]`` both outputs read."""
        h = _as_layers(hidden)
        self._check_layers(h)
        if self.attention is None:  # embed_pooled normalises the pooled statistics
            return self.embed_pooled(pool_layers(h, mask, self.config.pooling))
        h = self._normalize_frames(h)
        _, batch, frames, _ = h.shape
        m = _frame_mask(mask, batch, frames, h.device)
        # zero padded frames before anything touches them (NaN junk would poison gradients)
        h = torch.where(m[None, :, :, None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        x = self._weighted(h)  # [B, T, D]
        scores = self.attention(x).squeeze(-1)  # [B, T]
        scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
        w = F.softmax(scores, dim=1) * m.to(scores.dtype)
        w = w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        return torch.einsum("bt,btd->bd", w, x)

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` from per-layer pooled vectors ``[L, B, P]`` (mean/meanstd)."""
        return self.classifier(self.embed_pooled(pooled))

    def dimensions(self, embedded: torch.Tensor) -> torch.Tensor:
        """Dimensional output ``[B, K]`` on ``[0, 1]`` from :meth:`embed`'s vector."""
        if self.regressor is None:
            raise ValueError("this head has no dimensional output (num_dimensions=0)")
        return torch.sigmoid(self.regressor(embedded))

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """The layer-weighted vector ``[B, P]`` from per-layer pooled vectors ``[L, B, P]``."""
        cfg = self.config
        if cfg.pooling not in CACHEABLE_POOLINGS:
            raise ValueError(f"{cfg.pooling!r} pooling needs frames; call forward() instead")
        if pooled.ndim != 3 or pooled.shape[0] != cfg.num_layers:
            raise ValueError(
                f"pooled must be [L={cfg.num_layers}, B, P], got {tuple(pooled.shape)}"
            )
        if pooled.shape[-1] != cfg.pooled_size:
            raise ValueError(
                f"pooled width {pooled.shape[-1]} != {cfg.pooled_size} for {cfg.pooling!r} pooling"
            )
        return self._weighted(self._normalize_pooled(pooled))


def _mlp(config: HeadConfig, outputs: int, hidden: int | None = None) -> nn.Module:
    """Linear → ReLU → Dropout → Linear (``hidden=0``: one linear layer) to ``outputs``;
    ``hidden`` defaults to the config's."""
    width = config.hidden if hidden is None else hidden
    if width > 0:
        return nn.Sequential(
            nn.Linear(config.pooled_size, width),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(width, outputs),
        )
    return nn.Linear(config.pooled_size, outputs)
