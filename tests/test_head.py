"""Emotion head: layer weighting, masked pooling, pooled fast path."""

from __future__ import annotations

import pytest
import torch

from edgeser.models.head import EmotionHead, HeadConfig, pool_layers

L, B, T, D = 3, 4, 11, 16


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(L, B, T, D, generator=g)
    lengths = torch.tensor([11, 7, 3, 1])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return hidden, mask


def _head(pooling: str, hidden: int = 8, seed: int = 0) -> EmotionHead:
    torch.manual_seed(seed)
    head = EmotionHead(HeadConfig(num_layers=L, hidden_size=D, pooling=pooling, hidden=hidden))
    with torch.no_grad():  # unequal layer weights make the tests sharper
        head.layer_logits.copy_(torch.tensor([0.3, -0.5, 1.0]))
    return head.eval()


@pytest.mark.parametrize("pooling", ["mean", "meanstd", "attention"])
def test_padded_frames_ignored(pooling: str) -> None:
    head = _head(pooling)
    hidden, mask = _batch()
    junk = hidden.clone()
    junk[:, ~mask] = 1e6  # huge values where padding is
    junk2 = hidden.clone()
    junk2[:, ~mask] = float("nan")
    out = head(hidden, mask)
    assert torch.allclose(out, head(junk, mask), atol=1e-5)
    assert torch.allclose(out, head(junk2, mask), atol=1e-5)
    # gradients stay finite even with NaN in the padding
    head.train()
    head(junk2, mask).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    head.eval()
    # truncating an utterance to its valid frames gives the same logits
    short = head(hidden[:, 2:3, :3], None)
    assert torch.allclose(out[2:3], short, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "meanstd"])
def test_forward_equals_forward_pooled(pooling: str) -> None:
    head = _head(pooling)
    hidden, mask = _batch(1)
    pooled = head.pool_layers(hidden, mask)
    width = 2 * D if pooling == "meanstd" else D
    assert pooled.shape == (L, B, width)
    assert torch.allclose(head(hidden, mask), head.forward_pooled(pooled), atol=1e-6)
    # the per-utterance cache path: pooling one utterance alone gives the same vector
    alone = pool_layers(hidden[:, 1:2, :7], None, pooling)
    assert torch.allclose(alone, pooled[:, 1:2], atol=1e-6)


def test_mean_pooling_commutes_with_weighted_sum() -> None:
    head = _head("mean")
    hidden, mask = _batch(2)
    w = head.layer_weights()
    summed = torch.einsum("l,lbtd->btd", w, hidden)[None]  # one "layer"
    direct = pool_layers(summed, mask, "mean")[0]
    via_layers = torch.einsum("l,lbd->bd", w, head.pool_layers(hidden, mask))
    assert torch.allclose(direct, via_layers, atol=1e-6)
    # and the mean itself is right for the 3-frame utterance
    assert torch.allclose(pool_layers(hidden, mask)[:, 2], hidden[:, 2, :3].mean(dim=1))


def test_layer_weights() -> None:
    head = EmotionHead(HeadConfig(num_layers=L, hidden_size=D))
    w = head.layer_weights()
    assert torch.allclose(w, torch.full((L,), 1 / L))  # equal at init
    assert w.sum().item() == pytest.approx(1.0)
    hidden, mask = _batch()
    head(hidden, mask).sum().backward()
    assert head.layer_logits.grad is not None
    with torch.no_grad():
        head.layer_logits.add_(torch.tensor([5.0, -2.0, 0.1]))
    assert head.layer_weights().sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("pooling", ["mean", "meanstd", "attention"])
@pytest.mark.parametrize("hidden_width", [0, 8])
def test_output_shape(pooling: str, hidden_width: int) -> None:
    head = _head(pooling, hidden=hidden_width)
    hidden, mask = _batch()
    out = head(hidden, mask)
    assert out.shape == (B, 4) and torch.isfinite(out).all()
    # HF-style tuple of [B, T, D] tensors is accepted as well
    assert torch.allclose(head(tuple(hidden), mask), out)


def test_parameter_count() -> None:
    head = EmotionHead(HeadConfig(num_layers=3, hidden_size=768))
    expected = 3 + (768 * 256 + 256) + (256 * 4 + 4)
    assert head.num_parameters() == expected == 197_895
    linear = EmotionHead(HeadConfig(num_layers=3, hidden_size=768, hidden=0))
    assert linear.num_parameters() == 3 + 768 * 4 + 4
    ms = EmotionHead(HeadConfig(num_layers=3, hidden_size=768, pooling="meanstd"))
    assert ms.num_parameters() == 3 + (1536 * 256 + 256) + (256 * 4 + 4)
    att = EmotionHead(HeadConfig(num_layers=3, hidden_size=768, pooling="attention"))
    assert att.num_parameters() == expected + 769
    assert max(head.num_parameters(), ms.num_parameters(), att.num_parameters()) < 1_000_000


def test_config_and_errors() -> None:
    with pytest.raises(ValueError):
        HeadConfig(num_layers=3, hidden_size=8, pooling="max")
    with pytest.raises(ValueError):
        HeadConfig(num_layers=0, hidden_size=8)
    with pytest.raises(ValueError):
        HeadConfig(num_layers=3, hidden_size=8, dropout=1.0)
    cfg = HeadConfig(num_layers=3, hidden_size=768)
    assert cfg.to_dict() == {
        "num_layers": 3,
        "hidden_size": 768,
        "num_classes": 4,
        "pooling": "mean",
        "hidden": 256,
        "dropout": 0.2,
        "normalize": False,
        "num_dimensions": 0,
    }
    hidden, mask = _batch()
    head = _head("mean")
    with pytest.raises(ValueError, match="layers"):
        head(hidden[:2], mask)
    with pytest.raises(ValueError, match="mask"):
        head(hidden, mask[:, :5])
    with pytest.raises(ValueError, match="width"):
        head.forward_pooled(torch.zeros(L, B, 2 * D))
    att = _head("attention")
    with pytest.raises(ValueError, match="frames"):
        att.forward_pooled(torch.zeros(L, B, D))
    with pytest.raises(ValueError, match="attention"):
        pool_layers(hidden, mask, "attention")


def test_empty_utterance_is_finite() -> None:
    hidden, mask = _batch()
    mask[3] = False
    for pooling in ("mean", "meanstd", "attention"):
        out = _head(pooling)(hidden, mask)
        assert torch.isfinite(out).all()
