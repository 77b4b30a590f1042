"""What the runtime commands print: :func:`format_prediction` (one ``edgeser predict``
line, also ``POST /v1/predict``'s JSON object) and :func:`stdout_closed` (the reader of
standard output went away)."""

from __future__ import annotations

import io
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeser.runtime.model import Analysis


def stdout_closed() -> int:
    """The reader went away (``edgeser stream ... | head``): stop quietly, exit 0."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    finally:
        os.close(devnull)
    return 0


def format_prediction(path: str, result: Analysis, as_json: bool) -> str:
    """One output line of ``edgeser predict``: ``PATH<TAB>LABEL<TAB>label=p ...`` (then a
    dimensional model's values) and ``status=...`` last; or one JSON object."""
    probs, dimensions = result.probabilities, result.dimensions
    if as_json:
        obj: dict[str, object] = {
            "path": path,
            "label": result.label,
            "probabilities": {k: round(v, 6) for k, v in probs.items()},
        }
        if dimensions is not None:
            obj["dimensions"] = {k: round(v, 6) for k, v in dimensions.items()}
        obj.update(
            status=result.status,
            segments=result.segments,
            speech_seconds=round(result.speech_seconds, 3),
        )
        return json.dumps(obj)
    scores = " ".join(f"{k}={v:.4f}" for k, v in probs.items())
    line = f"{path}\t{result.label}\t{scores}"
    if dimensions is not None:
        line += "\t" + " ".join(f"{k}={v:.4f}" for k, v in dimensions.items())
    return line + f"\tstatus={result.status}"
