"""Implementation modules; the public API is re-exported from :mod:`edgeser`."""
