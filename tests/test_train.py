"""The trainer on its own: it learns separable features, selects the epoch by validation
UA, keeps the last epoch without a validation set, draws views, and resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.data.labels import LABELS
from edgeser.evaluation.metrics import compute_metrics
from edgeser.features import FeatureKind
from edgeser.models.head import EmotionHead, HeadConfig
from edgeser.training.trainer import FeatureSet, SERModel, fit, predict

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
    return FeatureSet(FeatureKind.POOLED, [f"u{i}" for i in range(n)], labels, clean, view_list)


def _model(seed: int = 0) -> SERModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = EmotionHead(
            HeadConfig(
                num_layers=LAYERS,
                hidden_size=WIDTH,
                num_classes=len(LABELS),
                pooling="meanstd",
                hidden=16,
                dropout=0.0,
            )
        )
    return SERModel(head, kind=FeatureKind.POOLED)


def _cfg(**kw) -> TrainConfig:
    base = {"precision": "fp32", "pooling": "meanstd", "epochs": 8, "batch_size": 8, "lr": 3e-2}
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
    result = fit(_cfg(epochs=3), _model(), _pooled(32, 3), None, tmp_path / "run", progress=False)
    assert result.best_epoch == 2 and all("val_ua" not in h for h in result.history)


def test_resume_continues_where_it_stopped_and_matches_one_run(tmp_path) -> None:
    train, val = _pooled(48, 4, views=2), _pooled(16, 5)
    whole = fit(_cfg(epochs=6), _model(), train, val, tmp_path / "a", progress=False)
    first = fit(_cfg(epochs=3), _model(), train, val, tmp_path / "b", progress=False)
    assert first.resumed_from == 0
    second = fit(_cfg(epochs=6), _model(), train, val, tmp_path / "b", progress=False)
    assert second.resumed_from == 3
    assert [h["train_loss"] for h in second.history] == pytest.approx(
        [h["train_loss"] for h in whole.history], rel=1e-6
    )
    for a, b in zip(
        whole.model.state_dict().values(), second.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6)
    # another split (other utterance ids) in the same folder starts over, not resumes
    part = FeatureSet(
        train.kind, train.ids[:40], train.labels[:40], train.clean[:40], train.views[:40]
    )
    other = fit(_cfg(epochs=6), _model(), part, val, tmp_path / "b", progress=False)
    assert other.resumed_from == 0


def test_refuses_empty_data_and_missing_classes(tmp_path) -> None:
    data = _pooled(8, 6)
    keep = [i for i, y in enumerate(data.labels) if y != 0]
    no_angry = FeatureSet(
        data.kind, [data.ids[i] for i in keep], data.labels[keep], [data.clean[i] for i in keep]
    )
    with pytest.raises(EdgeserError, match="angry has no training examples"):
        fit(_cfg(), _model(), no_angry, None, tmp_path / "x", progress=False)
    empty = FeatureSet(data.kind, [], np.zeros(0, np.int64), [])
    with pytest.raises(EdgeserError, match="empty"):
        fit(_cfg(), _model(), empty, None, tmp_path / "y", progress=False)


def test_early_stopping_restores_the_best_epoch_and_stays_stopped(tmp_path) -> None:
    """With patience P, training stops after P epochs without a better validation UA,
    the best epoch's weights are the model's, and a resumed run does not train on."""
    from safetensors.torch import load_file

    train, val = _pooled(64, 7, noise=0.2), _pooled(24, 8, noise=0.2)
    cfg = _cfg(epochs=40, patience=3)
    result = fit(cfg, _model(), train, val, tmp_path / "run", progress=False)
    n = len(result.history)
    assert n < 40 and n == result.best_epoch + 1 + 3  # the best epoch, then 3 without gain
    scores = [(h["val_ua"], -h["val_loss"]) for h in result.history]
    assert result.best_epoch == max(range(n), key=lambda e: scores[e])
    best = load_file(str(tmp_path / "run" / "best.safetensors"))
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, best[k])
    again = fit(cfg, _model(), train, val, tmp_path / "run", progress=False)
    assert len(again.history) == n and again.best_epoch == result.best_epoch
    # the same run without early stopping trains every epoch and selects the same way
    full = fit(
        _cfg(epochs=n + 2, patience=0), _model(), train, val, tmp_path / "full", progress=False
    )
    assert len(full.history) == n + 2
    assert [h["train_loss"] for h in full.history[:n]] == pytest.approx(
        [h["train_loss"] for h in result.history], rel=1e-6
    )


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, caplog) -> None:
    """Without a terminal, every epoch is a log line with the fold, the epoch, the
    validation UA and an ETA (here at every update: EDGESER_PROGRESS_SECONDS=0)."""
    import logging

    from edgeser.core import progress

    monkeypatch.setenv("EDGESER_PROGRESS_SECONDS", "0")
    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    monkeypatch.setattr("edgeser.training.trainer.is_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="edgeser.progress"):
        fit(
            _cfg(epochs=3),
            _model(),
            _pooled(32, 9),
            _pooled(16, 10),
            tmp_path / "fold2",
            progress=True,
        )
        with progress.progress_bar(5, "encoding", unit="utt") as bar:
            for _ in range(5):
                bar.update(1)
    lines = [r.getMessage() for r in caplog.records if r.name == "edgeser.progress"]
    epochs = [ln for ln in lines if ln.startswith("fold2: epoch")]
    assert [ln.split(",")[0] for ln in epochs] == [
        "fold2: epoch 1/3",
        "fold2: epoch 2/3",
        "fold2: epoch 3/3",
    ]
    assert all("val UA " in ln and "(best " in ln for ln in epochs)
    assert "ETA " in epochs[0] and epochs[-1].endswith("done")
    encoding = [ln for ln in lines if ln.startswith("encoding")]
    assert encoding[0].startswith("encoding: 1/5 utt (20 %)") and "ETA" in encoding[0]
    assert encoding[-1].startswith("encoding: 5/5 utt done in")
    assert progress.format_seconds(3725) == "1h02m" and progress.format_seconds(65) == "1m05s"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgeser.progress"):  # progress off: silent
        fit(_cfg(epochs=2), _model(), _pooled(32, 9), None, tmp_path / "q", progress=False)
    assert not caplog.records
