"""Report figures: confusion matrices, per-fold metric bars, per-class recall, the
dimensional output (predicted valence against arousal).

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global
backend switch, safe in threads and on headless machines) and written atomically: a PNG
appears under its final name only once it is complete. Every function returns the path
it wrote.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edgeser.core.io import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "plot_confusion",
    "plot_fold_bars",
    "plot_pareto",
    "plot_per_class_recall",
    "plot_reliability",
    "plot_valence_arousal",
]

_METRIC_TITLES = {"wa": "WA", "ua": "UA", "macro_f1": "macro-F1"}
_DPI = 120


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically."""
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    logger.info("wrote %s", target)
    return target


def plot_confusion(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    normalize: bool = True,
) -> Path:
    """Confusion matrix (rows = true, columns = predicted) as a heat map.

    With ``normalize`` the colours are row-normalised (recall per true class) and each cell
    shows the percentage and the count; a row without examples stays 0.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(labels)
    if cm.shape != (k, k):
        raise ValueError(f"confusion must be {k}x{k} for labels {list(labels)}, got {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0) if normalize else cm

    fig = _new_figure(1.2 * k + 1.8, 1.1 * k + 1.2)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(int(cm.max()), 1)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for i in range(k):
        for j in range(k):
            frac = shown[i, j] / vmax
            text = f"{100 * shown[i, j]:.0f}%\n({cm[i, j]})" if normalize else str(cm[i, j])
            colour = "white" if frac > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(k), labels=list(labels), rotation=30, ha="right")
    ax.set_yticks(range(k), labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion (row-normalised)" if normalize else "confusion"))
    return _save(fig, path)


def plot_fold_bars(
    per_setting: Mapping[str, Sequence[Mapping[str, Any]]],
    metric_names: Sequence[str] = ("wa", "ua", "macro_f1"),
    *,
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Grouped bars per fold, one colour per training setting, one panel per metric.

    ``per_setting`` maps a setting name (e.g. ``"iemocap"``, ``"iemocap+cremad"``) to its
    per-fold metrics dicts (:func:`~edgeser.evaluation.metrics.compute_metrics`). A dashed line
    in the setting's colour marks its mean over folds; values are shown in percent.
    """
    if not per_setting:
        raise ValueError("no settings to plot")
    if not metric_names:
        raise ValueError("no metrics to plot")
    for name, folds in per_setting.items():
        if not folds:
            raise ValueError(f"setting {name!r} has no folds")
        for k, m in enumerate(folds):
            missing = [key for key in metric_names if key not in m]
            if missing:
                raise ValueError(f"setting {name!r} fold {k + 1} lacks {', '.join(missing)}")
    n_folds = max(len(f) for f in per_setting.values())
    n_set = len(per_setting)
    width = 0.8 / n_set
    fig = _new_figure(max(4.0, 0.9 * n_folds + 1.5) * len(metric_names), 4.0)
    axes = fig.subplots(1, len(metric_names), squeeze=False)[0]
    colours = [f"C{i}" for i in range(n_set)]
    x = np.arange(n_folds)
    for ax, metric in zip(axes, metric_names, strict=True):
        for s, (name, folds) in enumerate(per_setting.items()):
            values = np.array([100.0 * float(m[metric]) for m in folds])
            offset = (s - (n_set - 1) / 2) * width
            ax.bar(x[: len(values)] + offset, values, width, color=colours[s], label=name)
            mean = float(values.mean())
            ax.axhline(mean, color=colours[s], linestyle="--", linewidth=1)
            ax.annotate(
                f"{mean:.1f}",
                xy=(1.0, mean),
                xycoords=("axes fraction", "data"),
                xytext=(2, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color=colours[s],
            )
        ax.set_xticks(x, labels=[f"fold {i + 1}" for i in range(n_folds)], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
        ax.set_title(_METRIC_TITLES.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    fig.legend(
        *axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=n_set, fontsize=8
    )
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_per_class_recall(
    metrics_by_name: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Per-class recall, grouped by class, one bar per named evaluation.

    Each value is a metrics dict with ``labels`` and ``per_class`` (a
    :func:`~edgeser.evaluation.metrics.compute_metrics` result or a fold-summary mean).
    """
    if not metrics_by_name:
        raise ValueError("no metrics to plot")
    labels = list(next(iter(metrics_by_name.values()))["labels"])
    for name, m in metrics_by_name.items():
        if list(m["labels"]) != labels:
            raise ValueError(f"{name!r} has labels {list(m['labels'])}, expected {labels}")
    n = len(metrics_by_name)
    width = 0.8 / n
    fig = _new_figure(max(4.5, 1.3 * len(labels) + 1.5), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    for s, (name, m) in enumerate(metrics_by_name.items()):
        values = [100.0 * float(m["per_class"][lab]["recall"]) for lab in labels]
        bars = ax.bar(x + (s - (n - 1) / 2) * width, values, width, color=f"C{s}", label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(x, labels=labels)
    ax.set_ylim(0, 105)
    ax.set_ylabel("recall (%)")
    ax.set_title(title or "per-class recall")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reliability(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin of the top
    probability (:func:`edgeser.evaluation.confidence.reliability` bins), one line per named
    curve (e.g. before and after calibration), the diagonal for perfect calibration."""
    fig = _new_figure(4.2, 4.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    for k, (name, bins) in enumerate(curves.items()):
        full = [b for b in bins if b["n"]]
        ax.plot(
            [b["confidence"] for b in full],
            [b["accuracy"] for b in full],
            marker="o",
            color=f"C{k}",
            label=name,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "reliability")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_pareto(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """UA (mean ± sd over folds) against parameter count, Pareto-front models joined.

    ``rows``: dicts with ``model``, ``parameters``, ``mean``/``std`` (``ua``) and ``pareto``.
    """
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for r in rows:
        x, y, e = r["parameters"] / 1e6, 100 * r["mean"]["ua"], 100 * r["std"]["ua"]
        colour = "tab:red" if r.get("pareto") else "tab:grey"
        ax.errorbar([x], [y], yerr=[e], fmt="o", color=colour, capsize=3)
        ax.annotate(str(r["model"]), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = sorted((r["parameters"] / 1e6, 100 * r["mean"]["ua"]) for r in rows if r.get("pareto"))
    if len(front) > 1:
        ax.step(
            [p[0] for p in front],
            [p[1] for p in front],
            where="post",
            color="tab:red",
            alpha=0.6,
            label="Pareto front",
        )
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("UA (%)")
    ax.set_title("Accuracy vs size")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_valence_arousal(
    valence: Sequence[float] | np.ndarray,
    arousal: Sequence[float] | np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    order: Sequence[str] | None = None,
) -> Path:
    """Predicted valence (x) against predicted arousal (y), one point per utterance,
    coloured by its true class, with each class's mean as a large marker."""
    v = np.asarray(valence, np.float64)
    a = np.asarray(arousal, np.float64)
    lab = np.asarray(list(labels), dtype=object)
    if not len(v) == len(a) == len(lab):
        raise ValueError(f"{len(v)} valence, {len(a)} arousal and {len(lab)} labels")
    if len(v) == 0:
        raise ValueError("no predictions to plot")
    classes = [c for c in (order or sorted(set(lab))) if c in set(lab)]
    fig = _new_figure(4.6, 4.2)
    ax = fig.add_subplot()
    for i, c in enumerate(classes):
        sel = lab == c
        ax.scatter(
            v[sel],
            a[sel],
            s=10,
            alpha=0.45,
            color=f"C{i}",
            label=f"{c} (n {sel.sum()})",
            edgecolors="none",
        )
        ax.scatter(
            [v[sel].mean()],
            [a[sel].mean()],
            s=120,
            color=f"C{i}",
            marker="X",
            edgecolors="black",
            linewidths=0.8,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted valence (0 negative … 1 positive)")
    ax.set_ylabel("predicted arousal (0 calm … 1 excited)")
    ax.set_title(title or "valence vs arousal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", title="true class (X: mean)", title_fontsize=7)
    return _save(fig, path)
