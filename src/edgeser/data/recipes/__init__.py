"""Corpus recipes: one ``prepare_<corpus>(root) -> manifest`` function per corpus, each
registered in :mod:`edgeser.data.corpora`.

A recipe only describes the data (no splitting, resampling or filtering beyond
the four-class selection); it reports what it had to leave out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from edgeser.data.corpora import CORPORA as REGISTRY
from edgeser.data.corpora import prepare_names
from edgeser.data.recipes.cremad import prepare_cremad
from edgeser.data.recipes.custom import prepare_csv
from edgeser.data.recipes.iemocap import prepare_iemocap
from edgeser.data.recipes.ravdess import prepare_ravdess

#: Corpora with a recipe, from the corpus registry (:mod:`edgeser.data.corpora`).
CORPORA = prepare_names()


def prepare(
    corpus: str,
    root: str | Path,
    *,
    all_labels: bool = False,
    ravdess_calm: str | None = None,
    name: str | None = None,
) -> pd.DataFrame:
    """Dispatch to the recipe for ``corpus`` (``csv`` imports a user's own CSV), looked up
    in the corpus registry; ``ravdess_calm`` and ``name`` go to the recipes that take them
    (:attr:`Corpus.options <edgeser.data.corpora.Corpus>`)."""
    entry = REGISTRY.get(corpus)
    if entry is None:
        raise ValueError(f"unknown corpus {corpus!r}; expected one of {', '.join(CORPORA)}")
    given = {"ravdess_calm": ravdess_calm, "name": name}
    options = {kw: given[opt] for opt, kw in entry.options.items() if given[opt] is not None}
    return entry.prepare_function()(root, all_labels=all_labels, **options)


__all__ = [
    "CORPORA",
    "prepare",
    "prepare_cremad",
    "prepare_csv",
    "prepare_iemocap",
    "prepare_ravdess",
]
