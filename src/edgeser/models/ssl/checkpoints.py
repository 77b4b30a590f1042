"""What loading a checkpoint of either kind (Hugging Face folder, s3prl pickle) shares:
error wording and the optional mask embedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgeser.models.ssl.configs import OPTIONAL_KEYS


def zero_optional(model: nn.Module) -> None:
    """Give parameters a checkpoint may lack (the mask embedding) a deterministic value."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in OPTIONAL_KEYS:
                param.zero_()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for
    one-line errors about a checkpoint that does not load."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_keys(
    *,
    missing: Sequence[str] = (),
    unexpected: Sequence[str] = (),
    mismatched: Sequence[str] = (),
    limit: int = 5,
) -> str:
    """``"(missing: a, b; unexpected: c; ...)"``: the state-dict keys a checkpoint lacks,
    has in excess or has with the wrong shape, at most ``limit`` of each named."""
    parts = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch", mismatched),
    ):
        if keys:
            shown = ", ".join(keys[:limit]) + (
                f", ... ({len(keys)} in all)" if len(keys) > limit else ""
            )
            parts.append(f"{label}: {shown}")
    return "(" + "; ".join(parts) + ")"
