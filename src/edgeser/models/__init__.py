"""Models: the registry of model names, the emotion head, LIGHT-SERNET and the
self-supervised speech encoders (:mod:`edgeser.models.ssl`).

Names load lazily so that ``import edgeser.models.head`` does not pay for ``transformers``.
"""

from __future__ import annotations

from edgeser.core.lazy import lazy_attributes

_EXPORTS = {
    name: ".ssl"
    for name in (
        "ALIASES",
        "DISTILHUBERT_HUB_ID",
        "DISTILHUBERT_NUM_PARAMETERS",
        "Encoder",
        "distilhubert_config",
        "load_encoder",
        "parse_conv_spec",
        "random_encoder",
        "s3prl_to_hf_state_dict",
        "tiny_config",
    )
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
