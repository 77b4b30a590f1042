"""What an utterance says and how fast: phones, syllables and the frame-level plan.

The first half of the synthesiser (:mod:`edgeser.data.synth.voice` renders the plan):
a small phone inventory (vowel formant targets, consonant classes with their formant loci,
frication bands and nominal durations), text or random pseudo-words turned into
syllables, and :func:`plan_utterance`, which lays the phones out on the 5 ms control
frames (formant targets, voicing, aspiration and frication amplitudes, pitch accents,
phrases) at the voice's speaking rate. No audio here: a plan is sample-rate independent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FRAME_S",
    "REF_RATE",
    "VOWELS",
    "Plan",
    "Syllable",
    "VoiceSettings",
    "plan_utterance",
    "random_words",
    "text_to_words",
]

#: Control-frame period of the synthesiser (formant and amplitude tracks), seconds.
FRAME_S = 0.005
#: Reference syllable rate at which the nominal phone durations below hold.
REF_RATE = 4.5

# Vowel targets (F1, F2, F3) of an adult male voice, Hz (after Hillenbrand et al. 1995).
VOWELS: dict[str, tuple[float, float, float]] = {
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


_GRAPHEMEVOWELS = [
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
        for g, v in _GRAPHEMEVOWELS:
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
    tempo = REF_RATE / max(v.rate_sps, 0.5)
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
                v0, v1 = (np.array(VOWELS[x]) for x in _DIPHTHONGS[syl.vowel])
            else:
                v0 = v1 = np.array(VOWELS[syl.vowel])
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
