"""The records an evaluation hands on: a model's per-utterance test predictions
(:class:`Predictions`), one trained-and-tested fold (:class:`FoldResult`), and the
predictions CSV (:func:`write_predictions`).

Their JSON forms are fixed: a fold's ``record.json`` (the fold cache of
:func:`edgeser.experiments.pipeline.run_split_cached`) is :meth:`FoldResult.to_json`, the
fold's entry in ``results.json`` is :meth:`FoldResult.record`, and the predictions are
its ``"_pred"`` (:meth:`Predictions.to_json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from edgeser.core.io import atomic_path
from edgeser.data.labels import DIMENSIONS, LABELS
from edgeser.evaluation.confidence import Calibration

__all__ = ["FoldResult", "Predictions", "write_predictions"]


@dataclass
class Predictions:
    """A model's predictions on a test set, by utterance (class indices into
    :data:`~edgeser.data.labels.LABELS`): the calibrated ``probs`` (those the labels
    ``y_pred`` come from) and the ``probs_raw`` before calibration; with the dimensional
    output, the predicted ``dims`` and the ratings ``dims_true`` (``None`` where an
    utterance has none), rows in :data:`~edgeser.data.labels.DIMENSIONS` order."""

    ids: list[str]
    y_true: list[int]
    y_pred: list[int]
    probs: list[list[float]]
    probs_raw: list[list[float]]
    dims: list[list[float]] | None = None
    dims_true: list[list[float | None]] | None = None

    def to_json(self) -> dict[str, Any]:
        """The predictions as JSON (a fold record's ``"_pred"``); without the
        dimensional output, no ``dims`` and ``dims_true``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.dims is None:
            del out["dims"], out["dims_true"]
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Predictions:
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})


@dataclass(kw_only=True)
class FoldResult:
    """One split trained on its training part, selected on its validation part and
    tested on its test part: who was where, how training went, the test metrics (with
    the calibration and dimensional metrics when there are), and the test predictions."""

    name: str
    test_session: str | None
    train_speakers: list[str]
    val_speakers: list[str]
    test_speakers: list[str]
    n_train: int
    n_val: int
    n_test: int
    split_sha256: str
    best_epoch: int
    train_seconds: float
    #: One entry per epoch (:class:`edgeser.training.trainer.FitResult`'s ``history``).
    history: list[dict[str, Any]]
    #: :func:`edgeser.evaluation.metrics.compute_metrics` on the test predictions.
    metrics: dict[str, Any]
    calibration: Calibration | None = None
    #: :func:`edgeser.evaluation.dimensions.dimension_metrics` on the test ratings.
    dimensions: dict[str, Any] | None = None
    predictions: Predictions

    def record(self) -> dict[str, Any]:
        """The fold's entry in ``results.json``: every field but the predictions, in
        order; ``calibration`` and ``dimensions`` only when there are."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "predictions"}
        for optional in ("calibration", "dimensions"):
            if out[optional] is None:
                del out[optional]
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_json()
        return out

    def to_json(self, key: str) -> dict[str, Any]:
        """The fold's ``record.json``: :meth:`record`, the predictions (``"_pred"``) and
        the ``key`` of the config and split it was computed for (``"_key"``)."""
        return {**self.record(), "_pred": self.predictions.to_json(), "_key": key}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FoldResult:
        """A fold read back from its ``record.json`` (``KeyError``/``TypeError`` when an
        entry is missing or malformed)."""
        values = {f.name: doc[f.name] for f in fields(cls) if f.name in doc}
        values["predictions"] = Predictions.from_json(doc["_pred"])
        if values.get("calibration") is not None:
            values["calibration"] = Calibration.from_json(values["calibration"])
        return cls(**values)


def write_predictions(path: Path, named: Mapping[str, Predictions]) -> None:
    """Per-utterance predictions of every fold (name → predictions, in order) as CSV, for
    error analysis; with the dimensional output, ``pred_<dimension>`` and the rating
    (empty where there is none)."""
    rows = []
    for name, p in named.items():
        for i, (uid, t, y, pr) in enumerate(zip(p.ids, p.y_true, p.y_pred, p.probs, strict=True)):
            row = {
                "fold": name,
                "utt_id": uid,
                "label": LABELS[t],
                "predicted": LABELS[y],
                **{f"p_{c}": round(v, 6) for c, v in zip(LABELS, pr, strict=True)},
            }
            if p.dims is not None:
                row.update(
                    {f"pred_{d}": round(v, 6) for d, v in zip(DIMENSIONS, p.dims[i], strict=True)}
                )
                true = p.dims_true or [[None] * len(DIMENSIONS)] * len(p.ids)
                row.update(
                    {
                        d: (None if v is None else round(v, 6))
                        for d, v in zip(DIMENSIONS, true[i], strict=True)
                    }
                )
            rows.append(row)
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
