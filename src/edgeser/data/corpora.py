"""The corpus registry: every corpus edgeser knows, by name, with its recipe, its
synthetic generator and its options (:data:`CORPORA`, :func:`corpus`).

:func:`edgeser.data.recipes.prepare` and :func:`edgeser.data.synth.synthesize_corpus`
dispatch through it, and the command line's corpus choices are its names
(:func:`prepare_names`, :func:`synth_names`). Recipes and generators are named as
``"module:function"`` and imported when used, so reading the registry imports neither
pandas nor numpy (the command line builds its parsers from it in the light install).

Adding a corpus: its recipe module under ``edgeser/data/recipes/`` (a
``prepare_<name>(root, *, all_labels=False, ...)`` returning a manifest) and one
:class:`Corpus` line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeser.core.errors import EdgeserError

__all__ = ["CORPORA", "Corpus", "corpus", "prepare_names", "synth_names"]


@dataclass(frozen=True)
class Corpus:
    """One corpus: how to describe it as a manifest and how to synthesise a stand-in."""

    name: str
    #: ``"module:function"`` of its recipe: ``(root, *, all_labels, **options) -> manifest``
    recipe: str
    #: ``"module:function"`` of its synthetic generator (``(out, *, scale, seed, progress,
    #: workers) -> root``), or None: nothing to synthesise
    synth: str | None = None
    #: :func:`~edgeser.data.recipes.prepare`'s options it takes -> the recipe's keyword
    #: (an option left at None is not passed: the recipe's default holds)
    options: Mapping[str, str] = field(default_factory=dict)
    #: other spellings :func:`corpus` accepts
    aliases: tuple[str, ...] = ()

    def prepare_function(self) -> Callable[..., Any]:
        return _resolve(self.recipe)

    def synth_function(self) -> Callable[..., Any]:
        if self.synth is None:
            raise EdgeserError(
                f"no synthetic {self.name} corpus; one of {', '.join(synth_names())}"
            )
        return _resolve(self.synth)


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


#: Every corpus, in the order the command line lists them.
CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "iemocap",
            "edgeser.data.recipes.iemocap:prepare_iemocap",
            "edgeser.data.synth.corpora:synth_iemocap",
        ),
        Corpus(
            "cremad",
            "edgeser.data.recipes.cremad:prepare_cremad",
            "edgeser.data.synth.corpora:synth_cremad",
            aliases=("crema-d", "crema_d"),
        ),
        Corpus(
            "ravdess",
            "edgeser.data.recipes.ravdess:prepare_ravdess",
            "edgeser.data.synth.corpora:synth_ravdess",
            options={"ravdess_calm": "calm_as"},
        ),
        Corpus("csv", "edgeser.data.recipes.custom:prepare_csv", options={"name": "corpus"}),
    )
}


def corpus(name: str) -> Corpus | None:
    """The corpus called ``name`` (or one of its aliases, any case), None if unknown."""
    key = name.lower()
    for c in CORPORA.values():
        if key == c.name or key in c.aliases:
            return c
    return None


def prepare_names() -> tuple[str, ...]:
    """Corpora with a recipe (``edgeser prepare``'s choices)."""
    return tuple(CORPORA)


def synth_names() -> tuple[str, ...]:
    """Corpora with a synthetic generator (``edgeser synth``'s choices)."""
    return tuple(c.name for c in CORPORA.values() if c.synth is not None)
