"""A small, vectorised source-filter speech synthesiser.

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

import re
from dataclasses import dataclass, field

import numpy as np
import soxr
from scipy import signal

try:  # scipy's compiled kernel behind sosfilt: same numerics, without per-call overhead
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # pragma: no cover - private API moved
    _sosfilt_kernel = None

__all__ = [
    "FRAME_S",
    "Channel",
    "Plan",
    "Syllable",
    "VoiceSettings",
    "plan_utterance",
    "random_words",
    "render",
    "synthesize",
    "text_to_words",
]

#: Control-frame period of the synthesiser (formant and amplitude tracks), seconds.
FRAME_S = 0.005
#: Reference syllable rate at which the nominal phone durations below hold.
_REF_RATE = 4.5
#: Speech RMS level (dBFS) of a voice with ``level_db == 0``.
_REF_LEVEL_DBFS = -24.0

# Vowel targets (F1, F2, F3) of an adult male voice, Hz (after Hillenbrand et al. 1995).
_VOWELS: dict[str, tuple[float, float, float]] = {
    "iy": (342, 2322, 3000),
    "ih": (427, 2034, 2684),
    "eh": (580, 1799, 2605),
    "ae": (660, 1850, 2600),
    "aa": (768, 1333, 2522),
    "ao": (652, 997, 2538),
    "uh": (469, 1122, 2434),
    "uw": (378, 997, 2343),
    "ah": (623, 1200, 2550),
    "er": (474, 1379, 1710),
    "ax": (500, 1500, 2500),
}
_DIPHTHONGS: dict[str, tuple[str, str]] = {
    "ay": ("aa", "ih"),
    "aw": ("aa", "uh"),
    "oy": ("ao", "ih"),
    "ey": ("eh", "iy"),
    "ow": ("ao", "uh"),
}
_SCHWA = np.array(_VOWELS["ax"])
_F45 = (3500.0, 4500.0)
_BANDWIDTHS = np.array([60.0, 90.0, 150.0, 200.0, 250.0])


@dataclass(frozen=True)
class _Cons:
    kind: str  # stop | fric | h | nasal | approx
    locus: tuple[float, float, float] | None
    voiced: bool
    bands: tuple[float, float, float] = (0.0, 0.0, 0.0)  # frication low / mid / high


_CONSONANTS: dict[str, _Cons] = {
    "p": _Cons("stop", (400, 900, 2300), False, (0.6, 0.25, 0.1)),
    "b": _Cons("stop", (300, 900, 2300), True, (0.5, 0.2, 0.1)),
    "t": _Cons("stop", (400, 1750, 2700), False, (0.15, 0.45, 1.0)),
    "d": _Cons("stop", (300, 1700, 2650), True, (0.1, 0.35, 0.8)),
    "k": _Cons("stop", (400, 1900, 2500), False, (0.35, 1.0, 0.35)),
    "g": _Cons("stop", (300, 1900, 2400), True, (0.3, 0.8, 0.3)),
    "f": _Cons("fric", (400, 1100, 2300), False, (0.3, 0.3, 0.35)),
    "v": _Cons("fric", (300, 1100, 2300), True, (0.2, 0.2, 0.2)),
    "th": _Cons("fric", (400, 1400, 2600), False, (0.25, 0.25, 0.3)),
    "dh": _Cons("fric", (300, 1400, 2600), True, (0.1, 0.1, 0.15)),
    "s": _Cons("fric", (400, 1700, 2700), False, (0.03, 0.15, 1.0)),
    "z": _Cons("fric", (300, 1700, 2700), True, (0.02, 0.1, 0.6)),
    "sh": _Cons("fric", (400, 1900, 2500), False, (0.1, 1.0, 0.5)),
    "zh": _Cons("fric", (300, 1900, 2500), True, (0.05, 0.6, 0.3)),
    "h": _Cons("h", None, False),
    "m": _Cons("nasal", (280, 1000, 2200), True),
    "n": _Cons("nasal", (280, 1500, 2500), True),
    "ng": _Cons("nasal", (280, 1900, 2500), True),
    "l": _Cons("approx", (360, 1300, 2700), True),
    "r": _Cons("approx", (420, 1300, 1600), True),
    "w": _Cons("approx", (300, 650, 2200), True),
    "y": _Cons("approx", (280, 2100, 3000), True),
}
# Nominal durations (ms) at the reference rate.
_DUR_MS = {"stop": 55.0, "fric": 85.0, "h": 55.0, "nasal": 65.0, "approx": 55.0}
_VOWEL_MS = 105.0


@dataclass(frozen=True)
class VoiceSettings:
    """Everything that shapes one utterance's voice and prosody.

    Speaker and emotion profiles (:mod:`edgeser.data.synth.emotion`) resolve to one of these.
    """

    f0_hz: float = 120.0  #: F0 baseline (phrase mean before accents), Hz
    f0_range_st: float = 3.0  #: pitch-accent excursion, semitones
    declination_st: float = 2.5  #: F0 drop over a phrase, semitones
    final_st: float = -2.0  #: terminal contour (negative: fall, positive: rise), semitones
    f0_wander_st: float = 0.4  #: slow random F0 drift, semitones (sd)
    tremor_st: float = 0.0  #: vocal tremor depth (~6 Hz), semitones
    rate_sps: float = 4.5  #: syllables per second
    pause_prob: float = 0.15  #: probability of a pause at a word boundary
    pause_scale: float = 1.0  #: pause length multiplier
    level_db: float = 0.0  #: speech level relative to -24 dBFS RMS
    tension: float = 0.0  #: -1 lax/breathy … +1 pressed, up to 1.5 (open quotient, tilt)
    breathiness: float = 0.05  #: aspiration-noise ratio
    jitter: float = 0.006  #: per-period F0 perturbation (fraction)
    shimmer: float = 0.04  #: per-period amplitude perturbation (fraction)
    formant_scale: float = 1.0  #: vocal-tract-length scaling of all formants
    f1_scale: float = 1.0  #: F1 multiplier (mouth opening)
    f2_scale: float = 1.0  #: F2 multiplier (lip spreading, e.g. smiling)
    articulation: float = 0.0  #: -1 undershoot (towards schwa) … +1 hyper-articulated


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


@dataclass(frozen=True)
class Syllable:
    """A syllable: onset consonants, a vowel nucleus, coda consonants and stress."""

    onset: tuple[str, ...]
    vowel: str
    coda: tuple[str, ...] = ()
    stress: bool = False


@dataclass
class Plan:
    """Frame-level targets of an utterance (sample-rate independent)."""

    formants: np.ndarray  #: (n_frames, 3) F1-F3 targets, NaN where undefined
    av: np.ndarray  #: voicing amplitude per frame
    ah: np.ndarray  #: aspiration amplitude per frame (through the tract)
    af: np.ndarray  #: (n_frames, 3) frication amplitudes (low, mid, high band)
    nasal: np.ndarray  #: nasal murmur flag per frame
    accents: list[tuple[int, float]] = field(default_factory=list)  #: (frame, strength)
    phrases: list[tuple[int, int]] = field(default_factory=list)  #: frame ranges
    final: tuple[int, int] = (0, 0)  #: frame range of the last vowel
    n_syllables: int = 0

    @property
    def n_frames(self) -> int:
        return int(self.av.shape[0])


# --------------------------------------------------------------------------- text


_GRAPHEME_VOWELS = [
    ("eigh", "ey"), ("ough", "ao"), ("ee", "iy"), ("ea", "iy"), ("oo", "uw"), ("ai", "ey"),
    ("ay", "ey"), ("ei", "ey"), ("ey", "ey"), ("oa", "ow"), ("ow", "ow"), ("ou", "aw"),
    ("oi", "oy"), ("oy", "oy"), ("au", "ao"), ("aw", "ao"), ("ie", "ay"), ("ue", "uw"),
    ("a", "ae"), ("e", "eh"), ("i", "ih"), ("o", "aa"), ("u", "ah"), ("y", "iy"),
]  # fmt: skip
_GRAPHEME_CONS = [
    ("tch", ("t", "sh")), ("th", ("th",)), ("sh", ("sh",)), ("ch", ("t", "sh")),
    ("ck", ("k",)), ("ng", ("ng",)), ("ph", ("f",)), ("wh", ("w",)), ("qu", ("k", "w")),
    ("x", ("k", "s")), ("j", ("d", "zh")), ("c", ("k",)), ("q", ("k",)),
]  # fmt: skip
_FUNCTION_WORDS = frozenset(
    {"a", "an", "the", "is", "are", "am", "be", "to", "of", "in", "on", "at", "by", "it", "its",
     "it's", "i", "i'm", "i've", "we", "we'll", "this", "that", "and", "or", "will", "would"}
)  # fmt: skip


def _split_graphemes(word: str) -> list[tuple[str, str]]:
    """Split a lower-case word into ('v', vowel) and ('c', consonant) phone tokens."""
    w = re.sub(r"[^a-z]", "", word)
    if (
        len(w) > 2
        and w.endswith("e")
        and w[-2] not in "aeiouy"
        and any(c in "aeiou" for c in w[:-1])
    ):
        w = w[:-1]  # silent final e
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(w):
        for g, v in _GRAPHEME_VOWELS:
            # a 'y' at the start of a word is a consonant
            if w.startswith(g, i) and not (g == "y" and i == 0):
                out.append(("v", v))
                i += len(g)
                break
        else:
            for g, cs in _GRAPHEME_CONS:
                if w.startswith(g, i):
                    out.extend(("c", c) for c in cs)
                    i += len(g)
                    break
            else:
                c = w[i]
                if c == "s" and out and out[-1][0] == "v" and i == len(w) - 1:
                    c = "z"
                if not (out and out[-1] == ("c", c)):  # double letters
                    out.append(("c", c))
                i += 1
    return out


def text_to_words(text: str) -> list[list[Syllable]]:
    """Very rough English letter-to-sound rules: enough for a consistent fixed sentence."""
    words: list[list[Syllable]] = []
    for raw in text.lower().split():
        toks = _split_graphemes(raw)
        if not any(k == "v" for k, _ in toks):
            toks.append(("v", "ax"))
        vowel_idx = [i for i, (k, _) in enumerate(toks) if k == "v"]
        sylls: list[Syllable] = []
        content = raw.strip(".,!?'") not in _FUNCTION_WORDS
        for j, vi in enumerate(vowel_idx):
            start = 0 if j == 0 else None
            if start is None:
                # consonants between two vowels: the last one goes to the onset
                prev = vowel_idx[j - 1]
                between = list(range(prev + 1, vi))
                start = between[-1] if between else vi
            end = len(toks) if j == len(vowel_idx) - 1 else None
            if end is None:
                nxt = vowel_idx[j + 1]
                between = list(range(vi + 1, nxt))
                end = between[-1] if len(between) > 1 else vi + 1
            onset = tuple(t for k, t in toks[start:vi] if k == "c" and t in _CONSONANTS)
            coda = tuple(t for k, t in toks[vi + 1 : end] if k == "c" and t in _CONSONANTS)
            stress = content and j == 0
            sylls.append(Syllable(onset, toks[vi][1], coda, stress))
        words.append(sylls)
    return words


_ONSETS = ["t", "d", "k", "g", "p", "b", "s", "sh", "f", "v", "th", "dh", "h", "m", "n", "l", "r",
           "w", "y", "z"]  # fmt: skip
_ONSET_CDF = np.cumsum([9, 7, 7, 3, 5, 5, 8, 3, 4, 3, 2, 6, 4, 6, 6, 6, 5, 5, 2, 1])
_CLUSTERS = [("s", "t"), ("s", "p"), ("s", "k"), ("t", "r"), ("p", "l"), ("k", "l"), ("b", "r"),
             ("g", "r"), ("f", "r"), ("s", "m")]  # fmt: skip
_CODAS = ["n", "t", "d", "s", "z", "m", "k", "r", "l", "ng", "v", "th"]
_CODA_CDF = np.cumsum([10, 9, 6, 6, 5, 4, 4, 4, 4, 3, 2, 1])
_NUCLEI = ["iy", "ih", "eh", "ae", "aa", "ao", "uh", "uw", "ah", "er", "ax", "ay", "ey", "ow", "aw",
           "oy"]  # fmt: skip
_NUCLEUS_CDF = np.cumsum([5, 8, 7, 6, 5, 4, 2, 4, 6, 3, 9, 4, 4, 3, 1, 1])
_WORD_LEN_CDF = np.cumsum([3, 2, 1])  # 1, 2 or 3 syllables


def _pick(rng: np.random.Generator, cdf: np.ndarray) -> int:
    """Index drawn with weights given as a cumulative sum (faster than ``rng.choice(p=)``)."""
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def random_words(rng: np.random.Generator, n_syllables: int) -> list[list[Syllable]]:
    """Random pseudo-English words holding ``n_syllables`` syllables in total."""
    words: list[list[Syllable]] = []
    left = max(1, int(n_syllables))
    while left > 0:
        n = min(left, 1 + _pick(rng, _WORD_LEN_CDF))
        stress_at = 0 if n > 1 else (0 if rng.random() < 0.55 else -1)
        word = []
        for j in range(n):
            r = rng.random()
            if r < 0.1:
                onset: tuple[str, ...] = _CLUSTERS[int(r * 100) % len(_CLUSTERS)]
            elif r < 0.8:
                onset = (_ONSETS[_pick(rng, _ONSET_CDF)],)
            else:
                onset = ()
            vowel = _NUCLEI[_pick(rng, _NUCLEUS_CDF)]
            coda: tuple[str, ...] = ()
            if rng.random() < 0.45:
                coda = (_CODAS[_pick(rng, _CODA_CDF)],)
            word.append(Syllable(onset, vowel, coda, stress=j == stress_at))
        words.append(word)
        left -= n
    return words


# --------------------------------------------------------------------------- planning


def _phone_segments(
    words: list[list[Syllable]], v: VoiceSettings, rng: np.random.Generator
) -> list[tuple[str, float, object]]:
    """Turn words into (kind, duration_ms, info) segments; kinds: V C P (vowel/cons/pause)."""
    tempo = _REF_RATE / max(v.rate_sps, 0.5)
    segs: list[tuple[str, float, object]] = []
    n_words = len(words)
    for wi, word in enumerate(words):
        for si, syl in enumerate(word):
            last = wi == n_words - 1 and si == len(word) - 1
            for ci, c in enumerate(syl.onset):
                spec = _CONSONANTS[c]
                d = _DUR_MS[spec.kind] * (0.8 if len(syl.onset) > 1 else 1.0)
                segs.append(
                    ("C", d * tempo * rng.lognormal(0, 0.12), (c, ci == len(syl.onset) - 1))
                )
            d = _VOWEL_MS * (1.3 if syl.stress else 0.8) * (1.3 if syl.vowel in _DIPHTHONGS else 1)
            if last:
                d *= 1.5  # phrase-final lengthening
            segs.append(("V", d * tempo * rng.lognormal(0, 0.12), syl))
            for c in syl.coda:
                spec = _CONSONANTS[c]
                segs.append(("C", _DUR_MS[spec.kind] * 0.85 * tempo * rng.lognormal(0, 0.12),
                             (c, False)))  # fmt: skip
        if wi < n_words - 1 and rng.random() < v.pause_prob:
            d = rng.uniform(120.0, 380.0) * v.pause_scale * np.sqrt(tempo)
            segs.append(("P", d, None))
    return segs


def _nominal_ms(segs: list[tuple[str, float, object]]) -> float:
    return float(sum(s[1] for s in segs))


def plan_utterance(
    v: VoiceSettings,
    rng: np.random.Generator,
    *,
    text: str | None = None,
    words: list[list[Syllable]] | None = None,
    speech_s: float | None = None,
) -> Plan:
    """Plan the frame-level targets of one utterance.

    Give ``text`` (a fixed sentence), ``words``, or ``speech_s`` (random pseudo-words
    filling exactly that many seconds of speech, the count of syllables following from
    the speaking rate).
    """
    if text is not None:
        words = text_to_words(text)
    target_frames: int | None = None
    if words is None:
        if speech_s is None:
            raise ValueError("give text, words or speech_s")
        target_frames = max(8, round(speech_s / FRAME_S))
        # Pick the syllable count whose natural length is closest to the target.
        n = max(1, round(speech_s * v.rate_sps))
        state = rng.bit_generator.state
        best = None
        tried: set[int] = set()
        while n not in tried and len(tried) < 6:
            tried.add(n)
            rng.bit_generator.state = state
            cand = _phone_segments(random_words(rng, n), v, rng)
            ratio = speech_s * 1000.0 / _nominal_ms(cand)
            if best is None or abs(np.log(ratio)) < best[0]:
                best = (abs(np.log(ratio)), cand, rng.bit_generator.state)
            n = max(1, round(n * ratio))
        assert best is not None
        segs = best[1]
        rng.bit_generator.state = best[2]
    else:
        segs = _phone_segments(words, v, rng)

    # Two frames of silence at both ends so that tracks start and end at rest.
    edges_ms = np.cumsum([0.0] + [s[1] for s in segs])
    speech_frames = (
        max(len(segs), round(edges_ms[-1] / 1000.0 / FRAME_S)) if target_frames is None
        else target_frames - 4
    )  # fmt: skip
    bounds = np.round(edges_ms / edges_ms[-1] * speech_frames).astype(int)
    # every segment at least one frame
    for i in range(1, len(bounds)):
        bounds[i] = max(bounds[i], bounds[i - 1] + 1)
    overflow = bounds[-1] - speech_frames
    if overflow > 0:  # give the extra frames back from the longest segments
        for _ in range(overflow):
            lens = np.diff(bounds)
            j = int(np.argmax(lens))
            bounds[j + 1 :] -= 1
    bounds += 2
    n_frames = int(bounds[-1]) + 2

    formants = np.full((n_frames, 3), np.nan)
    av = np.zeros(n_frames)
    ah = np.zeros(n_frames)
    af = np.zeros((n_frames, 3))
    nasal = np.zeros(n_frames)
    accents: list[tuple[int, float]] = []
    phrases: list[tuple[int, int]] = []
    phrase_start = 2
    final = (2, 3)
    n_syl = 0
    for (kind, _d, info), a, b in zip(segs, bounds[:-1], bounds[1:], strict=True):
        a, b = int(a), int(b)
        if kind == "V":
            syl: Syllable = info  # type: ignore[assignment]
            n_syl += 1
            if syl.vowel in _DIPHTHONGS:
                v0, v1 = (np.array(_VOWELS[x]) for x in _DIPHTHONGS[syl.vowel])
            else:
                v0 = v1 = np.array(_VOWELS[syl.vowel])
            w = np.linspace(0.0, 1.0, b - a)[:, None] ** 1.5
            formants[a:b] = v0 * (1 - w) + v1 * w
            av[a:b] = 1.0 if syl.stress else 0.85
            strength = rng.uniform(0.6, 1.0) if syl.stress else rng.uniform(0.0, 0.25)
            if syl.stress and rng.random() < 0.12:
                strength = -0.5 * strength  # an occasional low accent
            accents.append(((a + b) // 2, strength))
            final = (a, b)
        elif kind == "C":
            c, onset_last = info  # type: ignore[misc]
            spec = _CONSONANTS[c]
            if spec.locus is not None:
                formants[a:b] = spec.locus
            if spec.kind == "stop":
                n = b - a
                burst = max(1, min(3, n // 4))
                asp = 0 if spec.voiced or not onset_last else max(1, min(8, n // 3))
                close_end = max(a, b - burst - asp)
                av[a:close_end] = 0.08 if spec.voiced else 0.0
                af[close_end : close_end + burst] = spec.bands
                av[close_end : close_end + burst] = 0.3 if spec.voiced else 0.0
                ah[close_end + burst : b] = 0.5
                formants[close_end + burst : b] = np.nan  # take the next vowel's formants
            elif spec.kind == "fric":
                af[a:b] = spec.bands
                av[a:b] = 0.35 if spec.voiced else 0.0
            elif spec.kind == "h":
                ah[a:b] = 0.6
            elif spec.kind == "nasal":
                av[a:b] = 0.55
                nasal[a:b] = 1.0
            else:  # approximant
                av[a:b] = 0.75
        else:  # pause: a new phrase when it is long
            if (b - a) * FRAME_S >= 0.2:
                phrases.append((phrase_start, a))
                phrase_start = b
    phrases.append((phrase_start, int(bounds[-1])))
    return Plan(formants, av, ah, af, nasal, accents, phrases, final, n_syl)


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
    width = 12.0 * _REF_RATE / max(v.rate_sps, 0.5)  # frames (~60 ms at the reference rate)
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
