"""The models ``--model NAME`` selects, and what each one means.

Three families (their behaviour: :mod:`edgeser.models.families`):

* **SSL models** (``distilhubert``, ``hubert-base``, ``wav2vec2-base``, ``wavlm-base-plus``,
  ``pepino``): a frozen self-supervised encoder, a learnable softmax-weighted sum over all
  its hidden layers, pooling over time and a small MLP (:mod:`edgeser.models.head`). The
  name picks the default encoder; ``--encoder`` replaces it with any source
  :func:`edgeser.models.ssl.load_encoder` accepts. ``--encoder random`` gives random
  weights *of that model's architecture* (``random:wav2vec2-base`` for ``pepino``).
  ``pepino`` is Pepino et al. (2021): wav2vec 2.0 Base with per-speaker feature
  normalisation by default (``--feature-norm global`` or ``none`` to change it).
* **LIGHT-SERNET** (``light-sernet``, Aftab et al. 2022): MFCCs of a fixed-length window
  into a ~0.5 M-parameter fully convolutional network trained from scratch, with the
  authors' training recipe as its defaults (:data:`LIGHT_SERNET_DEFAULTS`).
* **eGeMAPS** (``egemaps``, Eyben et al. 2016): openSMILE's 88 eGeMAPSv02 functionals per
  utterance and a multinomial logistic regression (:mod:`edgeser.models.egemaps`,
  :mod:`edgeser.training.linear`): the interpretable baseline of the SER literature.

A model's :attr:`ModelSpec.defaults` are the training settings that differ for it from the
paper's (DistilHuBERT) values; a config field left unset takes them (see
:mod:`edgeser.config`).

LIGHT-SERNET normalises per speaker by default (``speaker``: per-speaker BatchNorm
statistics; transductive, like Pepino's normalisation): with the training speakers'
statistics it stays near chance on an unseen RAVDESS speaker (validation UA 0.25-0.28 over
the first epochs of a 12-actor fold, against 0.72 per speaker); ``--feature-norm none``
gives the exportable network.

``--feature-norm`` (SSL models, pooled features; eGeMAPS functionals): ``none``;
``global``: every layer's features (every functional) standardised with statistics of the
training utterances, stored in the model (so it exports); ``speaker``: standardised with
statistics of each speaker's own utterances, test speakers included (labels are never
used, but it needs a speaker's audio before predicting: such a model is not exportable as
a single-utterance graph).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from edgeser.audio.frontend import FrontEnd
from edgeser.core.errors import EdgeserError
from edgeser.models.families import CNN, FUNCTIONALS, SSL, ModelFamily

__all__ = [
    "FAMILIES",
    "LIGHT_SERNET_AUTHORS",
    "LIGHT_SERNET_DEFAULTS",
    "MODELS",
    "FeatureEncoder",
    "ModelSpec",
    "encoder_source",
    "make_encoder",
    "model_family",
    "model_spec",
    "normalization",
    "signal_front_end",
]

#: LIGHT-SERNET's training as the authors' code runs it (github.com/AryaAftab/LIGHT-SERNET,
#: ``hyperparameters.py``, ``train.py``, ``callbacks.py``, ``models.py``); each value's
#: origin and the deliberate differences are listed in :mod:`edgeser.models.lightsernet`.
LIGHT_SERNET_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",  # train.py: tf.keras.optimizers.Adam
    "lr": 1e-4,  # hyperparameters.LEARNING_RATE
    "lr_decay_start": 50,  # hyperparameters.LEARNING_RATE_DECAY_STRATPOINT
    "lr_decay_every": 20,  # hyperparameters.LEARNING_RATE_DECAY_STEP
    "lr_decay_rate": 0.15,  # -hyperparameters.LEARNING_RATE_DECAY_PARAMETERS
    "weight_decay": 1e-6,  # hyperparameters.L2 (kernel_regularizer of the body convs)
    "dropout": 0.3,  # hyperparameters.DROPOUT
    "batch_size": 32,  # hyperparameters.BATCH_SIZE
    # edgeser's default stops early on the validation speakers (see LIGHT_SERNET_AUTHORS:
    # the authors' 300 epochs take ~5 h for 6 folds on 2 CPU cores); 60 epochs is the
    # constant-rate part of the authors' schedule
    "epochs": 60,
    "patience": 15,
    "loss": "focal",  # loss.SparseCategoricalFocalLoss, hyperparameters.GAMMA = 2
    "label_smoothing": 0.0,  # neither loss smooths
    "class_weights": False,  # class_weight=None
    "aug_views": 0,  # no augmentation in dataio.py
}

#: ``--recipe authors`` for LIGHT-SERNET: the authors' 300 epochs (hyperparameters.EPOCHS),
#: every one trained (their BestModelWeights callback keeps the best epoch, no stopping).
LIGHT_SERNET_AUTHORS: dict[str, Any] = {"epochs": 300, "patience": 0}

#: The eGeMAPS baseline: clean functionals only (no augmented views), global
#: standardisation; the classifier's settings live in :mod:`edgeser.training.linear`.
EGEMAPS_DEFAULTS: dict[str, Any] = {"aug_views": 0}


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


#: Every model family by name (:attr:`ModelSpec.family`): the objects that carry each
#: family's behaviour (:mod:`edgeser.models.families`).
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (SSL, CNN, FUNCTIONALS)}


@dataclass(frozen=True)
class ModelSpec:
    """What a model name stands for."""

    name: str
    family: str  # a key of FAMILIES: "ssl", "cnn", "functionals"
    encoder: str | None  # default encoder alias (ssl)
    normalize: str  # default normalisation
    description: str
    #: published reference figures from SPEC.md (fractions), for reports and `compare`
    paper: dict[str, float] | None = None
    paper_note: str = ""
    #: training settings that differ for this model from the paper's (config field -> value)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: ``--recipe NAME``: settings that replace :attr:`defaults` under that recipe
    recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def model_family(self) -> ModelFamily:
        """The family object that carries the behaviour :attr:`family` names."""
        return model_family(self.family)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "distilhubert",
            "ssl",
            "distilhubert",
            "none",
            "frozen DistilHuBERT + weighted layer sum + mean pooling + MLP (the paper)",
            {"ua": 0.614},
            "the paper, IEMOCAP LOSO UA",
        ),
        ModelSpec(
            "hubert-base",
            "ssl",
            "hubert-base",
            "none",
            "frozen HuBERT Base + the same head",
            {"wa": 0.6492},
            "SUPERB ER, fold-averaged accuracy",
        ),
        ModelSpec(
            "wav2vec2-base",
            "ssl",
            "wav2vec2-base",
            "none",
            "frozen wav2vec 2.0 Base + the same head",
            {"wa": 0.6343},
            "SUPERB ER, fold-averaged accuracy",
        ),
        ModelSpec(
            "wavlm-base-plus",
            "ssl",
            "wavlm-base-plus",
            "none",
            "frozen WavLM Base+ + the same head",
            None,
            "",
        ),
        ModelSpec(
            "pepino",
            "ssl",
            "wav2vec2-base",
            "speaker",
            "Pepino et al. 2021: frozen wav2vec 2.0 Base, weighted layer sum, "
            "per-speaker normalisation, mean pooling, MLP",
            {"ua": 0.672},
            "Pepino et al. 2021, IEMOCAP LOSO UA",
        ),
        ModelSpec(
            "light-sernet",
            "cnn",
            None,
            "speaker",
            "LIGHT-SERNET (Aftab et al. 2022): MFCC + 3-path FCNN, trained from scratch "
            "with the authors' recipe and early stopping",
            None,
            "",
            LIGHT_SERNET_DEFAULTS,
            {"authors": LIGHT_SERNET_AUTHORS},
        ),
        ModelSpec(
            "egemaps",
            "functionals",
            None,
            "global",
            "eGeMAPSv02 functionals (openSMILE, 88 features) + multinomial logistic "
            "regression (Eyben et al. 2016)",
            None,
            "",
            EGEMAPS_DEFAULTS,
        ),
    )
}
NORMALIZATIONS = ("auto", "none", "global", "speaker")


def model_family(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise EdgeserError(
            f"unknown model family {name!r}; use one of {', '.join(FAMILIES)}"
        ) from None


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise EdgeserError(f"unknown model {name!r}; use one of {', '.join(MODELS)}") from None


def encoder_source(cfg: Any) -> str:
    """The encoder source a config resolves to (``auto``: the model's default encoder)."""
    spec = model_spec(cfg.model)
    return spec.model_family.source(spec, cfg)


def normalization(cfg: Any) -> str:
    """The feature normalisation a config resolves to (``auto``: the model's default).

    For LIGHT-SERNET (``cnn``) ``speaker`` normalises inside the network: its BatchNorm
    layers use each speaker's statistics (:func:`edgeser.training.trainer.speaker_batchnorm`)."""
    spec = model_spec(cfg.model)
    mode = spec.normalize if cfg.feature_norm == "auto" else cfg.feature_norm
    return spec.model_family.check_normalization(mode, cfg.model)


def signal_front_end(cfg: Any) -> FrontEnd:
    """The pre-processing of the signal a config's model computes its features on.

    Every model takes the configured front end (``cfg.front_end``: trim, pre-emphasis,
    peak normalisation) except ``egemaps``: openSMILE's eGeMAPS is designed for the
    recorded signal, whose spectral balance its alpha ratio, Hammarberg index and spectral
    slopes measure and whose level its loudness descriptors carry, so it gets the
    resampled mono signal, trimmed as configured, without pre-emphasis or peak
    normalisation (``--preemphasis`` and ``--normalize`` do not apply to it)."""
    return model_spec(cfg.model).model_family.front_end(cfg.front_end)


def make_encoder(cfg: Any) -> FeatureEncoder:
    """The feature extractor of a config: an :class:`~edgeser.models.ssl.Encoder` for
    SSL models, the MFCC front end for LIGHT-SERNET, openSMILE's eGeMAPS for ``egemaps``
    (:meth:`ModelFamily.make_encoder <edgeser.models.families.ModelFamily>`; the encoders
    are imported there, when built: the registry is read by the config of every command,
    and models.ssl imports transformers)."""
    spec = model_spec(cfg.model)
    return spec.model_family.make_encoder(spec, cfg)
