"""Package attributes that load their module on first use (PEP 562).

A package whose ``__init__`` would otherwise import torch, transformers or onnx for every
name keeps the light ones light (``edgeser.models``, ``edgeser.exporting``: the command line
of the torch-free runtime install builds ``edgeser export``'s parser). A public name must
not also be the name of a sub-module: importing the sub-module would shadow it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to the
    module (absolute, or relative to ``package`` when it starts with a dot) that holds it."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
