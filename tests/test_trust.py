"""Calibrated confidence and statuses end to end: a model trained on real speech, its
temperature fitted on a held-out speaker, exported, and asked about every real file.

The rest of the bad-input battery lives beside the code it guards, each case named:
the web server's confinement and limits (``test_web_server.py``), file permissions
(``test_io.py``), ``predict --manifest`` runs (``test_distributed.py``), stream and model
card inputs (``test_runtime.py``: ``test_stream_cli_errors``,
``test_bad_model_cards_are_one_line``, ``test_inputs_that_are_not_speech_say_so``,
``test_long_silence_is_a_status_not_a_traceback``), labels and encoders named by a
folder (``test_cli.py``), ``prepare csv`` (``test_corpora.py``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained(ravdess_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model trained on one real actor's four-class files, calibrated on the
    other's (the validation speaker), exported."""
    from edgeser.config import TrainConfig
    from edgeser.data.manifest import write_manifest
    from edgeser.data.recipes import prepare_ravdess
    from edgeser.experiments.runs import train_on_manifests
    from edgeser.exporting.exporter import export_model
    from edgeser.models.ssl import random_encoder, tiny_config

    root = tmp_path_factory.mktemp("trust")
    write_manifest(prepare_ravdess(ravdess_mini), root / "rv.csv")
    encoder = random_encoder(tiny_config(), seed=0)
    cfg = TrainConfig(encoder="random", precision="fp32", epochs=60, aug_views=0, seed=0)
    record = train_on_manifests(
        cfg,
        [root / "rv.csv"],
        root / "model",
        encoder=encoder,
        progress=False,
        cache_dir=root / "cache",
    )
    paths = export_model(root / "model", root / "onnx", encoder=encoder)
    return {"record": record, "onnx": root / "onnx", "encoder": encoder, **paths}


def test_a_model_trained_on_real_speech_says_ok_or_low_confidence(
    trained: dict, ravdess_mini: Path
) -> None:
    """All 120 real files (the four classes and the four others) get ``ok`` or
    ``low_confidence`` — never ``no_speech`` or ``too_short`` — and ``low_confidence``
    exactly when the top calibrated probability is under the threshold fitted on the
    validation speaker and stated in model.json."""
    from edgeser.runtime.model import OnnxEmotionModel

    cal = trained["record"]["calibration"]
    assert cal["method"] == "temperature" and cal["n_val"] == 28 and cal["temperature"] > 0
    card = json.loads((trained["onnx"] / "model.json").read_text())
    assert card["calibration"]["temperature"] == cal["temperature"]
    threshold = card["calibration"]["low_confidence_below"]
    assert threshold == cal["low_confidence_below"]
    model = OnnxEmotionModel(trained["onnx"] / "model.int8.onnx")
    files = sorted(ravdess_mini.rglob("*.wav"))
    assert len(files) == 120
    results = [model.analyse_file(f) for f in files]
    counts = Counter(r.status for r in results)
    print(
        f"statuses on {len(files)} real files: {dict(counts)} "
        f"(T={cal['temperature']:.3f}, threshold {threshold:.3f})"
    )
    assert set(counts) <= {"ok", "low_confidence"}, counts
    for r in results:
        top = max(r.probabilities.values())
        assert (r.status == "low_confidence") == (top < threshold), (r.status, top)
        assert np.isclose(sum(r.probabilities.values()), 1.0, atol=1e-4)


def test_calibrate_none_keeps_the_probabilities_as_trained(
    trained: dict, ravdess_mini: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--calibrate none``: no temperature in the trained folder or model.json, and nothing
    is ever ``low_confidence``; an unknown method is one error line."""
    from edgeser.cli import main
    from edgeser.config import TrainConfig
    from edgeser.experiments.runs import train_on_manifests
    from edgeser.exporting.exporter import export_model
    from edgeser.runtime.model import OnnxEmotionModel

    root = trained["onnx"].parent
    cfg = TrainConfig(
        encoder="random", precision="fp32", epochs=60, aug_views=0, seed=0, calibrate="none"
    )
    record = train_on_manifests(
        cfg,
        [root / "rv.csv"],
        tmp_path / "m",
        encoder=trained["encoder"],
        progress=False,
        cache_dir=root / "cache",
    )
    assert "calibration" not in record
    assert json.loads((tmp_path / "m" / "train.json").read_text())["config"]["calibrate"] == (
        "none"
    )
    paths = export_model(tmp_path / "m", tmp_path / "onnx", int8=False, encoder=trained["encoder"])
    card = json.loads(paths["json"].read_text())
    assert card["calibration"] == {"method": "none", "low_confidence_below": 0.0}
    model = OnnxEmotionModel(paths["float32"])
    statuses = {model.analyse_file(f).status for f in sorted(ravdess_mini.rglob("*.wav"))}
    assert statuses == {"ok"}, statuses
    assert (
        main(
            [
                "-q",
                "train",
                str(root / "rv.csv"),
                "--out",
                str(tmp_path / "x"),
                "--calibrate",
                "platt",
            ]
        )
        == 2
    )
    assert "calibrate must be one of" in capsys.readouterr().err
