"""Synthetic speech-emotion corpora: the toolkit's embedded default data.

The real corpora (IEMOCAP, CREMA-D, RAVDESS) cannot ship. These generators write
stand-ins in each corpus's exact folder layout, file naming, audio format and label-file
format, rendered by a small source-filter voice whose prosody and voice quality follow
acted emotion (:mod:`edgeser.data.synth.voice`, :mod:`edgeser.data.synth.emotion`).

>>> from edgeser.data.synth import synthesize_corpus
>>> root = synthesize_corpus("ravdess", "data/ravdess", scale="small")  # doctest: +SKIP
"""

from .corpora import (
    CORPORA,
    CREMAD_SENTENCES,
    RAVDESS_STATEMENTS,
    SCALES,
    cremad_demographics,
    synth_cremad,
    synth_iemocap,
    synth_ravdess,
    synthesize_corpus,
)
from .emotion import (
    EMOTIONS,
    STYLES,
    CorpusStyle,
    EmotionProfile,
    SpeakerProfile,
    make_speaker,
    utterance_settings,
)
from .planning import VoiceSettings
from .voice import Channel, synthesize

__all__ = [
    "CORPORA",
    "CREMAD_SENTENCES",
    "EMOTIONS",
    "RAVDESS_STATEMENTS",
    "SCALES",
    "STYLES",
    "Channel",
    "CorpusStyle",
    "EmotionProfile",
    "SpeakerProfile",
    "VoiceSettings",
    "cremad_demographics",
    "make_speaker",
    "synth_cremad",
    "synth_iemocap",
    "synth_ravdess",
    "synthesize",
    "synthesize_corpus",
    "utterance_settings",
]
