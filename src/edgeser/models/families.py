"""Model families: what a :class:`~edgeser.models.registry.ModelSpec`'s ``family`` stands
for, as one object per family that carries the family's behaviour.

A :class:`ModelFamily` says how a config of the family resolves its encoder and feature
normalisation, which pre-processed signal its features are computed on, which features it
trains on (or, for SSL models, that the config picks them), whether it has a dimensional
output, and how its encoder and network are built. The stages that come later look the
family (or the feature kind it trains on) up instead of comparing names: feature
extraction in :mod:`edgeser.features.extract`, training in
:mod:`edgeser.training.strategies`, export in :mod:`edgeser.exporting.recipes`.

Torch-free at import time (the config of every command reads the registry): encoders and
networks are imported inside the builders. A family is registered by name in
:data:`edgeser.models.registry.FAMILIES`.

Three families:

* ``ssl``: a frozen self-supervised encoder and :class:`~edgeser.models.head.EmotionHead`;
  the features (pooled statistics, frames, conv-extractor outputs or waveforms) follow
  from the config's pooling, training and augmentation settings;
* ``cnn``: LIGHT-SERNET, fixed-window MFCCs into a network trained from scratch;
* ``functionals``: openSMILE's eGeMAPS functionals and a linear classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeser.audio.frontend import FrontEnd
from edgeser.core.errors import EdgeserError

__all__ = ["CNN", "FUNCTIONALS", "SSL", "ModelFamily"]

#: The normalisations every family accepts unless it says otherwise.
_ALL_NORMS = ("none", "global", "speaker")


def _no_check(cfg: Any) -> None:
    """A family whose features the config picks: nothing to refuse here."""


@dataclass(frozen=True)
class ModelFamily:
    """One family of models and its behaviour (see the module's docstring)."""

    name: str
    #: the encoder source every model of the family uses, or None: the config's
    #: ``--encoder`` (``auto``: the model's default encoder)
    encoder_source: str | None
    #: ``(source, cfg) -> encoder`` (a :class:`~edgeser.models.registry.FeatureEncoder`;
    #: ``source``: what :meth:`source` resolves)
    load_encoder: Callable[[str, Any], Any]
    #: the feature kind (:class:`~edgeser.features.kinds.FeatureKind` value) it trains on,
    #: or None: the config's pooling, ``--train`` and ``--aug-mode`` pick it
    features: str | None = None
    #: raises :class:`EdgeserError` for a config whose training the features cannot serve
    check_features: Callable[[Any], None] = _no_check
    #: ``(cfg, encoder) -> network`` taking the encoder's output whole (one batch of
    #: ``features``), or None: an :class:`~edgeser.models.head.EmotionHead` on the hidden
    #: states
    build_network: Callable[[Any, Any], Any] | None = None
    #: the ``--feature-norm`` values it accepts (besides ``auto``)
    normalizations: tuple[str, ...] = _ALL_NORMS
    #: the refusal of another one (``{mode}``, ``{model}``: the value, the model's name)
    normalization_refusal: str = "--feature-norm {mode} does not apply to {model}"
    #: its features are computed on the recorded signal (no pre-emphasis, no peak
    #: normalisation; trimmed as configured)
    raw_signal: bool = False
    #: the head can regress arousal, valence and dominance (``--dimensions``)
    dimensions: bool = False

    def source(self, spec: Any, cfg: Any) -> str:
        """The encoder source a config of model ``spec`` resolves to."""
        if self.encoder_source is not None:
            return self.encoder_source
        text = str(cfg.encoder).strip()
        if text in ("", "auto"):
            return str(spec.encoder)
        if text.lower() == "random" and spec.encoder != "distilhubert":
            return f"random:{spec.encoder}"
        return text

    def make_encoder(self, spec: Any, cfg: Any) -> Any:
        """The encoder of a config of model ``spec``."""
        return self.load_encoder(self.source(spec, cfg), cfg)

    def check_normalization(self, mode: str, model: str) -> str:
        """``mode`` if the family accepts it, else one clear error."""
        if mode not in self.normalizations:
            raise EdgeserError(self.normalization_refusal.format(mode=mode, model=model))
        return mode

    def front_end(self, front: FrontEnd) -> FrontEnd:
        """The pre-processing its features are computed on, from the configured one."""
        if self.raw_signal:
            return FrontEnd(trim=front.trim, top_db=front.top_db, preemphasis=0.0, normalize=False)
        return front

    def reference_encoder(self, encoder: Any) -> Any:
        """The encoder to time the PyTorch float32 forward pass with: the plain
        ``transformers`` modules in float32 for an SSL encoder, the encoder itself else."""
        if self.build_network is not None:
            return encoder
        return encoder.variant(precision="fp32", impl="modules")

    def forward_one(self, network: Any, encoded: Any) -> Any:
        """Logits of one utterance from its encoder output (``encode([wave])[0]``)."""
        if self.build_network is not None:
            return network(encoded[None])
        return network(encoded[:, None])  # hidden [L, T, D] -> [L, 1, T, D]


# ------------------------------------------------------------------------ ssl


def _ssl_encoder(source: str, cfg: Any) -> Any:
    from edgeser.models.ssl import load_encoder

    return load_encoder(source, seed=cfg.encoder_seed, precision=cfg.precision)


SSL = ModelFamily("ssl", None, _ssl_encoder, dimensions=True)

# ------------------------------------------------------------------------ cnn


def _mfcc_encoder(source: str, cfg: Any) -> Any:
    from edgeser.models.lightsernet import MFCCConfig, MFCCFrontEnd

    return MFCCFrontEnd(MFCCConfig(seconds=cfg.mfcc_seconds))


def _from_scratch(cfg: Any) -> None:
    if cfg.aug_mode == "online" or cfg.train == "encoder":
        raise EdgeserError(
            f"{cfg.model} trains from scratch on cached MFCC views: "
            "use --train head --aug-mode cached"
        )


def _lightsernet(cfg: Any, encoder: Any) -> Any:
    from edgeser.data.labels import LABELS
    from edgeser.models.lightsernet import LightSERNet, LightSERNetConfig

    return LightSERNet(
        LightSERNetConfig(num_classes=len(LABELS), dropout=cfg.dropout, mfcc=encoder.cfg)
    )


CNN = ModelFamily(
    "cnn",
    "mfcc",
    _mfcc_encoder,
    features="mfcc",
    check_features=_from_scratch,
    build_network=_lightsernet,
    normalizations=("none", "speaker"),
    normalization_refusal="--feature-norm {mode} applies to SSL-encoder models and egemaps; "
    "{model} takes none or speaker (per-speaker BatchNorm statistics)",
)

# ---------------------------------------------------------------- functionals


def _egemaps_encoder(source: str, cfg: Any) -> Any:
    from edgeser.models.egemaps import EGeMAPSFrontEnd

    return EGeMAPSFrontEnd()


def _linear_on_cache(cfg: Any) -> None:
    if cfg.aug_mode == "online" or cfg.train == "encoder" or cfg.dimensions:
        raise EdgeserError(
            f"{cfg.model} fits a linear classifier on cached functionals: "
            "use --train head --aug-mode cached, without --dimensions"
        )


def _linear(cfg: Any, encoder: Any) -> Any:
    from edgeser.data.labels import LABELS
    from edgeser.models.egemaps import LinearClassifier

    return LinearClassifier(encoder.num_features, len(LABELS))


FUNCTIONALS = ModelFamily(
    "functionals",
    "egemaps",
    _egemaps_encoder,
    features="functionals",
    check_features=_linear_on_cache,
    build_network=_linear,
    raw_signal=True,
)
