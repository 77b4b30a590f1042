"""The models ``--model NAME`` selects, and what each one means.

Two families:

* **SSL models** (``distilhubert``, ``hubert-base``, ``wav2vec2-base``, ``wavlm-base-plus``,
  ``pepino``): a frozen self-supervised encoder, a learnable softmax-weighted sum over all
  its hidden layers, pooling over time and a small MLP (:mod:`edgeser.models.head`). The
  name picks the default encoder; ``--encoder`` replaces it with any source
  :func:`edgeser.models.ssl.load_encoder` accepts. ``--encoder random`` gives random
  weights *of that model's architecture* (``random:wav2vec2-base`` for ``pepino``).
  ``pepino`` is Pepino et al. (2021): wav2vec 2.0 Base with per-speaker feature
  normalisation by default (``--feature-norm global`` or ``none`` to change it).
* **LIGHT-SERNET** (``light-sernet``, Aftab et al. 2022): MFCCs of a fixed-length window
  into a ~0.5 M-parameter fully convolutional network trained from scratch.

``--feature-norm`` (SSL models, pooled features): ``none``; ``global``: every layer's
features standardised with statistics of the training utterances, stored in the model
(so it exports); ``speaker``: standardised with statistics of each speaker's own
utterances, test speakers included (labels are never used, but it needs a speaker's
audio before predicting: such a model is not exportable as a single-utterance graph).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edgeser.core.errors import EdgeserError

__all__ = ["MODELS", "FeatureEncoder", "ModelSpec", "encoder_source", "make_encoder",
           "model_spec", "normalization"]


@runtime_checkable
class FeatureEncoder(Protocol):
    """What the feature cache, training and export take as "an encoder": the SSL
    :class:`~edgeser.models.ssl.Encoder` and LIGHT-SERNET's
    :class:`~edgeser.models.lightsernet.MFCCFrontEnd` both are one.

    ``identity`` names what it computes (weights, settings, arithmetic: the cache key),
    ``source`` where it came from, ``precision`` the arithmetic it ran in; ``encode`` maps
    pre-processed 16 kHz waveforms to one tensor each.
    """

    identity: str
    source: str
    is_random: bool
    precision: str

    def encode(self, waves: Sequence[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class ModelSpec:
    """What a model name stands for."""

    name: str
    family: str  # "ssl" or "cnn"
    encoder: str | None  # default encoder alias (ssl)
    normalize: str  # default normalisation
    description: str
    #: published reference figures from SPEC.md (fractions), for reports and `compare`
    paper: dict[str, float] | None = None
    paper_note: str = ""


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("distilhubert", "ssl", "distilhubert", "none",
                  "frozen DistilHuBERT + weighted layer sum + mean pooling + MLP (the paper)",
                  {"ua": 0.614}, "the paper, IEMOCAP LOSO UA"),
        ModelSpec("hubert-base", "ssl", "hubert-base", "none",
                  "frozen HuBERT Base + the same head",
                  {"wa": 0.6492}, "SUPERB ER, fold-averaged accuracy"),
        ModelSpec("wav2vec2-base", "ssl", "wav2vec2-base", "none",
                  "frozen wav2vec 2.0 Base + the same head",
                  {"wa": 0.6343}, "SUPERB ER, fold-averaged accuracy"),
        ModelSpec("wavlm-base-plus", "ssl", "wavlm-base-plus", "none",
                  "frozen WavLM Base+ + the same head", None, ""),
        ModelSpec("pepino", "ssl", "wav2vec2-base", "speaker",
                  "Pepino et al. 2021: frozen wav2vec 2.0 Base, weighted layer sum, "
                  "per-speaker normalisation, mean pooling, MLP",
                  {"ua": 0.672}, "Pepino et al. 2021, IEMOCAP LOSO UA"),
        ModelSpec("light-sernet", "cnn", None, "none",
                  "LIGHT-SERNET (Aftab et al. 2022): MFCC + 3-path FCNN, trained from scratch",
                  None, ""),
    )
}
NORMALIZATIONS = ("auto", "none", "global", "speaker")


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise EdgeserError(f"unknown model {name!r}; use one of {', '.join(MODELS)}") from None


def encoder_source(cfg: Any) -> str:
    """The encoder source a config resolves to (``auto``: the model's default encoder)."""
    spec = model_spec(cfg.model)
    if spec.family != "ssl":
        return "mfcc"
    text = str(cfg.encoder).strip()
    if text in ("", "auto"):
        return str(spec.encoder)
    if text.lower() == "random" and spec.encoder != "distilhubert":
        return f"random:{spec.encoder}"
    return text


def normalization(cfg: Any) -> str:
    """The feature normalisation a config resolves to (``auto``: the model's default)."""
    spec = model_spec(cfg.model)
    mode = spec.normalize if cfg.feature_norm == "auto" else cfg.feature_norm
    if mode != "none" and spec.family != "ssl":
        raise EdgeserError(f"--feature-norm {mode} applies to SSL-encoder models, not {cfg.model}")
    return mode


def make_encoder(cfg: Any) -> FeatureEncoder:
    """The feature extractor of a config: an :class:`~edgeser.models.ssl.Encoder` for
    SSL models, the MFCC front end for LIGHT-SERNET."""
    # here, not at the top: the registry is read by the config of every command, and
    # models.ssl imports transformers
    if model_spec(cfg.model).family == "cnn":
        from edgeser.models.lightsernet import MFCCConfig, MFCCFrontEnd

        return MFCCFrontEnd(MFCCConfig(seconds=cfg.mfcc_seconds))
    from edgeser.models.ssl import load_encoder

    return load_encoder(encoder_source(cfg), seed=cfg.encoder_seed, precision=cfg.precision)
