"""One typed configuration for a training run, with the paper's values as defaults.

Every field can be set from a YAML file (``--config FILE.yaml``, flat keys or
grouped under ``front_end``/``augment``) and overridden on the command line: each
field becomes ``--<field-name-with-dashes>`` (e.g. ``--epochs 2 --aug-views 1``;
:mod:`edgeser.cli.options`).
The resolved config is saved next to every run's results.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeser.audio.augment import AugmentConfig
from edgeser.audio.frontend import FrontEnd
from edgeser.core.cpu import PRECISION_CHOICES, resolve_precision
from edgeser.core.errors import EdgeserError
from edgeser.models.registry import MODELS, NORMALIZATIONS, model_spec

#: The paper's values of the settings a model may change (``ModelSpec.defaults``): what an
#: unset field (``None``) resolves to unless the model says otherwise.
PAPER_DEFAULTS: dict[str, Any] = {
    "dropout": 0.2,
    "loss": "focal",
    "label_smoothing": 0.1,
    "class_weights": True,
    "optimizer": "adamw",
    "lr": 1e-3,
    "lr_decay_start": 0,
    "lr_decay_every": 1,
    "lr_decay_rate": 0.0,
    "weight_decay": 1e-2,
    "batch_size": 16,
    "epochs": 25,
    "aug_views": 4,
    "patience": 0,
}
#: ``--recipe``: ``default`` (each model's defaults) or ``authors`` (LIGHT-SERNET as its
#: authors train it: 300 epochs, no early stopping; other models' defaults already are
#: their authors' recipe).
RECIPES = ("default", "authors")


@dataclass
class TrainConfig:
    """Settings of one training run (defaults: the paper's method).

    Fields typed ``X | None`` default to ``None``, "the model's default": the model's
    :attr:`~edgeser.models.registry.ModelSpec.defaults`, else :data:`PAPER_DEFAULTS`. They
    are resolved when the config is built, and the resolved values are what is saved;
    :meth:`for_model` rebuilds a config for another model with the values that were set
    kept and the unset ones resolved for that model.
    """

    # model
    model: str = "distilhubert"
    """What is trained (see edgeser.models.registry): distilhubert, hubert-base,
    wav2vec2-base, wavlm-base-plus, pepino (SSL encoder + head) or light-sernet (MFCC CNN)."""
    encoder: str = "auto"
    """Encoder source: 'auto' (the model's encoder), hub id or alias, local HF folder,
    s3prl .ckpt, 'random' (random weights of the model's architecture) or 'random:ALIAS'."""
    encoder_seed: int = 0
    """Seed of the random encoder (only with encoder='random')."""
    precision: str = "auto"
    """Encoder arithmetic for feature extraction: 'auto' (bf16 where this CPU has native
    bfloat16 products, else fp32; resolved when the config is built, and the resolved value
    is what is saved), 'fp32' or 'bf16' (checked: cosine >= 0.999 to float32)."""
    train: str = "head"
    """What is trained: 'head' (encoder frozen) or 'encoder' (conv extractor frozen,
    projection + positional conv + transformer fine-tuned with the head)."""
    feature_norm: str = "auto"
    """Feature normalisation: 'auto' (pepino and light-sernet: speaker, egemaps: global,
    others: none),
    'none', 'global' (training-set statistics, stored in the model; SSL models and egemaps)
    or 'speaker' (each speaker's own statistics, test speakers' audio included; for
    light-sernet: per-speaker BatchNorm statistics, in training and at test)."""
    mfcc_seconds: float = 3.0
    """light-sernet: fixed input window in seconds (longer input cropped, shorter padded)."""
    # head
    pooling: str = "mean"
    head_hidden: int = 256
    dropout: float | None = None
    """Dropout before the classifier (unset: the model's default, 0.2; light-sernet 0.3)."""
    # loss
    loss: str | None = None
    """'focal' or 'ce' (unset: focal)."""
    focal_gamma: float = 2.0
    label_smoothing: float | None = None
    """Label smoothing of the loss (unset: 0.1; light-sernet 0)."""
    class_weights: bool | None = None
    """Class-balanced loss weights from the training counts (unset: true; light-sernet
    false, as its authors)."""
    dimensions: bool = False
    """Also regress arousal, valence and dominance (IEMOCAP's ratings, on [0, 1]) with a
    second output of the head, trained jointly; rows without ratings train the classes only.
    SSL-encoder models only."""
    dimension_weight: float = 1.0
    """Weight of the dimensional loss (1 - CCC, averaged over the three dimensions) added
    to the class loss."""
    # optimisation
    optimizer: str | None = None
    """'adamw' (decoupled weight decay on every parameter) or 'adam' (Keras-style L2
    penalty weight_decay·Σw² on the kernels the network names: LIGHT-SERNET's five
    bias-free convolutions). Unset: adamw; light-sernet adam."""
    lr: float | None = None
    """Learning rate (unset: 1e-3; light-sernet 1e-4)."""
    lr_decay_start: int | None = None
    """First epoch (0-based) from which the learning rate may decay (unset: 0)."""
    lr_decay_every: int | None = None
    """The rate is multiplied by exp(-lr_decay_rate) at every epoch >= lr_decay_start that
    is a multiple of this (unset: 1; light-sernet 20)."""
    lr_decay_rate: float | None = None
    """Decay exponent per decay step; 0 keeps the rate constant (unset: 0; light-sernet
    0.15 from epoch 50)."""
    encoder_lr: float = 5e-5
    """Learning rate of the fine-tuned encoder layers (train='encoder')."""
    weight_decay: float | None = None
    """adamw: decoupled decay (unset: 1e-2); adam: the L2 coefficient (light-sernet 1e-6)."""
    batch_size: int | None = None
    """Unset: 16; light-sernet 32."""
    epochs: int | None = None
    """Most epochs to train (unset: 25; light-sernet 60, with --recipe authors 300)."""
    patience: int | None = None
    """Early stopping: stop when validation UA has not improved for this many epochs and
    keep the best epoch's weights; 0 trains every epoch and still keeps the best (unset: 0;
    light-sernet 15, with --recipe authors 0). Needs validation speakers."""
    recipe: str = "default"
    """'default' (each model's defaults) or 'authors': light-sernet's settings left unset
    take the authors' recipe instead (300 epochs, no early stopping); other models' defaults
    are already their authors'."""
    # augmentation
    aug_views: int | None = None
    """Augmented views cached per training utterance; one is drawn per epoch.
    0 trains on clean features only (unset: 4; light-sernet and egemaps 0)."""
    aug_mode: str = "cached"
    """'cached' (views encoded once) or 'online' (augment and re-encode every step)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    front_end: FrontEnd = field(default_factory=FrontEnd)
    # protocol
    val_speakers: int = 1
    """Speakers held out of the training sessions for model selection (LOSO);
    0 trains for all epochs and keeps the last."""
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    seeds: int = 1
    """Training runs per fold of every speaker-independent protocol (LOSO in ``evaluate
    --protocol loso``, ``reproduce``, ``compare``), with seeds ``seed`` .. ``seed+seeds-1``.
    The features are computed once (with ``seed``'s augmentation) and shared: only the head
    (or network) retrains. Reports give mean ± sd over all seed × fold runs and the sd of
    the fold mean across seeds; the production model (and ``train``'s single model) is
    trained once, with ``seed``."""
    bootstrap: int = 1000
    """Resamples behind every 95 % interval and paired test (see
    edgeser.evaluation.uncertainty)."""
    calibrate: str = "temperature"
    """'temperature': one temperature per model fitted on its validation speakers
    (edgeser.evaluation.confidence), stored with the model and applied inside the exported
    graph, with the low_confidence threshold; 'none' leaves the probabilities as trained."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise EdgeserError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.recipe not in RECIPES:
            raise EdgeserError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        spec = model_spec(self.model)
        spec_defaults = {**spec.defaults, **spec.recipes.get(self.recipe, {})}
        unset = [k for k in PAPER_DEFAULTS if getattr(self, k) is None]
        for name in unset:
            setattr(self, name, spec_defaults.get(name, PAPER_DEFAULTS[name]))
        #: fields that took the model's default (not part of to_dict(); see for_model)
        self._unset = frozenset(unset)
        choices = {
            "model": tuple(MODELS),
            "feature_norm": NORMALIZATIONS,
            "precision": PRECISION_CHOICES,
            "train": ("head", "encoder"),
            "pooling": ("mean", "meanstd", "attention"),
            "loss": ("focal", "ce"),
            "optimizer": ("adamw", "adam"),
            "aug_mode": ("cached", "online"),
            "calibrate": ("temperature", "none"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise EdgeserError(
                    f"{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                    f"got {getattr(self, name)!r}"
                )
        self.precision = resolve_precision(self.precision)
        positive = ("batch_size", "epochs", "lr", "lr_decay_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise EdgeserError(f"{name.replace('_', '-')} must be positive")
        if self.seeds < 1:
            raise EdgeserError(f"seeds must be >= 1, got {self.seeds}")
        if self.bootstrap < 100:
            raise EdgeserError(
                "bootstrap must be >= 100 (resamples behind each 95 % "
                f"interval), got {self.bootstrap}"
            )
        if min(self.weight_decay, self.lr_decay_rate, self.lr_decay_start) < 0:
            raise EdgeserError("weight-decay, lr-decay-rate and lr-decay-start must be >= 0")
        if self.aug_views < 0 or self.val_speakers < 0 or self.patience < 0:
            raise EdgeserError("aug-views, val-speakers and patience must be >= 0")
        if self.dimensions and not model_spec(self.model).model_family.dimensions:
            raise EdgeserError(
                f"--dimensions needs a model with an SSL-encoder head; {self.model} has no "
                "dimensional output (use distilhubert, hubert-base, wav2vec2-base, "
                "wavlm-base-plus or pepino)"
            )
        if self.dimension_weight < 0:
            raise EdgeserError("dimension-weight must be >= 0")
        if not 0.5 <= self.mfcc_seconds <= 60:
            raise EdgeserError("mfcc-seconds must be in [0.5, 60]")
        if not (0 <= self.val_fraction < 0.5 and 0 < self.test_fraction < 0.5):
            raise EdgeserError("val-fraction and test-fraction must be in [0, 0.5)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_config(self, seed: int) -> TrainConfig:
        """The config of one training run with ``seed``: the protocol-level fields
        (``seeds``, ``bootstrap``) at their defaults, so a fold's model, its resume state
        and its reuse key depend only on what shapes training."""
        return dataclasses.replace(
            self, seed=seed, seeds=type(self).seeds, bootstrap=type(self).bootstrap
        )

    def for_model(self, name: str, **values: Any) -> TrainConfig:
        """This config for model ``name``: the values that were set are kept, the unset
        ones take ``name``'s defaults; ``values`` override both."""
        data = {k: v for k, v in self.to_dict().items() if k not in self._unset}
        return TrainConfig.from_dict({**data, **values, "model": name})

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of (0-based) ``epoch``: ``lr`` times ``exp(-lr_decay_rate)`` per
        epoch ``e`` in ``[lr_decay_start, epoch]`` with ``e % lr_decay_every == 0`` (Keras'
        ``LearningRateScheduler`` as LIGHT-SERNET's ``callbacks.py`` uses it)."""
        first = -(-self.lr_decay_start // self.lr_decay_every) * self.lr_decay_every
        steps = 0 if epoch < first else (epoch - first) // self.lr_decay_every + 1
        return float(self.lr * math.exp(-self.lr_decay_rate * steps))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a (possibly nested) dict; unknown keys are an error."""
        data = dict(data)
        nested: dict[str, Any] = {}
        for name, sub in (("augment", AugmentConfig), ("front_end", FrontEnd)):
            value = data.pop(name, None) or {}
            if not isinstance(value, dict):
                raise EdgeserError(f"config key {name!r} must be a mapping")
            nested[name] = _build(sub, value, prefix=f"{name}.")
        flat_aug = {k: data.pop(k) for k in list(data) if k in _names(AugmentConfig)}
        flat_fe = {k: data.pop(k) for k in list(data) if k in _names(FrontEnd)}
        if flat_aug:
            nested["augment"] = dataclasses.replace(nested["augment"], **flat_aug)
        if flat_fe:
            nested["front_end"] = dataclasses.replace(nested["front_end"], **flat_fe)
        return _build(cls, {**data, **nested})


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    unknown = sorted(set(data) - _names(cls))
    if unknown:
        raise EdgeserError(f"unknown config keys: {', '.join(prefix + k for k in unknown)}")
    return cls(**data)


def load_config(path: str | os.PathLike[str] | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the YAML file (if any), then command-line overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise EdgeserError(f"config file not found: {p}") from None
        except yaml.YAMLError as e:
            raise EdgeserError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise EdgeserError(f"{p}: a config file must be a mapping of keys to values")
        data.update(loaded)
    TrainConfig.from_dict(data)  # the file alone must be valid (its errors name it)
    flat = {k: v for k, v in overrides.items() if v is not None}
    nested = {k: v for k, v in data.items() if isinstance(v, dict)}
    merged = {**{k: v for k, v in data.items() if k not in nested}, **_flatten(nested), **flat}
    return TrainConfig.from_dict(merged)


def _flatten(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(v)
        else:
            out[k] = v
    return out


# Config values from text (the command line's --<field> VALUE, the Python API's keyword
# strings): one parser per field type.
def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case), as ``--<flag> VALUE`` takes it."""
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def eval_type(name: str) -> Any:
    """Resolve a postponed annotation of a config field (only simple builtins are used)."""
    table = {"int": int, "float": float, "str": str, "bool": bool}
    base = name.removesuffix(" | None")  # optional fields: "None" means "the model's default"
    if base not in table:
        raise TypeError(f"unsupported config field type {name!r}")
    return table[base]


def option_type(tp: Any) -> Any:
    if isinstance(tp, str):
        tp = eval_type(tp)
    if tp is bool:
        return parse_bool
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return option_type(args[0])
    return tp


def config_fields() -> list[dataclasses.Field[Any]]:
    """The fields of :class:`~edgeser.config.TrainConfig` and its two nested configs that
    become options, in option order."""
    return [
        f
        for cls in (TrainConfig, AugmentConfig, FrontEnd)
        for f in fields(cls)
        if f.name not in ("augment", "front_end")
    ]


def parse_config_value(key: str, text: str) -> Any:
    """``text`` parsed as config field ``key`` (any ``--<field>``), as the command line
    parses it; unknown keys and malformed values raise :class:`EdgeserError`."""
    name = key.strip().replace("-", "_")
    for f in config_fields():
        if f.name == name:
            try:
                return option_type(f.type)(text.strip())
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                raise EdgeserError(f"config key {name}: bad value {text!r}") from None
    raise EdgeserError(f"unknown config key {name!r}")
