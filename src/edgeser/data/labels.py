"""Canonical emotion labels and the explicit per-corpus label maps.

Every corpus is mapped onto the same four classes. A raw label that is not in a
corpus's table is outside the four-class task (``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: The four canonical classes, in the fixed order used for model outputs,
#: confusion matrices and reports.
LABELS: tuple[str, ...] = ("angry", "happy", "neutral", "sad")
#: The dimensions a ``--dimensions`` model regresses (IEMOCAP's ratings on [0, 1]), in the
#: order of its ``dimensions`` output.
DIMENSIONS: tuple[str, ...] = ("arousal", "valence", "dominance")

#: IEMOCAP majority labels (summary lines of ``EmoEvaluation/*.txt``).
#: ``exc`` (excited) is merged into happy, as in the paper and most of the
#: literature; ``fru sur fea dis oth xxx`` are outside the task.
IEMOCAP_LABELS: Mapping[str, str] = MappingProxyType(
    {"ang": "angry", "hap": "happy", "exc": "happy", "neu": "neutral", "sad": "sad"}
)
#: Every majority label that may appear in an IEMOCAP summary line.
IEMOCAP_RAW_LABELS: frozenset[str] = frozenset(
    {"ang", "hap", "exc", "neu", "sad", "fru", "sur", "fea", "dis", "oth", "xxx"}
)

#: CREMA-D emotion codes in the file name; DIS and FEA are outside the task.
CREMAD_LABELS: Mapping[str, str] = MappingProxyType(
    {"ANG": "angry", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
)
CREMAD_RAW_LABELS: frozenset[str] = frozenset({"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"})

#: RAVDESS emotion codes (third field of the file name) and their names.
RAVDESS_EMOTIONS: Mapping[str, str] = MappingProxyType(
    {
        "01": "neutral",
        "02": "calm",
        "03": "happy",
        "04": "sad",
        "05": "angry",
        "06": "fearful",
        "07": "disgust",
        "08": "surprised",
    }
)
#: RAVDESS names onto the task. Calm is NOT neutral by default.
RAVDESS_LABELS: Mapping[str, str] = MappingProxyType(
    {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry"}
)


def ravdess_label_map(calm_as: str | None = None) -> dict[str, str]:
    """RAVDESS label table; ``calm_as="neutral"`` merges calm into neutral."""
    table = dict(RAVDESS_LABELS)
    if calm_as is not None:
        if calm_as not in LABELS:
            raise ValueError(f"--ravdess-calm must be one of {', '.join(LABELS)}, got {calm_as!r}")
        table["calm"] = calm_as
    return table


def label_index(label: str) -> int:
    """Position of a canonical label in :data:`LABELS`."""
    try:
        return LABELS.index(label)
    except ValueError:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}") from None
