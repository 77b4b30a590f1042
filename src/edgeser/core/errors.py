"""Exceptions that the CLI turns into one clear error line and a non-zero exit."""

from __future__ import annotations


class EdgeserError(Exception):
    """A user-facing error: bad input, a wrong path, an invalid corpus or split.

    The CLI prints ``edgeser: error: <message>`` and exits with status 2; library
    callers can catch it like any exception.
    """


class CorpusError(EdgeserError):
    """ROOT is not the corpus it claims to be, or a manifest cannot be built."""


class AudioError(EdgeserError):
    """An audio file is unreadable, empty or in a format that cannot be used."""


class SplitError(EdgeserError):
    """A split or manifest breaks an invariant (duplicate ids, speaker leakage, ...)."""
