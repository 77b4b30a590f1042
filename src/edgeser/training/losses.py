"""Losses for the emotion head: class-balanced adaptive focal loss and cross-entropy.

The paper trains with an "adaptive focal loss"::

    FL(p_t) = -α_t (1 - p_t)^γ log p_t,   γ = 2.0,

with α_t the class-balanced weight of the target class (from the training counts) and
label smoothing 0.1 applied to the target distribution. A one-hot formula does not say how
smoothing enters, so this module implements the reading that keeps the focal term
per class and sums it over the *smoothed* target distribution ``q``::

    q_c = (1 - ε) · onehot(y)_c + ε / C
    FL  = -α_y · Σ_c q_c (1 - p_c)^γ log p_c           (mean over the batch)

Why this reading:

* it is what "apply the focal term to the smoothed target distribution" says: every class
  c that receives target mass q_c contributes its own focal cross-entropy term
  ``-(1 - p_c)^γ log p_c``;
* both limits are the familiar losses: with ε = 0 only the c = y term is left, which is the
  one-hot focal loss of Lin et al. (2017); with γ = 0 it is exactly label-smoothed
  cross-entropy, ``F.cross_entropy(logits, y, label_smoothing=ε)`` (tested);
* the other common reading, ``-(1 - p_y)^γ · Σ_c q_c log p_c`` (the smoothed cross-entropy
  scaled by the true class's modulator), does not apply the focal term to the smoothed
  distribution: it down-weights whole examples, not the individual target classes;
* α is the weight of the *target* class (one scalar per example, the formula's α_t), not a
  per-class weight inside the sum: an example's importance comes from its class, not from
  which classes the smoothing mass lands on.

Class-balanced weights follow scikit-learn's "balanced" rule ``α_c = N / (C · n_c)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["FocalLoss", "ccc_loss", "class_balanced_alpha", "make_loss"]

LOSS_NAMES: tuple[str, ...] = ("focal", "ce")


def class_balanced_alpha(
    counts: Sequence[int], labels: Sequence[str] | None = None
) -> torch.Tensor:
    """Class-balanced weights ``α_c = N / (C · n_c)`` from training class counts.

    All weights are 1 when the classes are balanced; rarer classes weigh more. ``labels``
    only names the classes in error messages.

    Raises:
        ValueError: if ``counts`` is empty, contains a negative count, or a class has no
            training examples (its weight would be infinite).
    """
    values = [int(c) for c in counts]
    if not values:
        raise ValueError("class counts are empty")
    if labels is not None and len(labels) != len(values):
        raise ValueError(f"{len(values)} class counts but {len(labels)} labels")
    for i, c in enumerate(values):
        name = labels[i] if labels is not None else f"index {i}"
        if c < 0:
            raise ValueError(f"class {name} has a negative count ({c})")
        if c == 0:
            raise ValueError(
                f"class {name} has no training examples, so its class-balanced weight is "
                f"undefined (counts={values})"
            )
    n = torch.tensor(values, dtype=torch.float64)
    alpha = n.sum() / (len(values) * n)
    return alpha.to(torch.float32)


class FocalLoss(nn.Module):
    """Class-balanced focal loss over a label-smoothed target (see the module docstring).

    ``FL = -α_y Σ_c q_c (1 - p_c)^γ log p_c`` with ``q = (1 - ε)·onehot(y) + ε/C``,
    averaged over the batch. ``alpha=None`` means α_y = 1 for every class.

    Args:
        alpha: per-class weights ``[C]`` (e.g. :func:`class_balanced_alpha`) or ``None``.
        gamma: focusing parameter γ ≥ 0 (the paper: 2.0).
        label_smoothing: ε in [0, 1) (the paper: 0.1).
    """

    alpha: torch.Tensor | None

    def __init__(
        self, alpha: torch.Tensor | None = None, gamma: float = 2.0, label_smoothing: float = 0.1
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if alpha is not None:
            alpha = torch.as_tensor(alpha, dtype=torch.float32).detach().clone()
            if alpha.ndim != 1:
                raise ValueError(f"alpha must be a 1-D tensor of class weights, got {alpha.shape}")
        self.register_buffer("alpha", alpha)
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch for ``logits [B, C]`` and class indices ``target [B]``."""
        if logits.ndim != 2:
            raise ValueError(f"logits must be [B, C], got shape {tuple(logits.shape)}")
        num_classes = logits.shape[1]
        if target.shape != logits.shape[:1]:
            raise ValueError(
                f"target must be [B]={tuple(logits.shape[:1])}, got {tuple(target.shape)}"
            )
        if self.alpha is not None and self.alpha.numel() != num_classes:
            raise ValueError(f"alpha has {self.alpha.numel()} classes, logits have {num_classes}")
        target = target.long()
        work_dtype = torch.promote_types(logits.dtype, torch.float32)
        log_p = F.log_softmax(logits.to(work_dtype), dim=1)
        q = F.one_hot(target, num_classes).to(log_p.dtype)
        if self.label_smoothing > 0:
            q = q * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        if self.gamma > 0:
            # (1 - p)^γ with p = exp(log p), computed as -expm1(log p) for accuracy. The
            # clamp keeps the base positive, so pow has a finite gradient for γ < 1 too.
            base = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
            modulator = base.pow(self.gamma)
            per_class = modulator * log_p
        else:
            per_class = log_p
        loss = -(q * per_class).sum(dim=1)
        if self.alpha is not None:
            loss = loss * self.alpha.to(loss.device, loss.dtype)[target]
        return loss.mean()

    def extra_repr(self) -> str:
        """Hyper-parameters shown by ``print(module)``."""
        return f"gamma={self.gamma}, label_smoothing={self.label_smoothing}"


