"""The command line, driven end to end on corpora built in the real layouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeser.cli import main
from edgeser.testing import make_cremad_tree, make_iemocap_tree, make_ravdess_tree

IEMO_LABELS = ["neu", "ang", "sad", "hap", "exc", "fru"]


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised HuBERT saved as a Hugging Face model folder."""
    import torch
    from transformers import HubertModel

    from edgeser.models.ssl import tiny_config

    folder = tmp_path_factory.mktemp("tiny-hubert")
    torch.manual_seed(0)
    HubertModel(tiny_config()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trees")
    utts = [
        (f"Ses0{s}{'FM'[i % 2]}_impro0{i % 3}_{spk}{i:03d}", IEMO_LABELS[i % 6])
        for s in range(1, 6)
        for spk in "FM"
        for i in range(7)
    ]
    return {
        "iemocap": make_iemocap_tree(root / "ie", utts, duration=0.3),
        "cremad": make_cremad_tree(
            root / "cr",
            [
                f"10{a:02d}_IEO_{e}_HI"
                for a in range(1, 4)
                for e in ("ANG", "HAP", "NEU", "SAD", "FEA")
            ]
            + ["1076_MTI_SAD_XX"],
            duration=0.3,
            empty=["1076_MTI_SAD_XX"],
        ),
        "ravdess": make_ravdess_tree(
            root / "rv",
            [f"03-01-0{e}-0{i}-01-01-0{a}" for a in (1, 2) for e in (3, 4, 5) for i in (1, 2)]
            + ["03-01-01-01-01-01-01", "03-01-01-01-01-01-02"],
            duration=0.3,
        ),
    }


def _err(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_prepare_validate_and_errors(trees, tmp_path, capsys):
    out = tmp_path / "ie.csv"
    assert main(["-q", "prepare", "iemocap", str(trees["iemocap"]), "--out", str(out)]) == 0
    assert "60 utterances, 10 speakers" in capsys.readouterr().out
    assert main(["-q", "validate", str(out)]) == 0
    assert (
        main(["-q", "prepare", "cremad", str(trees["iemocap"]), "--out", str(tmp_path / "x.csv")])
        == 2
    )
    assert _err(capsys) == f"edgeser: error: {trees['iemocap']} is not CREMA-D: no AudioWAV/ folder"
    assert not (tmp_path / "x.csv").exists()
    assert main(["validate", str(tmp_path / "none.csv")]) == 2
    assert "manifest not found" in _err(capsys)
    split = tmp_path / "split.json"
    import pandas as pd

    ids = pd.read_csv(out)["utt_id"].tolist()
    split.write_text(json.dumps({"train": ids[:-1], "test": ids[-1:]}), encoding="utf-8")
    assert main(["validate", str(out), "--split", str(split)]) == 2
    assert "speaker leakage" in _err(capsys)


def test_reproduce_end_to_end(trees, tiny_encoder_dir, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [
        "-q",
        "reproduce",
        "--iemocap",
        str(trees["iemocap"]),
        "--cremad",
        str(trees["cremad"]),
        "--ravdess",
        str(trees["ravdess"]),
        "--encoder",
        str(tiny_encoder_dir),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--aug-views",
        "1",
        "--precision",
        "fp32",
        "--head-hidden",
        "8",
    ]
    assert main(argv) == 0
    res = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert res["config"]["epochs"] == 2 and res["config"]["aug_views"] == 1
    assert res["encoder"]["source"] == str(tiny_encoder_dir) and not res["encoder"]["is_random"]
    assert len(res["loso"]["iemocap+cremad"]["folds"]) == 5
    assert res["data"]["cremad"]["n"] == 12  # FEA and the empty clip left out
    assert (run / "config.yaml").is_file() and (run / "manifests" / "iemocap.csv").is_file()
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "RANDOM ENCODER" not in report and "61.4" in report
    # train + evaluate on the manifests reproduce wrote
    man = run / "manifests"
    assert (
        main(
            [
                "-q",
                "train",
                str(man / "iemocap.csv"),
                str(man / "cremad.csv"),
                "--out",
                str(tmp_path / "m"),
                "--encoder",
                str(tiny_encoder_dir),
                "--epochs",
                "1",
                "--aug-views",
                "0",
                "--precision",
                "fp32",
                "--cache-dir",
                str(run / "cache"),
            ]
        )
        == 0
    )
    # the folder records an encoder outside it: loaded only when named again
    evaluate = [
        "-q",
        "evaluate",
        "--trained",
        str(tmp_path / "m"),
        "--corpus",
        str(man / "ravdess.csv"),
        "--out",
        str(tmp_path / "ev"),
        "--cache-dir",
        str(run / "cache"),
    ]
    assert main(evaluate) == 2
    assert "pass --encoder" in capsys.readouterr().err
    assert main([*evaluate, "--encoder", str(tiny_encoder_dir)]) == 0
    ev = json.loads((tmp_path / "ev" / "results.json").read_text(encoding="utf-8"))
    assert ev["cross_corpus"]["ravdess"]["n"] == 14
    assert "WA" in capsys.readouterr().out


def test_bad_input_gives_one_error_line(trees, tmp_path, capsys):
    assert (
        main(["reproduce", "--iemocap", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    )
    assert _err(capsys) == f"edgeser: error: iemocap root not found: {tmp_path / 'nope'}"
    empty = tmp_path / "empty.csv"
    empty.write_text(
        "utt_id,corpus,path,speaker,session,label,label_raw,duration,sample_rate\n",
        encoding="utf-8",
    )
    assert main(["train", str(empty), "--out", str(tmp_path / "t")]) == 2
    assert "no four-class utterances" in _err(capsys)
    assert main(["evaluate", "--corpus", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert "give either --trained" in _err(capsys)
    assert main(["train", str(empty), "--out", str(tmp_path / "t"), "--loss", "hinge"]) == 2
    assert "loss must be one of" in _err(capsys)
    # labels outside the four names: train dropped those rows without a word
    from edgeser.data.manifest import read_manifest, write_manifest
    from edgeser.data.recipes import prepare_ravdess

    df = prepare_ravdess(trees["ravdess"])
    df.loc[df.index[0], "label"] = "Angry"
    df.loc[df.index[1], "label"] = "calm"
    odd = tmp_path / "odd.csv"
    write_manifest(df, odd)
    assert main(["train", str(odd), "--out", str(tmp_path / "t")]) == 2
    assert _err(capsys).startswith(f"edgeser: error: {odd}: unknown labels: 'Angry', 'calm'")
    assert main(["validate", str(odd)]) == 2
    assert "unknown labels: 'Angry', 'calm'" in _err(capsys)
    assert len(read_manifest(odd)) == len(df)


def test_console_script_runs():
    exe = Path(sys.executable).with_name("edgeser")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("edgeser ")
