"""A small, vectorised source-filter speech synthesiser: the rendering half.

:mod:`edgeser.data.synth.planning` turns text or a duration into frame-level targets
(:class:`~edgeser.data.synth.planning.Plan`); this module renders a plan to audio.

The voice is a Klatt-style cascade synthesiser reduced to what emotional prosody needs:

* **source**: a Rosenberg glottal-flow pulse train (differentiated, i.e. flow derivative
  with radiation) driven by an F0 contour (phrase declination, pitch accents, terminal
  contour, slow wander, optional tremor) with per-period jitter and shimmer; the open
  quotient and an extra one-pole low-pass follow the voice's *tension* (spectral tilt), and
  pitch-synchronous aspiration noise makes a voice breathy;
* **vocal tract**: five cascaded second-order formant resonators whose frequencies glide
  between phone targets (coarticulation by smoothing), updated every 5 ms
  (``scipy.signal.sosfilt`` with carried state);
* **consonants**: stops (closure, burst, aspiration), fricatives (band-passed noise in
  three bands, added in parallel), nasals and approximants (voiced, own formant loci);
* **channel**: leading and trailing silence carrying a low noise floor, optional
  reverberation, hum, band limitation and a soft limiter.

Signal contract: every function that returns audio returns a float32 mono
``np.ndarray`` with values in ``[-1, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

from .planning import FRAME_S, REF_RATE, VOWELS, Plan, VoiceSettings, plan_utterance

try:  # scipy's compiled kernel behind sosfilt: same numerics, without per-call overhead
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # pragma: no cover - private API moved
    _sosfilt_kernel = None

__all__ = ["Channel", "prepare", "render", "synthesize", "synthesize_planned"]

#: Speech RMS level (dBFS) of a voice with ``level_db == 0``.
_REF_LEVEL_DBFS = -24.0

_SCHWA = np.array(VOWELS["ax"])
_F45 = (3500.0, 4500.0)
_BANDWIDTHS = np.array([60.0, 90.0, 150.0, 200.0, 250.0])


@dataclass(frozen=True)
class Channel:
    """Recording conditions: noise floor, room, hum, bandwidth, gain."""

    snr_db: float = 45.0  #: speech RMS over noise-floor RMS, dB
    reverb_rt60_s: float = 0.0  #: reverberation time (0: dry)
    reverb_mix: float = 0.15  #: reverberant energy share
    hum_db: float | None = None  #: mains hum relative to speech RMS, dB (None: no hum)
    lowpass_hz: float | None = None  #: band limitation of a poor microphone
    highpass_hz: float = 60.0  #: low cut of microphone and preamp
    bass_db: float = 0.0  #: low-shelf gain below ~250 Hz (close-mic proximity effect)
    presence_db: float = 0.0  #: peak gain around 4.5 kHz (microphone presence / distance)
    gain_db: float = 0.0  #: recording gain applied to speech and room alike
    limit: float = 0.8  #: soft limiter knee (linear); peaks stay below 0.98


# --------------------------------------------------------------------------- rendering


def _fill_nan(x: np.ndarray) -> np.ndarray:
    """Fill NaN rows by linear interpolation between defined rows (schwa if none)."""
    out = x.copy()
    for k in range(x.shape[1]):
        col = out[:, k]
        ok = ~np.isnan(col)
        if not ok.any():
            col[:] = _SCHWA[k]
        else:
            idx = np.arange(len(col))
            col[~ok] = np.interp(idx[~ok], idx[ok], col[ok])
    return out


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    """Hann-window moving average along axis 0 with edge padding (n odd)."""
    if n <= 1:
        return x
    win = np.hanning(n + 2)[1:-1]
    win /= win.sum()
    pad = n // 2
    xp = np.pad(x, [(pad, pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    if x.ndim == 1:
        return np.convolve(xp, win, mode="valid")
    return np.stack([np.convolve(xp[:, k], win, mode="valid") for k in range(x.shape[1])], 1)


def _f0_track(plan: Plan, v: VoiceSettings, rng: np.random.Generator) -> np.ndarray:
    """F0 per frame, Hz."""
    nf = plan.n_frames
    idx = np.arange(nf, dtype=float)
    st = np.zeros(nf)
    for a, b in plan.phrases:
        if b > a:
            st[a:b] += v.declination_st * (0.5 - np.arange(b - a) / max(b - a - 1, 1))
    width = 12.0 * REF_RATE / max(v.rate_sps, 0.5)  # frames (~60 ms at the reference rate)
    if plan.accents:
        c = np.array([a[0] for a in plan.accents], float)
        s = np.array([a[1] for a in plan.accents])
        st += (s[None, :] * np.exp(-0.5 * ((idx[:, None] - c[None, :]) / width) ** 2)).sum(1) * (
            v.f0_range_st
        )
    a, b = plan.final
    if b > a:
        st[a:b] += v.final_st * np.linspace(0.0, 1.0, b - a) ** 1.5
        st[b:] += v.final_st
    knots = rng.normal(0.0, v.f0_wander_st, nf // 40 + 2)
    st += np.interp(idx, np.linspace(0, nf - 1, len(knots)), knots)
    if v.tremor_st > 0:
        st += v.tremor_st * np.sin(
            2 * np.pi * rng.uniform(5.0, 7.0) * idx * FRAME_S + rng.uniform(0, 6.3)
        )
    return v.f0_hz * 2.0 ** (st / 12.0)


def _sos_resonators(freqs: np.ndarray, bws: np.ndarray, sr: int) -> np.ndarray:
    """(n, k, 6) second-order sections of unity-DC-gain resonators."""
    r = np.exp(-np.pi * bws / sr)
    theta = 2 * np.pi * freqs / sr
    a1 = -2 * r * np.cos(theta)
    a2 = r * r
    sos = np.zeros((*freqs.shape, 6))
    sos[..., 0] = 1 + a1 + a2
    sos[..., 3] = 1.0
    sos[..., 4] = a1
    sos[..., 5] = a2
    return sos


def _time_varying_sosfilt(sos: np.ndarray, x: np.ndarray, hop: int) -> np.ndarray:
    """Filter ``x`` with section set ``sos[i]`` on samples ``[i*hop, (i+1)*hop)``."""
    nf = sos.shape[0]
    frames = np.array(x[: nf * hop], dtype=np.float64).reshape(nf, hop)
    if _sosfilt_kernel is not None:
        zi = np.zeros((1, sos.shape[1], 2))
        for i in range(nf):
            _sosfilt_kernel(sos[i], frames[i : i + 1], zi)  # in place, state carried in zi
        return frames.ravel()
    zi2 = np.zeros((sos.shape[1], 2))
    for i in range(nf):
        frames[i], zi2 = signal.sosfilt(sos[i], frames[i], zi=zi2)
    return frames.ravel()


def render(
    plan: Plan, v: VoiceSettings, sr: int, rng: np.random.Generator, *, hop: int | None = None
) -> np.ndarray:
    """Render a plan to a float64 waveform (speech only, no channel, arbitrary level)."""
    hop = hop or max(1, round(sr * FRAME_S))
    nf = plan.n_frames
    n = nf * hop
    nyq = sr / 2

    # ---- control tracks (frame rate)
    f3 = _fill_nan(plan.formants)
    gain = 1.0 + 0.35 * v.articulation
    f3 = _SCHWA + (f3 - _SCHWA) * gain
    f3[:, 0] *= v.f1_scale
    f3[:, 1] *= v.f2_scale
    formants = np.concatenate([f3, np.broadcast_to(_F45, (nf, 2))], 1) * v.formant_scale
    formants = _smooth(formants, 9)
    formants = np.minimum(formants, 0.45 * sr)
    bws = np.broadcast_to(_BANDWIDTHS, (nf, 5)) * (1 + 0.8 * v.breathiness - 0.12 * v.tension)
    bws = bws * (v.formant_scale**0.5)
    bws = bws.copy()
    bws[:, 0] += 90.0 * _smooth(plan.nasal, 5)
    av = _smooth(plan.av * (1 - 0.35 * plan.nasal), 3)
    ah = _smooth(plan.ah, 3)
    af = _smooth(plan.af, 3)
    f0 = _f0_track(plan, v, rng)

    # ---- per-sample tracks
    t_frames = (np.arange(nf) + 0.5) * hop
    ts = np.arange(n, dtype=float)
    av_s = np.interp(ts, t_frames, av)
    ah_s = np.interp(ts, t_frames, ah)
    f0_s = np.interp(ts, t_frames, f0)

    # ---- glottal source: jittered Rosenberg pulses, differentiated
    phase0 = np.cumsum(f0_s) / sr
    n_periods = int(phase0[-1]) + 2
    jit = 1.0 + np.clip(rng.normal(0.0, v.jitter, n_periods), -0.2, 0.2)
    f0_j = f0_s * jit[phase0.astype(int)]
    phase = np.cumsum(f0_j) / sr
    period = phase.astype(int)
    frac = phase - period
    oq = float(np.clip(0.55 - 0.15 * v.tension + 0.25 * v.breathiness, 0.3, 0.85))
    tn = oq * float(np.clip(0.28 - 0.1 * v.tension, 0.12, 0.4))  # closing phase
    tp = oq - tn
    g = np.where(
        frac < tp,
        0.5 * (1 - np.cos(np.pi * frac / tp)),
        np.where(frac < oq, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0),
    )
    shim = 1.0 + np.clip(rng.normal(0.0, v.shimmer, int(period[-1]) + 1), -0.5, 0.5)
    e = np.diff(g, prepend=0.0) * shim[period]
    # spectral tilt: one-pole low-pass for lax/breathy voices, a mild high-frequency
    # emphasis for strongly pressed ones
    tilt = float(np.clip(0.3 - 0.35 * v.tension + 0.3 * v.breathiness, -0.3, 0.85))
    if tilt > 0:
        e = signal.lfilter([1 - tilt], [1, -tilt], e)
    elif tilt < 0:
        e = signal.lfilter([1.0, tilt], [1.0], e)
    voiced = av_s > 0.3
    e_rms = float(np.sqrt(np.mean(e[voiced] ** 2))) if voiced.any() else 1.0
    e = e / max(e_rms, 1e-9)
    noise = rng.standard_normal(n)
    asp = noise * (0.35 * v.breathiness * av_s * (0.4 + 0.6 * g) + ah_s)
    x = av_s * e + asp

    # ---- vocal tract: cascaded formant resonators, coefficients updated per frame
    sos = np.ascontiguousarray(_sos_resonators(formants, bws, sr))
    y = _time_varying_sosfilt(sos, x, hop)

    # ---- frication: three noise bands in parallel
    af_s = np.stack([np.interp(ts, t_frames, af[:, k]) for k in range(3)], 1)
    if af_s.any():
        fs = v.formant_scale
        bands = [(1000.0 * fs, 2600.0 * fs), (2000.0 * fs, 4200.0 * fs), (4000.0 * fs, 8000.0 * fs)]
        fn = rng.standard_normal(n)
        fric = np.zeros(n)
        for k, (lo, hi) in enumerate(bands):
            hi = min(hi, 0.92 * nyq)
            lo = min(lo, 0.6 * hi)
            bsos = signal.butter(2, [lo / nyq, hi / nyq], btype="bandpass", output="sos")
            fric += signal.sosfilt(bsos, fn) * af_s[:, k]
        y_rms = float(np.sqrt(np.mean(y[voiced] ** 2))) if voiced.any() else 1.0
        f_rms = float(np.sqrt(np.mean(fric[af_s.max(1) > 0.5] ** 2))) if (af_s > 0.5).any() else 1.0
        y = y + fric * (0.35 * y_rms / max(f_rms, 1e-9))

    # ---- remove DC / sub-sonic energy
    y = signal.sosfilt(signal.butter(2, 60.0 / nyq, btype="highpass", output="sos"), y)
    return y


def _biquad(kind: str, f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """One RBJ-cookbook section (``kind`` "peak" or "lowshelf") as a (1, 6) sos array."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    alpha = np.sin(w0) / (2 * q)
    cw = np.cos(w0)
    if kind == "peak":
        b = [1 + alpha * a, -2 * cw, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cw, 1 - alpha / a]
    else:  # low shelf
        sa = 2 * np.sqrt(a) * alpha
        b = [a * ((a + 1) - (a - 1) * cw + sa), 2 * a * ((a - 1) - (a + 1) * cw),
             a * ((a + 1) - (a - 1) * cw - sa)]  # fmt: skip
        den = [(a + 1) + (a - 1) * cw + sa, -2 * ((a - 1) + (a + 1) * cw),
               (a + 1) + (a - 1) * cw - sa]  # fmt: skip
    return np.array([[*(np.array(b) / den[0]), 1.0, den[1] / den[0], den[2] / den[0]]])


