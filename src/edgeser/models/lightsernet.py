"""LIGHT-SERNET (Aftab et al., ICASSP 2022): an MFCC front end and a ~0.46 M parameter CNN.

A PyTorch reimplementation of the authors' TensorFlow model (``Light_SERNet_V1``) and of its
input pipeline, for use as a from-scratch baseline next to the DistilHuBERT models.

Front end (as ``tf.signal`` computes it in the authors' ``dataio.py``):

1. a fixed duration per utterance: zero-pad at the end or crop to the first ``seconds``
   (:func:`fix_length`);
2. ``|STFT|`` (magnitude, not power): periodic Hann window of 1024, hop 256, FFT 1024, no
   padding, so ``1 + (N - 1024) // 256`` frames of 513 bins;
3. a 128-band HTK mel filterbank, 80–7600 Hz, exactly ``tf.signal.linear_to_mel_weight_matrix``
   (:func:`mel_matrix`), then ``log(mel + 1e-6)``;
4. ``tf.signal.mfccs_from_log_mel_spectrograms``: unnormalised DCT-II times
   ``rsqrt(2 * 128)``, the first 40 coefficients, clipped to ``[-10, 10]``.

:class:`MFCC` is that front end as an ONNX-exportable module; :func:`mfcc_numpy` is an
independent numpy reference of it; :class:`MFCCFrontEnd` is the encoder-like object the
feature cache calls. :class:`LightSERNet` is the network, ``[B, T, 40]`` MFCC in, logits
out (the TF model ends in a softmax; here the loss or the export graph applies it).

Faithful details of the Keras original worth knowing: BatchNorm uses Keras' defaults
(``eps=1e-3``, momentum 0.99, i.e. PyTorch ``momentum=0.01``); convolutions and the
classifier start from Glorot-uniform weights and zero biases; the original adds an L2
penalty of 1e-6 on the kernels of the five no-bias convolutions (not part of the module:
:meth:`LightSERNet.l2_parameters` names them and the training loop's ``adam`` optimiser
applies the penalty).

Training (``--model light-sernet`` defaults, :data:`edgeser.models.registry.LIGHT_SERNET_DEFAULTS`),
as the authors' code at github.com/AryaAftab/LIGHT-SERNET runs it:

=====================  ====================================  ===================================
setting                edgeser default                       where the authors set it
=====================  ====================================  ===================================
optimiser              Adam (``--optimizer adam``)           ``train.py``: ``model.compile(
                                                             optimizer=tf.keras.optimizers.Adam(
                                                             hyperparameters.LEARNING_RATE))``
learning rate          1e-4                                  ``hyperparameters.py``:
                                                             ``LEARNING_RATE = 1e-4``
schedule               constant, then x exp(-0.15) at every  ``callbacks.py``:
                       epoch >= 50 that is a multiple of 20  ``LearningRateScheduler``;
                       (first at epoch 60, 0-based)          ``LEARNING_RATE_DECAY_STRATPOINT =
                                                             50``, ``..._STEP = 20``,
                                                             ``..._PARAMETERS = -0.15``
epochs                 at most 60, early stopping after 15   ``EPOCHS = 300``
                       epochs without a better validation
                       UA (``--recipe authors``: 300, no
                       stopping)
batch size             32                                    ``BATCH_SIZE = 32`` (``dataio.py``:
                                                             reshuffled every epoch)
L2 penalty             1e-6 · Σw² on the five body convs     ``models.py``: ``kernel_regularizer=
                                                             regularizers.l2(hyperparameters.L2)``,
                                                             ``L2 = 1e-6``
dropout                0.3 before the classifier             ``DROPOUT = 0.3``
loss                   focal, γ = 2, no class weights, no    ``loss.py``:
                       label smoothing                       ``SparseCategoricalFocalLoss(gamma=
                                                             hyperparameters.GAMMA)``, ``GAMMA =
                                                             2``, ``class_weight=None``
augmentation           none (``aug_views = 0``)              ``dataio.py`` has none
input                  3 s of 40 MFCC (front end above)      ``run.sh``: ``-id 3``;
                                                             ``hyperparameters.py``: MFCC settings
=====================  ====================================  ===================================

Where edgeser differs, on purpose:

* ``run.sh`` runs every experiment with both the focal loss and cross-entropy
  (``train.py``'s ``--loss_name`` defaults to ``cross_entropy``); the default here is the
  focal loss (``--loss ce`` gives the other).
* Model selection: the authors' ``BestModelWeights`` callback keeps the epoch with the best
  ``val_accuracy`` where ``validation_data`` is the *test* fold (``train.py``), which lets
  the test speakers choose the model. edgeser selects on held-out validation speakers by UA
  (or keeps the last epoch when there are none), as for every model.
* Input window: the authors' ``utils/segment`` crops a longer utterance around its centre,
  pads a shorter one with zeros on both sides and scales it by its 99.9th-percentile
  amplitude (clipped to ±1), without silence trimming or pre-emphasis. edgeser feeds the
  signal every model sees (trimmed, pre-emphasised, peak-normalised:
  :class:`edgeser.audio.frontend.FrontEnd`) and keeps its first ``seconds``, zero-padded
  at the end (:func:`fix_length`), which the export graph does with a static slice. With
  trimmed speech the crop rarely matters (RAVDESS' trimmed utterances are ~2-3 s); the
  network ends in global average pooling, so where the speech sits in the window matters
  little.
* Seed: the authors fix 42; here ``--seed`` (default 0).
* Length: the authors' 300 epochs take about 5 hours for 6 folds of RAVDESS on a 2-core
  CPU. The default stops on the validation speakers instead (``--patience 15`` within
  ``--epochs 60``, the constant-rate part of their schedule; the best epoch's weights
  restored); ``--recipe authors`` trains their 300 epochs.

Per-speaker normalisation, the default (``--feature-norm speaker``; ``none``, as the
authors, gives the exportable network): the BatchNorm layers normalise with one speaker's
statistics. Training batches
are drawn from one speaker at a time, and at validation and test each speaker's
statistics are recomputed exactly from that speaker's utterances (AdaBN,
:func:`edgeser.training.trainer.adapt_batchnorm`). It is the network's counterpart of the
per-speaker standardisation of eGeMAPS and Pepino et al., transductive in the same way (a
test speaker's audio, never its labels), so it needs a speaker's utterances before
predicting and is not exported. Trained on one speaker, the network otherwise normalises a
new speaker with the training speaker's statistics, and on RAVDESS' actors of the other
gender predicts one or two classes (bench/README.md).

The exportable network (``--feature-norm none``) normalises with its training set's
statistics, computed over one pass of the clean training features before every validation
and at the end (:func:`edgeser.training.trainer.precise_batchnorm`), not with Keras'
moving averages: at momentum 0.99 these trail the weights by ~100 optimiser steps, which
the authors' corpora cover within an epoch but RAVDESS' 12 actors (8 steps an epoch) only
after a dozen; evaluated with them, the network's validation UA stayed at 0.25-0.38 and
its test UA over 6 folds was 0.307, against 0.625 with the training statistics.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LIGHT_SERNET_NUM_PARAMETERS",
    "MFCC",
    "LightSERNet",
    "LightSERNetConfig",
    "MFCCConfig",
    "MFCCFrontEnd",
    "as_waveform",
    "dct_matrix",
    "fix_length",
    "hann_window",
    "mel_matrix",
    "mfcc_numpy",
    "num_parameters",
]

#: Trainable parameters of :class:`LightSERNet` for 40 MFCC and 4 classes (the Keras
#: summary shows 1,728 more: the BatchNorm moving statistics, buffers here).
LIGHT_SERNET_NUM_PARAMETERS = 460_740

_BN_EPS = 1e-3  # Keras BatchNormalization defaults
_BN_MOMENTUM = 0.01  # Keras momentum 0.99


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MFCCConfig:
    """The LIGHT-SERNET front end's settings (the authors' ``hyperparameters.py``)."""

    sample_rate: int = 16_000
    frame_length: int = 1024
    frame_step: int = 256
    fft_length: int = 1024
    num_mel_bins: int = 128
    lower_hz: float = 80.0
    upper_hz: float = 7600.0
    n_mfcc: int = 40
    log_offset: float = 1e-6
    clip: float = 10.0
    seconds: float = 3.0

    def __post_init__(self) -> None:
        if self.frame_length < 1 or self.frame_step < 1:
            raise ValueError("frame_length and frame_step must be positive")
        if self.fft_length < self.frame_length:
            raise ValueError(f"fft_length {self.fft_length} < frame_length {self.frame_length}")
        if not 0.0 <= self.lower_hz < self.upper_hz <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= lower_hz < upper_hz <= {self.sample_rate / 2} Hz")
        if not 1 <= self.n_mfcc <= self.num_mel_bins:
            raise ValueError(f"n_mfcc must be in [1, num_mel_bins], got {self.n_mfcc}")
        if self.num_samples < self.frame_length:
            raise ValueError(
                f"seconds={self.seconds} gives {self.num_samples} samples, fewer than one "
                f"frame ({self.frame_length})"
            )

    def key(self) -> dict[str, int | float]:
        """All settings as a JSON-able dict (for cache keys and model metadata)."""
        return {k: (float(v) if isinstance(v, float) else int(v)) for k, v in asdict(self).items()}

    @property
    def num_samples(self) -> int:
        """Samples per utterance after :func:`fix_length`."""
        return round(self.seconds * self.sample_rate)

    @property
    def num_frames(self) -> int:
        """MFCC frames per utterance: ``1 + (num_samples - frame_length) // frame_step``."""
        return 1 + (self.num_samples - self.frame_length) // self.frame_step

    @property
    def num_bins(self) -> int:
        """Spectrogram bins (``fft_length // 2 + 1``)."""
        return self.fft_length // 2 + 1


