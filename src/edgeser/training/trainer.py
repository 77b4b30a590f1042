"""Training loop for the emotion head (and, optionally, the upper encoder layers).

Inputs come as a :class:`FeatureSet` of one of six kinds (what each does differently is
its strategy, :mod:`edgeser.training.strategies`):

* ``pooled``: cached per-layer mean/std vectors ``[L, 2D]`` (the default, fast path);
* ``frames``: cached hidden states ``[L, T, D]`` (attention pooling);
* ``conv``: cached conv-extractor outputs ``[T, 512]``; the encoder's projection,
  positional convolution and transformer layers are fine-tuned with the head;
* ``wave``: pre-processed waveforms, augmented and re-encoded through the frozen
  encoder at every step (the exact, slow reference path);
* ``mfcc``: cached fixed-window MFCCs ``[T, 40]`` for LIGHT-SERNET, whose whole network
  is the "head" here (trained from scratch);
* ``functionals``: cached eGeMAPS functionals ``[88]``; the linear classifier is fitted by
  scikit-learn (:mod:`edgeser.training.linear`), not by this loop.

The optimiser (``adamw`` or ``adam`` with Keras-style L2 on named kernels) and the learning
rate per epoch (:meth:`TrainConfig.learning_rate`: constant, or LIGHT-SERNET's exponential
steps) come from the config.

With ``cfg.dimensions`` the head also regresses arousal, valence and dominance
(:attr:`FeatureSet.dims`, ``NaN`` where an utterance has no rating); the step's loss is the
class loss plus ``cfg.dimension_weight · (1 - CCC)`` over the batch's rated rows. Model
selection stays on validation UA (the paper's criterion), the validation CCC is recorded.

For cached kinds each training utterance has ``K`` augmented views and one is
drawn per utterance per epoch (``K = 0``: clean features). Model selection keeps
the epoch with the best validation UA (ties: lower validation loss); without a
validation set the last epoch is kept. With ``cfg.patience = P > 0`` training stops once
P epochs in a row have not bettered the best validation UA (early stopping; the best
epoch's weights are restored; LIGHT-SERNET's default). Training state is saved after each epoch
and an interrupted run resumes where it stopped. Seeded and deterministic on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeser.audio.augment import Augmenter
from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.core.io import sha256_text
from edgeser.core.progress import EpochLog, is_terminal, progress_bar
from edgeser.data.labels import LABELS
from edgeser.evaluation.dimensions import DIMENSIONS, dimension_metrics
from edgeser.evaluation.metrics import compute_metrics
from edgeser.features.kinds import FeatureKind
from edgeser.models.head import HeadConfig
from edgeser.models.registry import FeatureEncoder, normalization
from edgeser.training.checkpoint import (
    load_best,
    load_state,
    read_state_info,
    save_best,
    save_state,
)
from edgeser.training.losses import ccc_loss, make_loss
from edgeser.training.strategies import collate, train_strategy

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Features and labels of one split part, aligned by position."""

    kind: str
    ids: list[str]
    labels: np.ndarray
    clean: list[np.ndarray]
    views: list[list[np.ndarray]] = field(default_factory=list)
    #: ``[N, 3]`` dimensional targets on [0, 1] (``NaN``: not rated), or None.
    dims: np.ndarray | None = None
    #: The speaker of every utterance (per-speaker BatchNorm statistics), or None.
    speakers: list[str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in tuple(FeatureKind):
            raise ValueError(f"unknown feature kind {self.kind!r}")
        self.kind = FeatureKind(self.kind)
        if not (len(self.ids) == len(self.labels) == len(self.clean)):
            raise ValueError("ids, labels and features must have the same length")
        if self.views and len(self.views) != len(self.ids):
            raise ValueError("views must be given for every utterance or none")
        if self.dims is not None and self.dims.shape[0] != len(self.ids):
            raise ValueError("dims must have one row per utterance")
        if self.speakers is not None and len(self.speakers) != len(self.ids):
            raise ValueError("speakers must be given for every utterance or none")

    def __len__(self) -> int:
        return len(self.ids)


class SERModel(nn.Module):
    """The head, with the encoder attached for the ``conv`` and ``wave`` kinds (for
    ``mfcc``, the head is the whole LIGHT-SERNET network)."""

    def __init__(
        self, head: nn.Module, encoder: FeatureEncoder | None = None, kind: str = FeatureKind.POOLED
    ):
        super().__init__()
        self.head = head
        self.kind = kind = FeatureKind(kind)
        # Registered as a sub-module only when it is trained (conv kind), so the
        # frozen encoder's weights are not duplicated into head checkpoints.
        if kind.trains_encoder:
            self.encoder = encoder
        else:
            self._frozen_encoder = encoder

    @property
    def trained_encoder(self) -> FeatureEncoder | None:
        """The encoder fine-tuned with the head (``conv``), else None."""
        return self.encoder if self.kind.trains_encoder else None

    @property
    def has_dimensions(self) -> bool:
        return getattr(self.head, "regressor", None) is not None

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Class logits ``[B, C]``."""
        return self.outputs(batch)[0]

    def outputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class logits ``[B, C]`` and the dimensional output ``[B, K]`` (None without)."""
        return train_strategy(self.kind).forward(self, batch)


def head_config(cfg: TrainConfig, num_layers: int, hidden_size: int) -> HeadConfig:
    return HeadConfig(
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_classes=len(LABELS),
        pooling=cfg.pooling,
        hidden=cfg.head_hidden,
        dropout=cfg.dropout,
        num_dimensions=len(DIMENSIONS) if cfg.dimensions else 0,
    )


def _batches(n: int, size: int, order: np.ndarray) -> Iterator[np.ndarray]:
    for i in range(0, n, size):
        yield order[i : i + size]


def speaker_batchnorm(cfg: TrainConfig, kind: str) -> bool:
    """Whether a run normalises per speaker inside the network: LIGHT-SERNET with
    ``--feature-norm speaker``, whose BatchNorm layers then see one speaker at a time."""
    return train_strategy(kind).speaker_batchnorm and normalization(cfg) == "speaker"


def training_batchnorm(cfg: TrainConfig, kind: str) -> bool:
    """Whether a run's BatchNorm layers get training-set statistics
    (:func:`precise_batchnorm`) before each validation and at the end (LIGHT-SERNET with
    ``--feature-norm none``, the exportable network): the moving averages of Keras'
    momentum (0.99) trail the weights by ~100 steps, which on a small corpus (RAVDESS'
    12 actors: 8 steps an epoch) is a dozen epochs, and evaluating with them leaves the
    network near chance."""
    return train_strategy(kind).speaker_batchnorm and normalization(cfg) != "speaker"


def _speaker_batches(
    groups: Sequence[np.ndarray], size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of batches that never mix speakers: each speaker's utterances (``groups``:
    their rows, :func:`_speaker_rows`) shuffled and cut into batches of ``size``, the
    batches of all speakers in a random order. A
    training-mode BatchNorm then normalises with the batch's speaker's statistics, as
    :func:`adapt_batchnorm` does with a whole speaker at evaluation."""
    batches = []
    for rows in groups:
        shuffled = rows[rng.permutation(len(rows))]
        batches += [shuffled[i : i + size] for i in range(0, len(rows), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _speaker_rows(speakers: Sequence[str] | None) -> list[np.ndarray]:
    if speakers is None:
        raise EdgeserError("per-speaker BatchNorm statistics need the speaker of every utterance")
    values = np.asarray(speakers, dtype=object)
    return [np.flatnonzero(values == s) for s in sorted(set(values.tolist()))]


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _Collected(Exception):
    """Stops a forward pass once the BatchNorm being measured has seen its input."""


class _Moments:
    """Per-channel sum and sum of squares (float64) of a BatchNorm's inputs, gathered by a
    forward pre-hook that then stops the pass."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | float = 0.0
        self.sq: torch.Tensor | float = 0.0
        self.n = 0

    def __call__(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].double()
        axes = [0, *range(2, x.ndim)]
        self.sum = self.sum + x.sum(axes)
        self.sq = self.sq + (x * x).sum(axes)
        self.n += x.numel() // x.shape[1]
        raise _Collected

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.as_tensor(self.sum) / self.n
        return mean, (torch.as_tensor(self.sq) / self.n - mean * mean).clamp_min(0.0)


@torch.no_grad()
def adapt_batchnorm(
    model: SERModel, data: FeatureSet, rows: np.ndarray, cfg: TrainConfig, batch_size: int = 64
) -> SERModel:
    """A copy of ``model`` whose BatchNorm layers normalise with the statistics of
    ``data``'s ``rows`` (one speaker's utterances; their features, never their labels):
    AdaBN (Li et al., "Adaptive Batch Normalization for practical domain adaptation",
    Pattern Recognition 2018) with the speaker as the domain.

    The statistics are exact for any number of utterances, not an average of batch
    estimates: the layers are measured in forward order, each over all ``rows`` (mean and
    population variance per channel, accumulated in float64) with the layers before it
    already adapted; each pass stops at the layer measured, so ``L`` BatchNorm layers cost
    at most ``L`` forward passes over the speaker's utterances.
    """
    adapted = copy.deepcopy(model).eval()
    if len(rows) == 0:
        return adapted
    norms = _batchnorms(adapted)
    batches = [
        collate(data.kind, [data.clean[i] for i in rows[j : j + batch_size]], cfg.pooling)
        for j in range(0, len(rows), batch_size)
    ]
    order: list[nn.Module] = []  # the layers in the order the forward pass reaches them
    hooks = [m.register_forward_pre_hook(lambda mod, _inp: order.append(mod)) for m in norms]
    adapted.outputs(batches[0])
    for h in hooks:
        h.remove()
    for bn in dict.fromkeys(order):
        moments = _Moments()
        handle = bn.register_forward_pre_hook(moments)
        for batch in batches:
            with contextlib.suppress(_Collected):
                adapted.outputs(batch)
        handle.remove()
        mean, var = moments.mean_var()
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
    return adapted


@torch.no_grad()
def precise_batchnorm(
    model: SERModel, data: FeatureSet, cfg: TrainConfig, batch_size: int | None = None
) -> SERModel:
    """A copy of ``model`` whose BatchNorm layers hold the mean of their batch statistics
    over one pass of ``data``'s clean features in batches of the training size ("precise
    BN": Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021; what
    ``torch.optim.swa_utils.update_bn`` does for a plain ``DataLoader``). One forward pass,
    where :func:`adapt_batchnorm`'s exact statistics cost one per layer: it runs before
    every validation. Dropout stays off; the rows go in order, so the result is
    deterministic."""
    adapted = copy.deepcopy(model).eval()
    norms = _batchnorms(adapted)
    size = batch_size or cfg.batch_size
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the pass
        bn.train()
    for j in range(0, len(data), size):
        rows = range(j, min(j + size, len(data)))
        adapted.outputs(collate(data.kind, [data.clean[i] for i in rows], cfg.pooling))
    for bn, original in zip(norms, _batchnorms(model), strict=True):
        bn.momentum = original.momentum
        bn.eval()
    return adapted


@dataclass
class FitResult:
    model: SERModel
    history: list[dict[str, float]]
    best_epoch: int
    resumed_from: int


def fit(
    cfg: TrainConfig,
    model: SERModel,
    train: FeatureSet,
    val: FeatureSet | None,
    out_dir: Path,
    *,
    progress: bool = True,
    augmenter: Augmenter | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` and select on ``val``; resumable from ``out_dir``."""
    if len(train) == 0:
        raise EdgeserError("the training set is empty")
    if model.has_dimensions and train.dims is None:
        raise EdgeserError(
            "this model has a dimensional output but the training set has no dimensional targets"
        )
    counts = np.bincount(train.labels, minlength=len(LABELS)).tolist()
    missing = [LABELS[i] for i, c in enumerate(counts) if c == 0]
    if missing:
        raise EdgeserError(f"class {', '.join(missing)} has no training examples")
    fit_once = train_strategy(model.kind).fit_once
    if fit_once is not None:  # e.g. eGeMAPS: fitted by scikit-learn, in one go
        out_dir.mkdir(parents=True, exist_ok=True)
        history, best = fit_once(cfg, model.head, train, val)
        return FitResult(model=model.eval(), history=history, best_epoch=best, resumed_from=0)
    torch.manual_seed(cfg.seed)
    loss_fn = make_loss(
        cfg.loss,
        counts,
        gamma=cfg.focal_gamma,
        label_smoothing=cfg.label_smoothing,
        class_weights=cfg.class_weights,
        labels=list(LABELS),
    )
    optimizer = _optimizer(cfg, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Everything that shapes the run except the epoch count, so a longer run resumes a
    # shorter one.
    shape = {k: v for k, v in cfg.to_dict().items() if k not in ("epochs", "patience", "recipe")}
    fingerprint = sha256_text(repr((shape, train.ids, val.ids if val else None, model.kind)))[:16]
    history: list[dict[str, float]] = []
    best: tuple[float, float] = (-math.inf, -math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = -1
    start = 0
    saved = read_state_info(out_dir)
    if saved is not None and saved.get("fingerprint") != fingerprint:
        log.info("%s: saved state is for another config or split; starting over", out_dir)
    elif saved is not None and (info := load_state(out_dir, model, optimizer)) is not None:
        history = info["history"]
        start = len(history)
        best_epoch = info["best_epoch"]
        best = (float(info["best"][0]), float(info["best"][1]))
        if best_epoch >= 0:
            best_state = load_best(out_dir)
        log.info("resuming %s after epoch %d", out_dir, start)
    resumed_from = start
    n = len(train)
    groups = _speaker_rows(train.speakers) if speaker_batchnorm(cfg, train.kind) else None
    if groups is not None:
        steps_per_epoch = sum(math.ceil(len(r) / cfg.batch_size) for r in groups)
    else:
        steps_per_epoch = math.ceil(n / cfg.batch_size)
    has_val = val is not None and len(val) > 0
    precise = training_batchnorm(cfg, train.kind)
    patience = cfg.patience if has_val else 0
    name = _run_name(out_dir)
    epochs = EpochLog(name, cfg.epochs, start, progress, early_stopping=patience > 0)
    stopped = -1
    with progress_bar(
        total=(cfg.epochs - start) * steps_per_epoch,
        desc=name,
        enabled=progress and is_terminal(),
        unit="step",
    ) as bar:
        for epoch in range(start, cfg.epochs):
            if patience and best_epoch >= 0 and epoch - 1 - best_epoch >= patience:
                stopped = epoch  # (also when resuming a run that had stopped)
                break
            model.train()
            scale = cfg.learning_rate(epoch) / cfg.lr
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * scale
            rng = np.random.default_rng([cfg.seed, epoch])
            if groups is not None:
                batches = _speaker_batches(groups, cfg.batch_size, rng)
            else:
                batches = list(_batches(n, cfg.batch_size, rng.permutation(n)))
            view_pick = rng.integers(0, max(len(train.views[0]) if train.views else 1, 1), n)
            total, seen = 0.0, 0
            for idx in batches:
                arrays = _train_arrays(train, idx, view_pick, epoch, cfg, augmenter)
                batch = collate(train.kind, arrays, cfg.pooling)
                target = torch.from_numpy(train.labels[idx]).long()
                logits, dims = model.outputs(batch)
                loss = loss_fn(logits, target)
                if dims is not None:
                    term = ccc_loss(dims, torch.from_numpy(train.dims[idx]))
                    if term is not None:
                        loss = loss + cfg.dimension_weight * term
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
                bar.update(1)
            record = {"epoch": epoch, "train_loss": total / max(seen, 1)}
            if has_val:
                net = precise_batchnorm(model, train, cfg) if precise else model
                probs, vloss, vdims = _infer(net, val, cfg, loss_fn)
                m = compute_metrics(val.labels, probs.argmax(1))
                record.update(val_loss=vloss, val_ua=m["ua"], val_wa=m["wa"])
                if vdims is not None and val.dims is not None:
                    dm = dimension_metrics(val.dims, vdims)
                    if dm["n"] > 1:
                        record["val_ccc"] = float(np.mean([dm[d]["ccc"] for d in DIMENSIONS]))
                score = (m["ua"], -vloss)
                if score > best:
                    best, best_epoch = score, epoch
                    best_state = copy.deepcopy(net.state_dict())
                    save_best(out_dir, best_state)
            history.append(record)
            bar.set_postfix_str(" ".join(f"{k}={v:.3f}" for k, v in record.items() if k != "epoch"))
            save_state(
                out_dir,
                model,
                optimizer,
                {
                    "fingerprint": fingerprint,
                    "history": history,
                    "best_epoch": best_epoch,
                    "best": list(best),
                },
            )
            epochs.epoch(epoch, record, best_epoch, best[0])
    if stopped >= 0:
        log.info(
            "%s: stopped after epoch %d/%d, validation UA %.3f at epoch %d not bettered "
            "for %d epochs",
            name,
            stopped,
            cfg.epochs,
            best[0],
            best_epoch + 1,
            patience,
        )
    if history:
        epochs.epoch(len(history) - 1, history[-1], best_epoch, best[0], final=True)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = cfg.epochs - 1
        if precise:
            model.load_state_dict(precise_batchnorm(model, train, cfg).state_dict())
    return FitResult(model=model, history=history, best_epoch=best_epoch, resumed_from=resumed_from)


def _run_name(out_dir: Path) -> str:
    """``fold3``, or ``seed1/fold3`` for a later seed's fold (its folder's parent)."""
    parent = out_dir.parent.name
    return f"{parent}/{out_dir.name}" if parent.startswith("seed") else out_dir.name


def _optimizer(cfg: TrainConfig, model: SERModel) -> torch.optim.Optimizer:
    """``adamw``: decoupled weight decay on every trained parameter; ``adam``: the L2
    penalty ``weight_decay · Σw²`` of Keras' ``kernel_regularizer`` on the kernels the
    network names (``l2_parameters()``; LIGHT-SERNET's five bias-free convolutions), as
    Adam's coupled ``weight_decay = 2 · λ`` (the penalty's gradient is ``2λw``)."""
    groups: list[dict[str, Any]] = []
    head_params = list(model.head.parameters())
    if cfg.optimizer == "adam":
        named = getattr(model.head, "l2_parameters", lambda: [])()
        ids = {id(p) for p in named}
        groups.append(
            {
                "params": [p for p in head_params if id(p) in ids],
                "weight_decay": 2.0 * cfg.weight_decay,
            }
        )
        groups.append({"params": [p for p in head_params if id(p) not in ids], "weight_decay": 0.0})
        groups = [g for g in groups if g["params"]]
    else:
        groups.append({"params": head_params, "weight_decay": cfg.weight_decay})
    for g in groups:
        g["lr"] = g["initial_lr"] = cfg.lr
    if model.trained_encoder is not None:
        enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
        groups.append(
            {
                "params": enc_params,
                "lr": cfg.encoder_lr,
                "initial_lr": cfg.encoder_lr,
                "weight_decay": cfg.weight_decay,
            }
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups)
    return torch.optim.AdamW(groups)


def _train_arrays(
    data: FeatureSet,
    idx: np.ndarray,
    view_pick: np.ndarray,
    epoch: int,
    cfg: TrainConfig,
    augmenter: Augmenter | None,
) -> list[np.ndarray]:
    return train_strategy(data.kind).draw(data, idx, view_pick, epoch, cfg, augmenter)


@torch.no_grad()
def predict(
    model: SERModel,
    data: FeatureSet,
    cfg: TrainConfig,
    *,
    loss_fn: nn.Module | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, float]:
    """Class probabilities ``[N, C]`` on clean features (and the mean loss, if asked)."""
    probs, loss, _ = _infer(model, data, cfg, loss_fn, batch_size)
    return probs, loss


@torch.no_grad()
def predict_outputs(
    model: SERModel, data: FeatureSet, cfg: TrainConfig, *, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities ``[N, C]`` and the dimensional output ``[N, 3]`` (None for a
    model without) on clean features, from one pass over the data."""
    probs, _, dims = _infer(model, data, cfg, None, batch_size)
    return probs, dims


@torch.no_grad()
def _infer(
    model: SERModel,
    data: FeatureSet,
    cfg: TrainConfig,
    loss_fn: nn.Module | None,
    batch_size: int = 64,
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Outputs on clean features; with per-speaker BatchNorm (:func:`speaker_batchnorm`)
    each speaker's utterances go through a copy adapted to that speaker."""
    model.eval()
    if speaker_batchnorm(cfg, data.kind):
        parts = [
            (rows, adapt_batchnorm(model, data, rows, cfg, batch_size))
            for rows in _speaker_rows(data.speakers)
        ]
    else:
        parts = [(np.arange(len(data)), model)]
    out = np.zeros((len(data), len(LABELS)), np.float32)
    dim_out = np.zeros((len(data), len(DIMENSIONS)), np.float32) if model.has_dimensions else None
    total = 0.0
    for rows, net in parts:
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            batch = collate(data.kind, [data.clean[i] for i in idx], cfg.pooling)
            logits, d = net.outputs(batch)
            if loss_fn is not None:
                target = torch.from_numpy(data.labels[idx]).long()
                total += float(loss_fn(logits, target)) * len(idx)
            out[idx] = torch.softmax(logits, dim=-1).numpy()
            if d is not None and dim_out is not None:
                dim_out[idx] = d.numpy()
    model.train()
    return out, total / max(len(data), 1), dim_out