def _apply_channel(
    speech: np.ndarray,
    v: VoiceSettings,
    ch: Channel,
    sr: int,
    rng: np.random.Generator,
    *,
    lead: int,
    n_samples: int,
    voiced: np.ndarray,
) -> np.ndarray:
    """Level, room, band limit, noise floor and limiter; returns the whole clip."""
    rms = float(np.sqrt(np.mean(speech[voiced] ** 2))) if voiced.any() else 1e-9
    level = 10 ** ((_REF_LEVEL_DBFS + v.level_db + ch.gain_db) / 20)
    speech = speech * (level / max(rms, 1e-12))
    out = np.zeros(n_samples)
    end = min(n_samples, lead + len(speech))
    out[lead:end] = speech[: end - lead]
    if ch.reverb_rt60_s > 0:
        ir_n = int(ch.reverb_rt60_s * sr)
        t = np.arange(ir_n) / sr
        ir = rng.standard_normal(ir_n) * np.exp(-6.9 * t / ch.reverb_rt60_s)
        ir = signal.lfilter([0.5], [1, -0.5], ir)  # darker tail
        ir *= np.sqrt(ch.reverb_mix / np.sum(ir**2))
        wet = signal.fftconvolve(out, ir)[:n_samples]
        out = np.sqrt(1 - ch.reverb_mix) * out + wet
    # microphone response
    sections = [signal.butter(2, ch.highpass_hz / (sr / 2), btype="highpass", output="sos")]
    if ch.bass_db:
        sections.append(_biquad("lowshelf", 250.0, ch.bass_db, 0.7, sr))
    if ch.presence_db and 0.45 * sr > 4500.0:
        sections.append(_biquad("peak", 4500.0, ch.presence_db, 0.9, sr))
    if ch.lowpass_hz is not None and ch.lowpass_hz < 0.45 * sr:
        sections.append(signal.butter(4, ch.lowpass_hz / (sr / 2), output="sos"))
    out = signal.sosfilt(np.concatenate(sections), out)
    # noise floor: slightly pink background noise over the whole clip
    speech_level = level
    floor = signal.lfilter([1.0], [1.0, -0.6], rng.standard_normal(n_samples))
    floor *= speech_level * 10 ** (-ch.snr_db / 20) / max(float(np.std(floor)), 1e-12)
    out = out + floor
    if ch.hum_db is not None:
        t = np.arange(n_samples) / sr
        f = 60.0 if rng.random() < 0.5 else 50.0
        hum = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 3 * f * t + 1.0)
        out = out + hum * speech_level * 10 ** (ch.hum_db / 20) / np.sqrt(0.625)
    # soft limiter: linear below the knee, tanh above, never reaching 1
    k, ceiling = ch.limit, 0.98
    a = np.abs(out)
    over = a > k
    if over.any():
        squash = k + (ceiling - k) * np.tanh((a[over] - k) / (ceiling - k))
        out[over] = np.sign(out[over]) * squash
    return out


