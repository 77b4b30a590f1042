"""Report figures are complete PNGs, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure

from edgeser.data.labels import LABELS
from edgeser.evaluation.metrics import compute_metrics, summarize_folds
from edgeser.evaluation.plots import plot_confusion, plot_fold_bars, plot_per_class_recall

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
A, H, N, S = LABELS


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > 1000 and data.endswith(b"IEND\xaeB`\x82")


def _folds(shift: int) -> list[dict]:
    true = [A, A, H, H, N, N, S, S]
    out = []
    for k in range(5):
        pred = list(true)
        for i in range((k + shift) % 4):
            pred[i] = N
        out.append(compute_metrics(true, pred))
    return out


def test_plot_confusion(tmp_path: Path) -> None:
    cm = [[5, 1, 0, 0], [2, 3, 1, 0], [0, 0, 0, 0], [0, 1, 1, 4]]  # empty neutral row
    for normalize in (True, False):
        out = plot_confusion(cm, LABELS, tmp_path / f"cm_{normalize}.png", "t", normalize)
        assert out == tmp_path / f"cm_{normalize}.png" and _is_png(out)
    with pytest.raises(ValueError):
        plot_confusion([[1, 2], [3, 4]], LABELS, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_plot_fold_bars_and_recall(tmp_path: Path) -> None:
    settings = {"iemocap": _folds(0), "iemocap+cremad": _folds(1)}
    bars = plot_fold_bars(settings, path=tmp_path / "folds.png", title="LOSO")
    assert _is_png(bars)
    one = plot_fold_bars({"x": _folds(2)[:1]}, ("ua",), path=tmp_path / "sub" / "one.png")
    assert _is_png(one)
    recall = plot_per_class_recall(
        {
            "iemocap": summarize_folds(settings["iemocap"])["mean"],
            "pooled": compute_metrics([A, H, N, S], [A, A, N, S]),
        },
        tmp_path / "recall.png",
        "recall",
    )
    assert _is_png(recall)
    with pytest.raises(ValueError):
        plot_fold_bars({}, path=tmp_path / "empty.png")
    with pytest.raises(ValueError, match="lacks"):
        plot_fold_bars({"x": [{"wa": 0.5}]}, path=tmp_path / "lacks.png")


def test_nothing_half_written_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cm.png"
    target.write_bytes(b"old")

    def broken_savefig(self: Figure, fname, **kwargs) -> None:
        Path(fname).write_bytes(PNG_SIGNATURE + b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_confusion([[1, 0], [0, 1]], ["a", "b"], target)
    with pytest.raises(RuntimeError):
        plot_fold_bars({"s": _folds(0)}, path=tmp_path / "bars.png")
    # the old file is untouched, no new or temporary files are left behind
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png"]