# ------------------------------------------------------------------ fixed matrices


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, as ``tf.signal``: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(cfg: MFCCConfig = MFCCConfig()) -> np.ndarray:
    """``tf.signal.linear_to_mel_weight_matrix``: ``[fft_length // 2 + 1, num_mel_bins]``.

    Bin ``k`` has linear frequency ``k * (sr / 2) / (bins - 1)``; the DC bin is left out
    (row 0 is zero); ``num_mel_bins + 2`` band edges equally spaced in HTK mel between
    ``lower_hz`` and ``upper_hz``; triangles evaluated in the mel domain, clipped at 0, not
    area-normalised. Computed in float64, returned as float32.
    """
    bins = cfg.num_bins
    freqs = np.linspace(0.0, cfg.sample_rate / 2.0, bins)[1:]
    mel = _hz_to_mel(freqs)[:, None]  # [bins - 1, 1]
    edges = np.linspace(_hz_to_mel(cfg.lower_hz), _hz_to_mel(cfg.upper_hz), cfg.num_mel_bins + 2)
    lower, center, upper = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    rising = (mel - lower) / (center - lower)
    falling = (upper - mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.concatenate([np.zeros((1, cfg.num_mel_bins)), weights]).astype(np.float32)


def dct_matrix(num_mel_bins: int, n_mfcc: int) -> np.ndarray:
    """``[num_mel_bins, n_mfcc]`` float32 so that ``log_mel @ D`` equals
    ``tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :n_mfcc]``: the unnormalised
    DCT-II ``2 sum_n x_n cos(pi k (2n + 1) / 2N)`` times ``1 / sqrt(2N)``."""
    n = np.arange(num_mel_bins, dtype=np.float64)[:, None]
    k = np.arange(n_mfcc, dtype=np.float64)[None, :]
    basis = 2.0 * np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * num_mel_bins))
    return (basis / math.sqrt(2.0 * num_mel_bins)).astype(np.float32)