def synthesize(
    v: VoiceSettings,
    sr: int,
    rng: np.random.Generator,
    *,
    text: str | None = None,
    duration_s: float | None = None,
    n_samples: int | None = None,
    lead_s: float = 0.3,
    trail_s: float = 0.3,
    channel: Channel | None = None,
) -> np.ndarray:
    """Synthesise one utterance with leading/trailing silence.

    Either ``text`` (a fixed sentence; the length follows from the speaking rate) or an
    exact total length (``n_samples`` or ``duration_s``; random pseudo-words fill it).
    Returns float32 mono in ``[-1, 1]``.
    """
    return synthesize_planned(
        *prepare(
            v,
            sr,
            rng,
            text=text,
            duration_s=duration_s,
            n_samples=n_samples,
            lead_s=lead_s,
            trail_s=trail_s,
        ),
        v,
        sr,
        rng,
        channel or Channel(),
    )


def prepare(
    v: VoiceSettings,
    sr: int,
    rng: np.random.Generator,
    *,
    text: str | None = None,
    duration_s: float | None = None,
    n_samples: int | None = None,
    lead_s: float = 0.3,
    trail_s: float = 0.3,
) -> tuple[Plan, int, int]:
    """Plan an utterance; returns ``(plan, lead_samples, n_samples)`` (cheap, no audio)."""
    hop = max(1, round(sr * FRAME_S))
    lead = round(lead_s * sr)
    if text is None:
        if n_samples is None:
            if duration_s is None:
                raise ValueError("give text, duration_s or n_samples")
            n_samples = round(duration_s * sr)
        trail = round(trail_s * sr)
        speech_frames = (n_samples - lead - trail) // hop
        if speech_frames < 12:
            raise ValueError(f"utterance too short for its silences: {n_samples / sr:.3f} s")
        plan = plan_utterance(v, rng, speech_s=speech_frames * FRAME_S)
        return plan, lead, n_samples
    plan = plan_utterance(v, rng, text=text)
    total = lead + plan.n_frames * hop + round(trail_s * sr)
    if n_samples is not None and n_samples != total:
        raise ValueError("n_samples cannot be imposed on a fixed text")
    return plan, lead, total


def synthesize_planned(
    plan: Plan,
    lead: int,
    n_samples: int,
    v: VoiceSettings,
    sr: int,
    rng: np.random.Generator,
    channel: Channel,
) -> np.ndarray:
    """Render a prepared plan through a channel into a clip of ``n_samples`` samples.

    At 32 kHz and above the voice is rendered at half the rate and upsampled (the
    synthesiser puts no energy above ~10 kHz); the channel runs at the full rate.
    """
    hop = max(1, round(sr * FRAME_S))
    if sr >= 32000 and sr % 2 == 0 and hop % 2 == 0:
        half = render(plan, v, sr // 2, rng, hop=hop // 2)
        speech = soxr.resample(half, sr // 2, sr, quality="HQ")
    else:
        speech = render(plan, v, sr, rng, hop=hop)
    t_frames = (np.arange(plan.n_frames) + 0.5) * hop
    voiced = np.interp(np.arange(len(speech)), t_frames, plan.av) > 0.5
    out = _apply_channel(speech, v, channel, sr, rng, lead=lead, n_samples=n_samples, voiced=voiced)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
