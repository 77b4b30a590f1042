"""Corpus recipes on trees built in the real layouts, including the traps."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeser.core.errors import CorpusError
from edgeser.data.labels import LABELS
from edgeser.data.manifest import COLUMNS, validate_manifest
from edgeser.data.recipes import (
    prepare,
    prepare_cremad,
    prepare_csv,
    prepare_iemocap,
    prepare_ravdess,
)
from edgeser.data.recipes.iemocap import parse_summary_line, speaker_of
from edgeser.testing import (
    make_cremad_tree,
    make_iemocap_tree,
    make_ravdess_tree,
    tone,
    write_wav,
)

IEMOCAP_UTTS = [
    ("Ses01F_impro01_F000", "neu"),
    ("Ses01F_impro01_M013", "ang"),  # male speaker in a dialog whose marker letter is F
    ("Ses01F_impro01_M014", "fru"),  # outside the four classes
    ("Ses01M_script02_2_F005", "exc"),  # excited -> happy; female speaker, M marker
    ("Ses01M_script02_2_M001", "sad"),
    ("Ses02F_impro03_F002", "hap"),
    ("Ses02F_impro03_M000", "xxx"),
]


def test_summary_line_parses_real_format():
    e = parse_summary_line("[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]")
    assert e == {
        "start": 6.2901,
        "end": 8.2357,
        "utt": "Ses01F_impro01_F000",
        "label_raw": "neu",
        "valence": 2.5,
        "arousal": 2.5,
        "dominance": 2.5,
    }
    assert parse_summary_line("C-E2:\tNeutral;\t()") is None
    assert parse_summary_line("[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu") is None


def test_speaker_is_last_name_part_not_dialog_marker():
    assert speaker_of("Ses01F_impro01_M013") == ("iemocap:Ses01M", "iemocap:Ses01", "M")
    assert speaker_of("Ses03M_script01_1_F020") == ("iemocap:Ses03F", "iemocap:Ses03", "F")


def test_iemocap_manifest(tmp_path: Path):
    root = make_iemocap_tree(tmp_path, IEMOCAP_UTTS)
    df = prepare_iemocap(root)
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    rows = df.set_index("utt_id")
    assert set(rows.index) == {
        "iemocap:Ses01F_impro01_F000",
        "iemocap:Ses01F_impro01_M013",
        "iemocap:Ses01M_script02_2_F005",
        "iemocap:Ses01M_script02_2_M001",
        "iemocap:Ses02F_impro03_F002",
    }
    assert rows.loc["iemocap:Ses01F_impro01_M013", "speaker"] == "iemocap:Ses01M"
    assert rows.loc["iemocap:Ses01F_impro01_M013", "gender"] == "M"
    assert rows.loc["iemocap:Ses01M_script02_2_F005", "speaker"] == "iemocap:Ses01F"
    assert rows.loc["iemocap:Ses01M_script02_2_F005", "label"] == "happy"
    assert rows.loc["iemocap:Ses01M_script02_2_F005", "label_raw"] == "exc"
    assert rows.loc["iemocap:Ses02F_impro03_F002", "session"] == "iemocap:Ses02"
    assert (df["duration"] > 0).all() and (df["sample_rate"] == 16000).all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])
    # The Categorical/Attribute/Self-evaluation files (all 'ang') were not read.
    assert rows.loc["iemocap:Ses01F_impro01_F000", "label"] == "neutral"
    validate_manifest(df)


def test_iemocap_all_labels_keeps_other_rows_with_empty_label(tmp_path: Path):
    df = prepare_iemocap(make_iemocap_tree(tmp_path, IEMOCAP_UTTS), all_labels=True)
    assert len(df) == len(IEMOCAP_UTTS)
    other = df[df["label_raw"].isin(["fru", "xxx"])]
    assert len(other) == 2 and (other["label"] == "").all()
    validate_manifest(df, allow_unlabelled=True)
    with pytest.raises(Exception, match="unknown labels"):
        validate_manifest(df)


def test_iemocap_reports_bad_lines_missing_and_empty_audio(tmp_path: Path):
    root = make_iemocap_tree(
        tmp_path,
        IEMOCAP_UTTS,
        missing_audio=["Ses01F_impro01_F000"],
        empty_audio=["Ses01F_impro01_M013"],
        extra_lines=[("Ses02F_impro03", "[1.0 - oops]\tSes02F_impro03_F009\tneu\t[1, 2, 3]")],
    )
    df = prepare_iemocap(root)
    assert len(df) == 3
    skipped = df.attrs["skipped"]
    assert any("Ses01F_impro01_F000" in v for v in skipped.values())
    assert any("Ses01F_impro01_M013" in v for v in skipped.values())
    assert any(any(n.startswith("Ses02F_impro03.txt:") for n in v) for v in skipped.values())


def test_iemocap_accepts_parent_folder_and_refuses_other_roots(tmp_path: Path):
    make_iemocap_tree(tmp_path, IEMOCAP_UTTS[:1])
    assert len(prepare_iemocap(tmp_path)) == 1  # the folder holding IEMOCAP_full_release/
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(CorpusError, match="not IEMOCAP_full_release"):
        prepare_iemocap(other)
    with pytest.raises(CorpusError, match="not a folder"):
        prepare_iemocap(tmp_path / "nope")


def test_cremad_manifest(tmp_path: Path):
    names = [
        "1001_DFA_ANG_XX",
        "1001_IEO_HAP_HI",
        "1002_DFA_NEU_XX",
        "1002_TIE_SAD_XX",
        "1002_TIE_DIS_XX",
        "1076_MTI_SAD_XX",
        "notes_about_it",
    ]
    root = make_cremad_tree(
        tmp_path,
        names,
        empty=["1076_MTI_SAD_XX"],
        demographics={"1001": "Male", "1002": "Female", "1076": "Female"},
    )
    df = prepare_cremad(root)
    assert sorted(df["utt_id"]) == [
        "cremad:1001_DFA_ANG_XX",
        "cremad:1001_IEO_HAP_HI",
        "cremad:1002_DFA_NEU_XX",
        "cremad:1002_TIE_SAD_XX",
    ]
    rows = df.set_index("utt_id")
    assert rows.loc["cremad:1001_IEO_HAP_HI", "level"] == "HI"
    assert rows.loc["cremad:1001_IEO_HAP_HI", "sentence"] == "IEO"
    assert rows.loc["cremad:1002_TIE_SAD_XX", "gender"] == "F"
    assert rows.loc["cremad:1001_DFA_ANG_XX", "speaker"] == "cremad:1001"
    assert rows.loc["cremad:1001_DFA_ANG_XX", "session"] == "cremad:1001"
    skipped = df.attrs["skipped"]
    assert ["1076_MTI_SAD_XX.wav"] in skipped.values()
    assert ["notes_about_it.wav"] in skipped.values()
    # pointing at AudioWAV/ itself works too
    assert len(prepare_cremad(root / "AudioWAV")) == 4
    with pytest.raises(CorpusError, match="not CREMA-D"):
        prepare_cremad(make_ravdess_tree(tmp_path / "rav", ["03-01-05-01-01-01-01"]))


def test_ravdess_manifest_stereo_48k_and_calm(tmp_path: Path):
    names = [
        "03-01-01-01-01-01-01",
        "03-01-02-01-01-01-01",
        "03-01-03-02-01-01-01",
        "03-01-04-01-02-02-02",
        "03-01-05-02-01-01-02",
        "03-01-06-01-01-01-02",
        "03-02-05-01-01-01-01",
        "03-01-05-01-01-01-02",
    ]  # song; actor mismatch
    root = make_ravdess_tree(tmp_path, names[:-1], stereo=["03-01-05-02-01-01-02"])
    # the last file sits in the wrong actor's folder
    write_wav(root / "Actor_01" / f"{names[-1]}.wav", tone(0.5, 48000), 48000)
    df = prepare_ravdess(root)
    rows = df.set_index("utt_id")
    assert set(rows["label"]) == set(LABELS)
    assert "ravdess:03-01-02-01-01-01-01" not in rows.index  # calm is not neutral
    r = rows.loc["ravdess:03-01-05-02-01-01-02"]
    assert (r["speaker"], r["gender"], r["intensity"], r["channels"], r["sample_rate"]) == (
        "ravdess:02",
        "F",
        "strong",
        2,
        48000,
    )
    assert rows.loc["ravdess:03-01-04-01-02-02-02", "statement"] == "02"
    assert rows.loc["ravdess:03-01-04-01-02-02-02", "repetition"] == 2
    assert rows.loc["ravdess:03-01-01-01-01-01-01", "gender"] == "M"
    calm = prepare_ravdess(root, calm_as="neutral").set_index("utt_id")
    assert calm.loc["ravdess:03-01-02-01-01-01-01", "label"] == "neutral"
    assert calm.loc["ravdess:03-01-02-01-01-01-01", "label_raw"] == "calm"
    assert sum(len(v) for v in df.attrs["skipped"].values()) == 2


def test_custom_csv_import(tmp_path: Path):
    write_wav(tmp_path / "a" / "x.wav", tone(0.4))
    write_wav(tmp_path / "a" / "y.flac", tone(0.6, 22050), 22050)
    write_wav(tmp_path / "b.wav", tone(0.3))
    (tmp_path / "list.csv").write_text(
        "path,label,speaker,session\n"
        "a/x.wav,Angry,s1,day1\n"
        "a/y.flac,happy,s2,\n"
        "b.wav,bored,s1,day1\n"
        "missing.wav,sad,s3,\n",
        encoding="utf-8",
    )
    df = prepare_csv(tmp_path / "list.csv", corpus="mine")
    rows = df.set_index("utt_id")
    assert sorted(rows.index) == ["mine:a/x", "mine:a/y"]
    assert rows.loc["mine:a/x", "label"] == "angry"
    assert rows.loc["mine:a/x", "session"] == "mine:day1"
    assert rows.loc["mine:a/y", "session"] == "mine:s2"
    assert rows.loc["mine:a/y", "sample_rate"] == 22050
    assert len(prepare("csv", tmp_path / "list.csv", name="mine", all_labels=True)) == 3
    (tmp_path / "bad.csv").write_text("file,emotion\nx.wav,angry\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="lacks columns"):
        prepare_csv(tmp_path / "bad.csv")


def test_custom_csv_files_that_differ_only_in_extension(tmp_path: Path):
    """a.flac was dropped as a "duplicate path" of a.wav; a path listed twice still is."""
    write_wav(tmp_path / "a.wav", tone(0.4))
    write_wav(tmp_path / "a.flac", tone(0.5))
    write_wav(tmp_path / "b.wav", tone(0.3))
    (tmp_path / "list.csv").write_text(
        "path,label,speaker\na.wav,angry,s1\na.flac,sad,s1\nb.wav,happy,s2\n./b.wav,happy,s2\n",
        encoding="utf-8",
    )
    df = prepare_csv(tmp_path / "list.csv", corpus="mine")
    assert sorted(df["utt_id"]) == ["mine:a.flac", "mine:a.wav", "mine:b"]
    assert sum(len(v) for v in df.attrs["skipped"].values()) == 1


def test_real_ravdess_mini(ravdess_mini: Path):
    df = prepare_ravdess(ravdess_mini, all_labels=True)
    assert len(df) == 120 and df["speaker"].nunique() == 2
    assert (df["sample_rate"] == 48000).all()
    assert (df["channels"] == 2).sum() == 2
    four = prepare_ravdess(ravdess_mini)
    assert len(four) == 56  # 28 per actor, as 672 / 24 on the full release
    assert four.groupby("speaker").size().tolist() == [28, 28]
