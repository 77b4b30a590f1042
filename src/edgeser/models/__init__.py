"""Models: the speech encoder and the emotion head.

Names are imported lazily so that ``import edgeser.models.head`` does not pay for
importing ``transformers``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ALIASES": "encoder",
    "DISTILHUBERT_HUB_ID": "encoder",
    "DISTILHUBERT_NUM_PARAMETERS": "encoder",
    "Encoder": "encoder",
    "distilhubert_config": "encoder",
    "load_encoder": "encoder",
    "parse_conv_spec": "encoder",
    "random_encoder": "encoder",
    "s3prl_to_hf_state_dict": "encoder",
    "tiny_config": "encoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