def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window (``tf.signal.hann_window(periodic=True)``), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


# --------------------------------------------------------------------- references


def fix_length(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop to the first ``num_samples`` samples or zero-pad at the end (float32 copy)."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if x.shape[0] >= num_samples:
        return x[:num_samples].copy()
    return np.concatenate([x, np.zeros(num_samples - x.shape[0], dtype=np.float32)])


def mfcc_numpy(wave: np.ndarray, cfg: MFCCConfig = MFCCConfig()) -> np.ndarray:
    """Reference MFCC ``[T, n_mfcc]`` (float32) of one already fixed-length wave.

    Written independently of :class:`MFCC`: explicit framing, ``np.fft.rfft`` (frames
    zero-padded at the end to ``fft_length``, as ``tf.signal.stft``), a direct cosine sum
    for the DCT; float64 throughout.
    """
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if x.shape[0] < cfg.frame_length:
        raise ValueError(f"need at least {cfg.frame_length} samples, got {x.shape[0]}")
    count = 1 + (x.shape[0] - cfg.frame_length) // cfg.frame_step
    frames = np.stack(
        [x[t * cfg.frame_step : t * cfg.frame_step + cfg.frame_length] for t in range(count)]
    )
    spectrum = np.abs(np.fft.rfft(frames * hann_window(cfg.frame_length), n=cfg.fft_length))
    log_mel = np.log(spectrum @ mel_matrix(cfg).astype(np.float64) + cfg.log_offset)
    m = cfg.num_mel_bins
    out = np.empty((count, cfg.n_mfcc))
    n = np.arange(m)
    for k in range(cfg.n_mfcc):
        out[:, k] = 2.0 * (log_mel * np.cos(np.pi * k * (2 * n + 1) / (2 * m))).sum(axis=1)
    out /= math.sqrt(2.0 * m)
    return np.clip(out, -cfg.clip, cfg.clip).astype(np.float32)


# ------------------------------------------------------------------------ modules


class MFCC(nn.Module):
    """``wave [B, num_samples] float32 -> MFCC [B, T, n_mfcc]`` (the TF front end).

    STFT: ``torch.stft``, exported as the ONNX ``STFT`` operator. Measured on this 2-core
    CPU for 3 s (1 thread; B=1 / B=16): PyTorch 0.6 / 11 ms (complex output) against
    4.8 / 109 ms for a matmul of strided frames with a fixed 1024x1026 windowed-DFT basis;
    onnxruntime 3.8 / 76 ms (``STFT`` op) against 4.6 / 83 ms (matmul). The matmul is no
    faster in onnxruntime and its basis adds 4.2 MB of float constants to the file (the
    whole int8 network is ~0.5 MB); ``STFT`` costs a 4 kB window. In eager mode the complex
    STFT is used (fastest); while exporting, the real-valued form the ONNX exporter
    supports (same numbers).
    """

    def __init__(self, cfg: MFCCConfig = MFCCConfig()) -> None:
        super().__init__()
        if cfg.fft_length != cfg.frame_length:
            raise ValueError(
                "MFCC supports fft_length == frame_length only (torch.stft centres a shorter "
                "window inside the FFT, tf.signal pads the frame at the end)"
            )
        self.cfg = cfg
        self.register_buffer(
            "window", torch.from_numpy(hann_window(cfg.frame_length).astype(np.float32))
        )
        self.register_buffer("mel", torch.from_numpy(mel_matrix(cfg)))
        self.register_buffer("dct", torch.from_numpy(dct_matrix(cfg.num_mel_bins, cfg.n_mfcc)))

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        """``|STFT|`` as ``[B, T, bins]``."""
        cfg = self.cfg
        args = dict(
            n_fft=cfg.fft_length,
            hop_length=cfg.frame_step,
            win_length=cfg.frame_length,
            window=self.window,
            center=False,
            onesided=True,
            normalized=False,
        )
        if torch.onnx.is_in_onnx_export():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # return_complex=False is deprecated
                spec = torch.stft(wave, return_complex=False, **args)  # [B, bins, T, 2]
            mag = torch.sqrt(spec[..., 0] * spec[..., 0] + spec[..., 1] * spec[..., 1])
        else:
            mag = torch.stft(wave, return_complex=True, **args).abs()  # [B, bins, T]
        return mag.transpose(1, 2)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.magnitude(wave.to(torch.float32)), self.mel)
        coeffs = torch.matmul(torch.log(mel + self.cfg.log_offset), self.dct)
        return torch.clamp(coeffs, -self.cfg.clip, self.cfg.clip)


