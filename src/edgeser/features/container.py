"""The features of a run, in memory: one clean array per utterance and, for training
utterances, their augmented views (:class:`Features`, filled by
:func:`edgeser.experiments.pipeline.compute_features` from the cache or the encoder)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Features"]

#: Statistics of a group of arrays, ``(mean, std)``.
Stats = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, np.ndarray]]
#: One array standardised with a group's ``(mean, std)``.
Standardize = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Features:
    """All features of a run: clean arrays by utt_id and augmented views by utt_id, of
    one :class:`~edgeser.features.kinds.FeatureKind`; ``seconds``: the time they took."""

    kind: str
    clean: dict[str, np.ndarray] = field(default_factory=dict)
    views: dict[str, list[np.ndarray]] = field(default_factory=dict)
    seconds: float = 0.0

    def arrays(
        self, ids: Sequence[str], with_views: bool
    ) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """The clean arrays of ``ids`` in order, and their augmented views (``with_views``
        and when there are views; otherwise an empty list)."""
        views = [self.views[u] for u in ids] if with_views and self.views else []
        return [self.clean[u] for u in ids], views

    def standardized(
        self, groups: Iterable[Sequence[str]], stats: Stats, apply: Standardize
    ) -> Features:
        """Every utterance of ``groups`` (e.g. a speaker's utterances) standardised with
        its group's statistics: ``stats`` of the group's clean arrays, then ``apply`` to
        each clean array and augmented view. Utterances in no group are left out."""
        out = Features(self.kind, seconds=self.seconds)
        for ids in groups:
            mean, std = stats([self.clean[u] for u in ids])
            for u in ids:
                out.clean[u] = apply(self.clean[u], mean, std)
                if u in self.views:
                    out.views[u] = [apply(v, mean, std) for v in self.views[u]]
        return out
