"""Audio loading and the paper's pre-processing, on edge signals and real files."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest

from edgeser.audio.augment import AugmentConfig, Augmenter
from edgeser.audio.frontend import (
    FrontEnd,
    peak_normalize,
    preemphasis,
    preprocess,
    trim_bounds,
    trim_silence,
)
from edgeser.audio.io import AudioError, audio_info, load_audio, resample, to_mono
from edgeser.testing import tone, write_empty_wav, write_wav

SR = 16_000


def _speechish(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    body = tone(1.3, SR, 180.0, seed) * np.hanning(int(1.3 * SR)).astype(np.float32)
    lead = 0.001 * rng.standard_normal(int(0.7 * SR)).astype(np.float32)
    tail = 0.0005 * rng.standard_normal(int(0.45 * SR)).astype(np.float32)
    return np.concatenate([lead, body, tail])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trim_matches_librosa(seed: int):
    x = _speechish(seed)
    _, (start, end) = librosa.effects.trim(x, top_db=20)
    assert trim_bounds(x) == (int(start), int(end))
    assert 0 < start < int(0.9 * SR) and end < len(x)


@pytest.mark.parametrize("n", [0, 1, 7, 2048, 5000])
def test_trim_matches_librosa_on_edge_lengths(n: int):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    if n == 0:
        assert trim_bounds(x) == (0, 0)
        return
    _, (start, end) = librosa.effects.trim(x, top_db=20)
    assert trim_bounds(x) == (int(start), int(end))


def test_preemphasis_and_peak_normalisation():
    x = np.array([1.0, 2.0, -1.0, 0.5], dtype=np.float32)
    np.testing.assert_allclose(
        preemphasis(x, SR), [1.0, 2.0 - 0.97, -1.0 - 1.94, 0.5 + 0.97], rtol=1e-6
    )
    y = peak_normalize(np.array([0.1, -0.4, 0.2], dtype=np.float32), SR)
    np.testing.assert_allclose(y, [0.25, -1.0, 0.5], rtol=1e-6)


@pytest.mark.parametrize(
    "signal",
    [np.zeros(0), np.zeros(1), np.ones(1), np.zeros(16000), np.full(16000, 0.3), np.full(3, 1e-12)],
    ids=["empty", "one-zero", "one-sample", "silent", "constant", "tiny"],
)
def test_preprocess_edge_signals_are_defined(signal: np.ndarray):
    y = preprocess(signal.astype(np.float32), SR)
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert y.size <= signal.size
    if y.size and np.abs(y).max() > 1e-8:  # below that the guard leaves it as is
        assert np.isclose(np.abs(y).max(), 1.0)


def test_preprocess_order_and_result():
    x = _speechish(3)
    y = preprocess(x, SR)
    start, end = trim_bounds(x)
    expected = preemphasis(x[start:end], SR)
    expected = expected / np.abs(expected).max()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert len(trim_silence(x, SR)) == end - start
    assert FrontEnd().key() == "trim=1,top_db=20,pre=0.97,peak=1"
    assert np.array_equal(FrontEnd(trim=False)(x, SR).shape, x.shape)


def test_peak_normalise_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        peak_normalize(np.array([0.1, np.nan], dtype=np.float32), SR)


def test_load_stereo_48k_downmix_and_resample(tmp_path: Path):
    st = tone(1.0, 48000, 440.0, channels=2)
    path = write_wav(tmp_path / "st.wav", st, 48000)
    info = audio_info(path)
    assert (info.channels, info.sample_rate, info.frames) == (2, 48000, 48000)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 1
    mono = to_mono(st)
    np.testing.assert_allclose(mono, st.mean(axis=1), rtol=1e-6)
    # the downmixed, resampled tone keeps its energy at 440 Hz
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * SR / len(y) - 440) < 5


def test_load_other_formats_and_bad_files(tmp_path: Path):
    flac = write_wav(tmp_path / "x.flac", tone(0.5, 22050), 22050)
    assert abs(len(load_audio(flac)) - 8000) <= 1
    empty = write_empty_wav(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="no audio"):
        load_audio(empty)
    assert load_audio(empty, allow_empty=True).size == 0
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(AudioError, match="unreadable"):
        load_audio(junk)
    with pytest.raises(AudioError, match="unreadable"):
        audio_info(junk)
    with pytest.raises(AudioError, match="no such"):
        load_audio(tmp_path / "nothing.wav")
    assert resample(np.ones(10, np.float32), SR).shape == (10,)
    with pytest.raises(AudioError):
        resample(np.ones(10, np.float32), 0)


def test_augmenter_is_seeded_and_leaves_global_rng_alone():
    x = preprocess(_speechish(4), SR)
    aug = Augmenter()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a, b = aug(x, SR, seed=7), aug(x, SR, seed=7)
    assert np.array_equal(a, b)
    assert np.array_equal(np.random.get_state()[1], before)
    outs = [aug(x, SR, seed=s) for s in range(8)]
    assert any(not np.array_equal(o, outs[0]) for o in outs[1:])
    assert all(o.shape == x.shape and np.all(np.isfinite(o)) for o in outs)


def test_augmentations_follow_their_config():
    x = preprocess(_speechish(5), SR)
    only_polarity = Augmenter(AugmentConfig(gain_p=0, noise_p=0, pitch_p=0, polarity_p=1))
    np.testing.assert_array_equal(only_polarity(x, SR, seed=1), -x)
    only_gain = Augmenter(AugmentConfig(gain_p=1, noise_p=0, pitch_p=0, polarity_p=0))
    peaks = [np.abs(only_gain(x, SR, seed=s)).max() for s in range(20)]
    db = 20 * np.log10(peaks)
    assert db.min() >= -18.0 - 1e-3 and db.max() <= 6.0 + 1e-3
    assert db.max() - db.min() > 6  # not re-normalised afterwards
    only_noise = Augmenter(
        AugmentConfig(
            gain_p=0, noise_p=1, pitch_p=0, polarity_p=0, noise_min_snr_db=20, noise_max_snr_db=20
        )
    )
    noise = only_noise(x, SR, seed=2) - x
    snr = 10 * np.log10(np.mean(x**2) / np.mean(noise**2))
    assert abs(snr - 20) < 0.5
    assert Augmenter()(np.zeros(0, np.float32), SR, seed=0).size == 0
    assert np.all(np.isfinite(Augmenter()(np.zeros(400, np.float32), SR, seed=0)))


def test_real_ravdess_files_through_the_front_end(ravdess_mini: Path):
    files = sorted(ravdess_mini.glob("Actor_*/*.wav"))
    stereo = [f for f in files if audio_info(f).channels == 2]
    assert len(stereo) == 2
    for f in [*stereo, files[0]]:
        x = load_audio(f)
        info = audio_info(f)
        assert abs(len(x) - info.frames / 3) <= 1  # 48 kHz -> 16 kHz
        y = preprocess(x, SR)
        assert 0 < len(y) < len(x)  # RAVDESS has leading/trailing silence to trim
        assert np.isclose(np.abs(y).max(), 1.0)
