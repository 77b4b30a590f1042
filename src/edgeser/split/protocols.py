"""Evaluation protocols as explicit splits of utterance ids, validated for leakage.

* :func:`loso_splits`: leave-one-session-out. Fold ``k`` tests on session ``k``
  (all its speakers) and trains on the others. The validation set used for model
  selection is drawn from the *training* sessions as whole speakers, so it shares
  no speaker with training or test. Extra corpora (CREMA-D) join training only.
* :func:`group_sessions`: groups a corpus's sessions (for RAVDESS and CREMA-D,
  its actors) into ``N`` speaker-disjoint folds of similar size.
* :func:`production_split`: the paper's production model: all utterances
  shuffled, stratified 5 % validation and 5 % test (utterance level, therefore
  speaker-dependent); extra corpora in training only.

* :func:`speaker_holdout_split`: a single training run's validation set: whole speakers
  of the main corpus drawn by the seed (the rest of every corpus trains).

Every split is checked by :func:`edgeser.split.validate.validate_split`; corpora are
combined with :func:`edgeser.split.validate.combine_manifests`, which refuses an
utterance id in two of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from edgeser.core.errors import SplitError
from edgeser.core.io import sha256_text
from edgeser.split.validate import combine_manifests, validate_split


@dataclass
class Split:
    """One train/validation/test partition of utterance ids."""

    name: str
    train: list[str]
    val: list[str]
    test: list[str]
    test_session: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def parts(self) -> dict[str, list[str]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def speakers(self, df: pd.DataFrame) -> dict[str, list[str]]:
        spk = dict(zip(df["utt_id"], df["speaker"], strict=True))
        return {k: sorted({spk[u] for u in v}) for k, v in self.parts().items()}

    def digest(self) -> str:
        """Hash of the three id lists (recorded with results)."""
        return sha256_text(repr((sorted(self.train), sorted(self.val), sorted(self.test))))[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(
    df: pd.DataFrame,
    split: Split,
    main: set[str],
    speaker_disjoint: bool,
    *,
    need_test: bool = True,
) -> None:
    if need_test and not split.test:
        raise SplitError(f"{split.name}: no test data")
    if not split.train:
        raise SplitError(f"{split.name}: no training data")
    only_main = {"val": sorted(main), "test": sorted(main)}
    if speaker_disjoint:
        validate_split(df, split.parts(), corpus_only=only_main)
    else:  # production: utterance-level, only check ids and corpora
        validate_split(df, {"train": split.train}, corpus_only=None)
        corpus = dict(zip(df["utt_id"], df["corpus"], strict=True))
        for part in ("val", "test"):
            stray = {corpus[u] for u in split.parts()[part]} - main
            if stray:
                raise SplitError(f"{split.name}: {part} contains {', '.join(sorted(stray))}")
        seen = set(split.train)
        for part in ("val", "test"):
            if seen & set(split.parts()[part]):
                raise SplitError(f"{split.name}: an utterance is in two parts")
            seen |= set(split.parts()[part])


def loso_splits(
    main: pd.DataFrame,
    extra: pd.DataFrame | None = None,
    *,
    val_speakers: int = 1,
    sessions: list[list[str]] | None = None,
) -> list[Split]:
    """Leave-one-session-out splits of ``main``, with ``extra`` added to training only.

    ``sessions`` groups session ids into folds (default: one fold per session).
    Validation speakers rotate over the training sessions: fold ``k`` takes
    ``val_speakers`` speakers from the sessions that follow its test session,
    alternating which speaker of a session is taken, so every speaker serves as
    validation about equally often. At least one training speaker is always kept: with
    too few speakers, fewer (or no) validation speakers are taken.
    """
    if main.empty:
        raise SplitError("the evaluation manifest is empty")
    groups = sessions or [[s] for s in sorted(main["session"].unique())]
    if len(groups) < 2:
        raise SplitError("leave-one-session-out needs at least two sessions")
    frame = combine_manifests(main, extra)
    main_corpora = set(main["corpus"].unique())
    extra_ids = list(extra["utt_id"]) if extra is not None else []
    spk_by_session = {
        s: sorted(main.loc[main["session"] == s, "speaker"].unique())
        for s in main["session"].unique()
    }
    splits = []
    for k, test_sessions in enumerate(groups):
        in_test = main["session"].isin(test_sessions)
        candidates: list[str] = []
        for step in range(1, len(groups)):
            g = groups[(k + step) % len(groups)]
            for s in g:
                spks = spk_by_session[s]
                rot = k % max(len(spks), 1)
                candidates.extend(spks[rot:] + spks[:rot])
        # never take the last training speaker for validation (2-speaker corpora train
        # without a validation set and keep the last epoch)
        n_val = max(0, min(val_speakers, len(set(candidates)) - 1))
        val_spk = set(candidates[:n_val])
        train_rows = main[~in_test & ~main["speaker"].isin(val_spk)]
        val_rows = main[~in_test & main["speaker"].isin(val_spk)]
        split = Split(
            name=f"fold{k + 1}",
            train=list(train_rows["utt_id"]) + extra_ids,
            val=list(val_rows["utt_id"]),
            test=list(main.loc[in_test, "utt_id"]),
            test_session=",".join(test_sessions),
        )
        _check(frame, split, main_corpora, speaker_disjoint=True)
        splits.append(split)
    return splits


def group_sessions(main: pd.DataFrame, n_folds: int) -> list[list[str]]:
    """Group sessions into ``n_folds`` folds of similar utterance counts (deterministic)."""
    sizes = main.groupby("session").size().sort_values(ascending=False, kind="stable")
    n = min(n_folds, len(sizes))
    if n < 2:
        raise SplitError(f"need at least 2 sessions for {n_folds} folds, found {len(sizes)}")
    folds: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for session, size in sizes.items():
        i = int(np.argmin(load))
        folds[i].append(str(session))
        load[i] += int(size)
    return [sorted(f) for f in folds]


def production_split(
    main: pd.DataFrame,
    extra: pd.DataFrame | None = None,
    *,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
) -> Split:
    """All of ``main`` shuffled into train/val/test, stratified by label (speaker-dependent)."""
    rng = np.random.default_rng(seed)
    train: list[str] = []
    val: list[str] = []
    test: list[str] = []
    for _, group in main.groupby("label", sort=True):
        ids = list(group["utt_id"])
        rng.shuffle(ids)
        n_test = max(1, round(len(ids) * test_fraction))
        n_val = round(len(ids) * val_fraction)
        test += ids[:n_test]
        val += ids[n_test : n_test + n_val]
        train += ids[n_test + n_val :]
    if extra is not None:
        train += list(extra["utt_id"])
    frame = combine_manifests(main, extra)
    split = Split(
        name="production",
        train=sorted(train),
        val=sorted(val),
        test=sorted(test),
        info={"speaker_dependent": True},
    )
    _check(frame, split, set(main["corpus"].unique()), speaker_disjoint=False)
    return split


def speaker_holdout_split(
    main: pd.DataFrame,
    extra: pd.DataFrame | None = None,
    *,
    val_speakers: int = 1,
    seed: int = 0,
) -> Split:
    """Every row in training except ``val_speakers`` whole speakers of ``main`` (drawn by
    ``seed``; at least one training speaker is kept), which form the validation set."""
    frame = combine_manifests(main, extra)
    speakers = sorted(main["speaker"].unique())
    rng = np.random.default_rng(seed)
    val_spk = set(rng.permutation(speakers)[: max(0, min(val_speakers, len(speakers) - 1))])
    val = list(main.loc[main["speaker"].isin(val_spk), "utt_id"])
    held = set(val)
    split = Split(
        name="train",
        train=[u for u in frame["utt_id"] if u not in held],
        val=val,
        test=[],
        info={"val_speakers": sorted(val_spk)},
    )
    _check(frame, split, set(main["corpus"].unique()), speaker_disjoint=True, need_test=False)
    return split