def make_loss(
    name: str,
    counts: Sequence[int] | None = None,
    gamma: float = 2.0,
    label_smoothing: float = 0.1,
    class_weights: bool = True,
    labels: Sequence[str] | None = None,
) -> nn.Module:
    """Build the training loss by name.

    * ``"focal"``: :class:`FocalLoss` with α from ``counts`` (class-balanced; α = 1 when
      ``counts`` is ``None`` or ``class_weights`` is false).
    * ``"ce"``: ``nn.CrossEntropyLoss`` with the same label smoothing and, optionally, the
      same class-balanced weights. ``gamma`` is ignored. Note torch's weighted mean
      divides by the summed target weights and weights the smoothing mass per class, so it
      differs from ``make_loss("focal", gamma=0)`` (α of the target, plain batch mean)
      when weights are used.

    ``labels`` names classes in the "no training examples" error.
    """
    key = name.strip().lower()
    alpha = class_balanced_alpha(counts, labels) if counts is not None and class_weights else None
    if key == "focal":
        logger.debug("focal loss gamma=%s eps=%s alpha=%s", gamma, label_smoothing, alpha)
        return FocalLoss(alpha, gamma=gamma, label_smoothing=label_smoothing)
    if key == "ce":
        logger.debug("cross-entropy eps=%s weight=%s", label_smoothing, alpha)
        return nn.CrossEntropyLoss(weight=alpha, label_smoothing=label_smoothing)
    raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``1 - CCC`` averaged over the dimensions, on the rows whose targets are all finite.

    ``pred`` and ``target`` are ``[B, K]``; rows of ``target`` holding ``NaN`` (utterances
    without dimensional labels) are left out. CCC (population moments, as in
    :func:`edgeser.evaluation.dimensions.ccc`) needs at least two rows: with fewer labelled
    rows in the batch the result is ``None`` (no dimensional term for that step).
    """
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and target must be [B, K] of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    keep = torch.isfinite(target).all(dim=1)
    if int(keep.sum()) < 2:
        return None
    x = pred[keep].to(torch.float32)
    y = target[keep].to(torch.float32)
    mx, my = x.mean(dim=0), y.mean(dim=0)
    vx = ((x - mx) ** 2).mean(dim=0)
    vy = ((y - my) ** 2).mean(dim=0)
    cov = ((x - mx) * (y - my)).mean(dim=0)
    concordance = 2.0 * cov / (vx + vy + (mx - my) ** 2).clamp_min(1e-8)
    return (1.0 - concordance).mean()
