"""Corpus recipes: one ``prepare_<corpus>(root) -> manifest`` function per corpus.

A recipe only describes the data (no splitting, resampling or filtering beyond
the four-class selection); it reports what it had to leave out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from edgeser.data.recipes.cremad import prepare_cremad
from edgeser.data.recipes.custom import prepare_csv
from edgeser.data.recipes.iemocap import prepare_iemocap
from edgeser.data.recipes.ravdess import prepare_ravdess

CORPORA = ("iemocap", "cremad", "ravdess", "csv")


def prepare(
    corpus: str,
    root: str | Path,
    *,
    all_labels: bool = False,
    ravdess_calm: str | None = None,
    name: str | None = None,
) -> pd.DataFrame:
    """Dispatch to the recipe for ``corpus`` (``csv`` imports a user's own CSV)."""
    if corpus == "iemocap":
        return prepare_iemocap(root, all_labels=all_labels)
    if corpus == "cremad":
        return prepare_cremad(root, all_labels=all_labels)
    if corpus == "ravdess":
        return prepare_ravdess(root, all_labels=all_labels, calm_as=ravdess_calm)
    if corpus == "csv":
        return prepare_csv(root, corpus=name or "custom", all_labels=all_labels)
    raise ValueError(f"unknown corpus {corpus!r}; expected one of {', '.join(CORPORA)}")


__all__ = [
    "CORPORA",
    "prepare",
    "prepare_cremad",
    "prepare_csv",
    "prepare_iemocap",
    "prepare_ravdess",
]
