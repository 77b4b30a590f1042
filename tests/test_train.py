"""The trainer on its own: it learns separable features, selects the epoch by validation
UA, keeps the last epoch without a validation set, draws views, and resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.data.labels import LABELS
from edgeser.evaluate.metrics import compute_metrics
from edgeser.features import FeatureKind
from edgeser.models.head import EmotionHead, HeadConfig
from edgeser.train.trainer import FeatureSet, SERModel, fit, predict

LAYERS, WIDTH = 3, 8


def _pooled(n: int, seed: int, *, views: int = 0, noise: float = 0.3) -> FeatureSet:
    """Pooled features ``[L, 2D]`` whose class shows in one coordinate per class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(LABELS)
    rng.shuffle(labels)

    def sample(y: int) -> np.ndarray:
        x = noise * rng.standard_normal((LAYERS, 2 * WIDTH)).astype(np.float32)
        x[:, y] += 1.0
        return x

    clean = [sample(int(y)) for y in labels]
    view_list = [[sample(int(y)) for _ in range(views)] for y in labels] if views else []
    return FeatureSet(FeatureKind.POOLED, [f"u{i}" for i in range(n)], labels, clean,
                      view_list)


def _model(seed: int = 0) -> SERModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = EmotionHead(HeadConfig(num_layers=LAYERS, hidden_size=WIDTH,
                                      num_classes=len(LABELS), pooling="meanstd",
                                      hidden=16, dropout=0.0))
    return SERModel(head, kind=FeatureKind.POOLED)


def _cfg(**kw) -> TrainConfig:
    base = {"precision": "fp32", "pooling": "meanstd", "epochs": 8, "batch_size": 8,
            "lr": 3e-2}
    return TrainConfig(**{**base, **kw})


def test_learns_and_selects_the_best_validation_epoch(tmp_path) -> None:
    train, val, test = _pooled(64, 0, views=2), _pooled(24, 1), _pooled(40, 2)
    result = fit(_cfg(), _model(), train, val, tmp_path / "run", progress=False)
    assert len(result.history) == 8
    # the best validation UA, ties broken by the lower validation loss
    scores = [(h["val_ua"], -h["val_loss"]) for h in result.history]
    assert result.best_epoch == max(range(8), key=lambda e: scores[e])
    probs, _ = predict(result.model, test, _cfg())
    assert probs.shape == (40, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert compute_metrics(test.labels, probs.argmax(1))["ua"] >= 0.9


def test_without_validation_the_last_epoch_is_kept(tmp_path) -> None:
    result = fit(_cfg(epochs=3), _model(), _pooled(32, 3), None, tmp_path / "run",
                 progress=False)
    assert result.best_epoch == 2 and all("val_ua" not in h for h in result.history)


def test_resume_continues_where_it_stopped_and_matches_one_run(tmp_path) -> None:
    train, val = _pooled(48, 4, views=2), _pooled(16, 5)
    whole = fit(_cfg(epochs=6), _model(), train, val, tmp_path / "a", progress=False)
    first = fit(_cfg(epochs=3), _model(), train, val, tmp_path / "b", progress=False)
    assert first.resumed_from == 0
    second = fit(_cfg(epochs=6), _model(), train, val, tmp_path / "b", progress=False)
    assert second.resumed_from == 3
    assert [h["train_loss"] for h in second.history] == pytest.approx(
        [h["train_loss"] for h in whole.history], rel=1e-6)
    for a, b in zip(whole.model.state_dict().values(), second.model.state_dict().values(),
                    strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # another split (other utterance ids) in the same folder starts over, not resumes
    part = FeatureSet(train.kind, train.ids[:40], train.labels[:40], train.clean[:40],
                      train.views[:40])
    other = fit(_cfg(epochs=6), _model(), part, val, tmp_path / "b", progress=False)
    assert other.resumed_from == 0


def test_refuses_empty_data_and_missing_classes(tmp_path) -> None:
    data = _pooled(8, 6)
    keep = [i for i, y in enumerate(data.labels) if y != 0]
    no_angry = FeatureSet(data.kind, [data.ids[i] for i in keep], data.labels[keep],
                          [data.clean[i] for i in keep])
    with pytest.raises(EdgeserError, match="angry has no training examples"):
        fit(_cfg(), _model(), no_angry, None, tmp_path / "x", progress=False)
    empty = FeatureSet(data.kind, [], np.zeros(0, np.int64), [])
    with pytest.raises(EdgeserError, match="empty"):
        fit(_cfg(), _model(), empty, None, tmp_path / "y", progress=False)
