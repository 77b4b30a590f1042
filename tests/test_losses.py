"""Focal loss, class-balanced weights and the loss factory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeser.training.losses import FocalLoss, class_balanced_alpha, make_loss

IEMOCAP_COUNTS = [1103, 1636, 1708, 1084]  # angry, happy, neutral, sad


def _hand_focal(logits: np.ndarray, target: np.ndarray, alpha, gamma: float, eps: float) -> float:
    """Reference focal loss written out element by element (float64, no torch)."""
    total = 0.0
    n, c = logits.shape
    for i in range(n):
        row = logits[i] - logits[i].max()
        p = np.exp(row) / np.exp(row).sum()
        example = 0.0
        for k in range(c):
            q = (1 - eps) * (1.0 if k == target[i] else 0.0) + eps / c
            example += -q * (1 - p[k]) ** gamma * math.log(p[k])
        total += (alpha[target[i]] if alpha is not None else 1.0) * example
    return total / n


def test_alpha_balanced_rule() -> None:
    alpha = class_balanced_alpha(IEMOCAP_COUNTS)
    n, c = sum(IEMOCAP_COUNTS), 4
    expected = [n / (c * k) for k in IEMOCAP_COUNTS]
    assert alpha.dtype == torch.float32
    np.testing.assert_allclose(alpha.numpy(), expected, rtol=1e-6)
    # N = 5531: sad (rarest) weighs most, neutral (commonest) least.
    assert alpha.argmax().item() == 3 and alpha.argmin().item() == 2
    np.testing.assert_allclose(alpha.numpy(), [1.25363, 0.84520, 0.80957, 1.27560], atol=1e-5)
    # weighted by counts, the weights average to 1: Σ n_c α_c = N
    assert float((alpha.double() * torch.tensor(IEMOCAP_COUNTS).double()).sum()) == pytest.approx(n)
    np.testing.assert_allclose(class_balanced_alpha([7, 7, 7, 7]).numpy(), [1.0] * 4)


def test_alpha_zero_count_raises() -> None:
    with pytest.raises(ValueError, match="no training examples"):
        class_balanced_alpha([10, 0, 3, 4])
    with pytest.raises(ValueError, match="class happy has no training examples"):
        class_balanced_alpha([10, 0, 3, 4], labels=("angry", "happy", "neutral", "sad"))
    with pytest.raises(ValueError):
        class_balanced_alpha([])
    with pytest.raises(ValueError):
        class_balanced_alpha([3, -1])


def test_focal_matches_hand_computation() -> None:
    logits = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -2.0]])
    target = np.array([0, 3])
    alpha = [1.25, 0.85, 0.8, 1.3]
    # Fully by hand for the first example, γ=2, ε=0.1, α_0=1.25:
    e = np.exp(logits[0])
    p = e / e.sum()
    q = np.array([0.925, 0.025, 0.025, 0.025])
    first = 1.25 * float(-(q * (1 - p) ** 2 * np.log(p)).sum())
    second = _hand_focal(logits[1:], target[1:], alpha, 2.0, 0.1)
    expected = (first + second) / 2
    assert expected == pytest.approx(_hand_focal(logits, target, alpha, 2.0, 0.1))

    loss = FocalLoss(torch.tensor(alpha), gamma=2.0, label_smoothing=0.1)
    got = loss(torch.tensor(logits, dtype=torch.float32), torch.tensor(target))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # sanity of the hand numbers themselves (catches a silently wrong reference)
    assert first == pytest.approx(0.231041, abs=1e-5)
    assert expected == pytest.approx(3.241201, abs=1e-5)


def test_focal_defaults_and_no_alpha() -> None:
    logits = np.array([[0.3, -0.2, 1.1, 0.0], [-1.0, 2.0, 0.5, 0.5]])
    target = np.array([2, 1])
    loss = FocalLoss(None)
    assert loss.gamma == 2.0 and loss.label_smoothing == 0.1
    got = loss(torch.tensor(logits, dtype=torch.float32), torch.tensor(target)).item()
    assert got == pytest.approx(_hand_focal(logits, target, None, 2.0, 0.1), rel=1e-5)


def test_reduces_to_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 4) * 3
    target = torch.randint(0, 4, (8,))
    fl = FocalLoss(torch.ones(4), gamma=0.0, label_smoothing=0.0)
    assert fl(logits, target).item() == pytest.approx(F.cross_entropy(logits, target).item(), 1e-6)
    # γ=0 with smoothing is label-smoothed cross-entropy
    fl = FocalLoss(None, gamma=0.0, label_smoothing=0.1)
    ce = F.cross_entropy(logits, target, label_smoothing=0.1)
    assert fl(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)


def test_focal_downweights_easy_examples() -> None:
    easy = torch.tensor([[6.0, 0.0, 0.0, 0.0]])
    hard = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    y = torch.tensor([0])
    fl, ce = FocalLoss(None, 2.0, 0.0), FocalLoss(None, 0.0, 0.0)
    assert fl(easy, y) / ce(easy, y) < fl(hard, y) / ce(hard, y)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gradients_finite_for_extreme_logits(gamma: float) -> None:
    logits = torch.tensor(
        [[1e4, -1e4, 0.0, -1e4], [-1e4, 1e4, 1e4, -1e4], [0.0, 0.0, -1e4, 1e4]],
        requires_grad=True,
    )
    target = torch.tensor([0, 3, 2])  # confident-right, confident-wrong, wrong
    loss = FocalLoss(class_balanced_alpha(IEMOCAP_COUNTS), gamma=gamma, label_smoothing=0.1)
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_focal_input_validation() -> None:
    loss = FocalLoss(torch.ones(3))
    with pytest.raises(ValueError):
        loss(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        loss(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        FocalLoss(None, gamma=-1.0)
    with pytest.raises(ValueError):
        FocalLoss(None, label_smoothing=1.0)


def test_alpha_moves_with_module() -> None:
    loss = FocalLoss(torch.ones(4))
    assert "alpha" in dict(loss.named_buffers())
    assert loss.double().alpha.dtype == torch.float64


def test_make_loss() -> None:
    fl = make_loss("focal", IEMOCAP_COUNTS, gamma=2.0, label_smoothing=0.1)
    assert isinstance(fl, FocalLoss)
    assert fl.alpha is not None
    np.testing.assert_allclose(fl.alpha.numpy(), class_balanced_alpha(IEMOCAP_COUNTS).numpy())
    ce = make_loss("ce", IEMOCAP_COUNTS, gamma=2.0, label_smoothing=0.1)
    assert isinstance(ce, nn.CrossEntropyLoss)
    assert ce.label_smoothing == 0.1 and ce.weight is not None
    plain = make_loss("CE", None, gamma=2.0, label_smoothing=0.0)
    assert isinstance(plain, nn.CrossEntropyLoss) and plain.weight is None
    unweighted = make_loss("focal", IEMOCAP_COUNTS, 2.0, 0.1, class_weights=False)
    assert isinstance(unweighted, FocalLoss) and unweighted.alpha is None
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge", IEMOCAP_COUNTS, 2.0, 0.1)
    with pytest.raises(ValueError, match="class sad has no training examples"):
        make_loss("focal", [1, 2, 3, 0], 2.0, 0.1, labels=("angry", "happy", "neutral", "sad"))