def as_waveform(wave: np.ndarray | torch.Tensor, index: int = 0) -> np.ndarray:
    """A front end's input as a 1-D float numpy array; anything else is a ``ValueError``
    naming the waveform's position ``index``."""
    x = np.asarray(wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else wave)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"waveform {index}: expected a 1-D float waveform, got {x.dtype} {x.shape}"
        )
    return x


class MFCCFrontEnd:
    """The MFCC front end as an encoder-like object for the feature cache.

    ``encode(waves)`` gives each (already pre-processed) wave's ``[T, n_mfcc]`` float32
    MFCC after :func:`fix_length`; ``identity`` names the settings (stable across runs).
    """

    source = "mfcc"
    is_random = False
    precision = "fp32"

    def __init__(self, cfg: MFCCConfig = MFCCConfig(), *, batch_size: int = 32) -> None:
        self.cfg = cfg
        self.batch_size = int(batch_size)
        payload = "light-sernet-mfcc" + json.dumps(cfg.key(), sort_keys=True)
        self.identity = hashlib.sha256(payload.encode()).hexdigest()[:16]
        self._mfcc = MFCC(cfg).eval()

    def __repr__(self) -> str:
        return f"MFCCFrontEnd(identity={self.identity}, cfg={self.cfg})"

    def encode(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """``[T, n_mfcc]`` float32 per wave (cropped/zero-padded to ``cfg.seconds``)."""
        fixed = [fix_length(as_waveform(w, i), self.cfg.num_samples) for i, w in enumerate(waves)]
        out: list[torch.Tensor] = []
        with torch.no_grad():
            for start in range(0, len(fixed), self.batch_size):
                batch = torch.from_numpy(np.stack(fixed[start : start + self.batch_size]))
                out.extend(f.clone() for f in self._mfcc(batch))
        return out


@dataclass
class LightSERNetConfig:
    """Classes, dropout before the classifier, and the front end the model was trained on."""

    num_classes: int = 4
    dropout: float = 0.3
    mfcc: MFCCConfig = field(default_factory=MFCCConfig)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _pool(kernel: tuple[int, int]) -> nn.AvgPool2d:
    """TF ``AveragePooling2D(padding="same")`` with stride = kernel: ceil output size, the
    mean over in-bounds cells only (PyTorch's divisor with ``padding=0`` and ``ceil_mode``
    already counts only those; ``count_include_pad=False`` makes the exported ONNX
    ``AveragePool`` say so too)."""
    return nn.AvgPool2d(kernel, stride=kernel, ceil_mode=True, count_include_pad=False)


class _Block(nn.Sequential):
    """conv (same padding) -> BN -> ReLU -> [AvgPool]."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int],
        *,
        bias: bool,
        pool: tuple[int, int] | None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, padding="same", bias=bias),
            _bn(cout),
            nn.ReLU(),
        ]
        if pool is not None:
            layers.append(_pool(pool))
        super().__init__(*layers)


class LightSERNet(nn.Module):
    """``Light_SERNet_V1``: ``mfcc [B, T, n_mfcc] -> logits [B, num_classes]``.

    Three parallel paths on the MFCC image (kernels 11x1 over time, 1x9 over coefficients,
    3x3; 32 channels each, pooled 2x2) concatenated to 96 channels; 3x3 blocks of 64, 96,
    128, 160 channels pooled (2,2), (2,2), (2,1), (2,1); a 1x1 conv to 320; global average
    pooling; dropout; a linear classifier.
    """

    def __init__(self, cfg: LightSERNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else LightSERNetConfig()
        self.paths = nn.ModuleList(
            [_Block(1, 32, k, bias=True, pool=(2, 2)) for k in ((11, 1), (1, 9), (3, 3))]
        )
        self.body = nn.Sequential(
            _Block(96, 64, (3, 3), bias=False, pool=(2, 2)),
            _Block(64, 96, (3, 3), bias=False, pool=(2, 2)),
            _Block(96, 128, (3, 3), bias=False, pool=(2, 1)),
            _Block(128, 160, (3, 3), bias=False, pool=(2, 1)),
            _Block(160, 320, (1, 1), bias=False, pool=None),
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(320, cfg.num_classes)
        self.reset_parameters()
        # NHWC kernels: oneDNN's convolutions (and their gradients) run ~1.4x faster on the
        # CPU in this layout than in NCHW (a training step ~1.2-1.3x on a 2-core AVX2 CPU);
        # the values are the same up to rounding.
        self.to(memory_format=torch.channels_last)

    def reset_parameters(self) -> None:
        """Keras initialisation: Glorot-uniform kernels, zero biases, BN (1, 0, 0, 1)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def l2_parameters(self) -> list[nn.Parameter]:
        """The kernels the authors' ``models.py`` regularises (``kernel_regularizer=l2``):
        the five bias-free body convolutions, not the input paths nor the classifier."""
        return [m.weight for m in self.body.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        if mfcc.ndim != 3 or mfcc.shape[-1] != self.cfg.mfcc.n_mfcc:
            raise ValueError(
                f"expected MFCC [batch, frames, {self.cfg.mfcc.n_mfcc}], got {tuple(mfcc.shape)}"
            )
        x = mfcc[:, None]  # [B, 1, T, F]
        x = torch.cat([path(x) for path in self.paths], dim=1)
        x = self.body(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(self.dropout(x))


def num_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
