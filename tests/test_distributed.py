"""Feature extraction and batch inference on Ray (``--executor ray``) against the local
executor: the same cache entries and results, resumable across executors, faults.

Every Ray process runs inside a network namespace that has only ``lo``: a Ray node
otherwise registers on the machine's outward interface. The session fixture creates the
namespace, starts one 2-CPU head node in it (shared by all tests), and at the end kills
the processes in the namespace by id and deletes it. The Ray work of a test runs as a
subprocess under ``ip netns exec``. Where that is impossible (not root, no ``ip``, no
Ray), the Ray tests skip with one line; the tests of the local executor always run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgeser.cli import main
from edgeser.core.errors import EdgeserError
from edgeser.data.manifest import write_manifest
from edgeser.data.recipes import prepare_ravdess
from edgeser.features import extract
from edgeser.runtime.batch import predict_manifest
from edgeser.testing import (
    NamespaceUnavailable,
    loopback_ray_cluster,
    make_ravdess_tree,
    tone,
    write_wav,
)

PYTHON = sys.executable


@pytest.fixture(scope="session")
def ray_cluster():
    """One 2-CPU Ray head node in a loopback-only namespace, shared by the Ray tests."""
    try:
        with loopback_ray_cluster(num_cpus=2) as cluster:
            yield cluster
    except NamespaceUnavailable as e:
        pytest.skip(f"Ray tests skipped: {e}")


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A RAVDESS-layout corpus (2 actors x 4 classes x 2 takes) and its manifest."""
    root = tmp_path_factory.mktemp("ray-corpus")
    names = [f"03-01-0{e}-01-01-0{r}-0{a}" for a in (1, 2) for e in (1, 3, 4, 5) for r in (1, 2)]
    df = prepare_ravdess(make_ravdess_tree(root / "rv", names, duration=0.4))
    return write_manifest(df, root / "manifest.csv")


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random HuBERT-family encoder as a local Hugging Face folder (``--encoder``)."""
    from edgeser.models.ssl import random_encoder, tiny_config

    out = tmp_path_factory.mktemp("tiny-encoder")
    random_encoder(tiny_config(), seed=3).model.save_pretrained(out)
    return out


def _files(cache: Path) -> dict[str, str]:
    return {
        str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(cache.rglob("*.safetensors"))
    }


def _same_entries(a: Path, b: Path) -> None:
    """The same entries under the same keys, equal up to float rounding (an actor restarted
    mid-run may run its batch with another thread count: the last bits may differ)."""
    from safetensors.numpy import load_file

    names = sorted(str(p.relative_to(a)) for p in a.rglob("*.safetensors"))
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*.safetensors"))
    for name in names:
        x, y = load_file(a / name), load_file(b / name)
        assert sorted(x) == sorted(y), name
        for key in x:
            assert x[key].shape == y[key].shape and x[key].dtype == y[key].dtype, (name, key)
            np.testing.assert_allclose(x[key], y[key], rtol=1e-4, atol=1e-5, err_msg=name)


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _evaluate_args(corpus: Path, encoder: Path, out: Path, cache: Path) -> list[str]:
    return [
        "evaluate",
        "--corpus",
        str(corpus),
        "--protocol",
        "loso",
        "--folds",
        "2",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--encoder",
        str(encoder),
        "--epochs",
        "2",
        "--aug-views",
        "1",
        "--batch-size",
        "4",
    ]


# --------------------------------------------------------------------------- features
def test_ray_features_and_results_equal_local_and_resume_its_cache(
    ray_cluster, corpus, tiny_encoder_dir, tmp_path
):
    local_cache, ray_cache = tmp_path / "cache-local", tmp_path / "cache-ray"
    assert main(_evaluate_args(corpus, tiny_encoder_dir, tmp_path / "local", local_cache)) == 0
    local_files = _files(local_cache)
    # the Ray run resumes half of a local run's cache: it encodes only the other half
    kept = sorted(local_files)[::2]
    for rel in kept:
        (ray_cache / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local_cache / rel, ray_cache / rel)
    stamps = {rel: (ray_cache / rel).stat().st_mtime_ns for rel in kept}
    res = ray_cluster.run(
        [
            str(Path(PYTHON).parent / "edgeser"),
            *_evaluate_args(corpus, tiny_encoder_dir, tmp_path / "ray", ray_cache),
            "--executor",
            f"ray:{ray_cluster.address}",
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    n = len(local_files)
    assert f"{len(kept)} of {n} feature entries cached, encoding {n - len(kept)}" in res.stderr
    assert "ray: 1 actors x" in res.stderr  # the work really went to the cluster
    assert _files(ray_cache) == local_files  # bitwise the same entries under the same keys
    assert all((ray_cache / rel).stat().st_mtime_ns == t for rel, t in stamps.items())
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    ray = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert _without_timings(ray) == _without_timings(local)
    assert local["loso"]  # a real result: two folds trained and tested
    assert len(next(iter(local["loso"].values()))["folds"]) == 2


FAULT_SCRIPT = r"""
import json, os, signal, sys
from pathlib import Path
import numpy as np
import pandas as pd
import edgeser.features.distributed as dist
from edgeser.core.executor import parse_executor
from edgeser.data.manifest import read_manifest
from edgeser.features import FeatureStore, Item, extract
from edgeser.models.ssl import random_encoder, tiny_config

manifest, cache, address, report = sys.argv[1:5]
df = read_manifest(manifest)
enc = random_encoder(tiny_config(), seed=5)
ran, killed = [], []
original = dist.ray_batches

def ray_batches(*args, **kwargs):
    def on_batch(index, node, pid):  # the actor that returned the first batch dies
        ran.append(pid)
        if not killed:
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)
    return original(*args, **kwargs, on_batch=on_batch)

dist.ray_batches = ray_batches
store = FeatureStore(cache, enc.identity)
remote = extract(df, enc, store, views=(0, 1, 2), batch_seconds=1.5, progress=False,
                 executor=parse_executor("ray:" + address))
items = [Item(u, p, v) for u, p in zip(df["utt_id"], df["path"]) for v in (0, 1, 2)]
Path(report).write_text(json.dumps({
    "killed": killed, "pids": sorted(set(ran)), "batches": len(ran),
    "entries": len(list(Path(cache).rglob("*.safetensors"))),
    "readable": all(store.get(it) is not None for it in items),
    "n_items": len(items),
}))
"""


def test_killed_actor_costs_a_retry_not_an_entry(ray_cluster, corpus, tmp_path):
    from edgeser.data.manifest import read_manifest
    from edgeser.features import FeatureStore
    from edgeser.models.ssl import random_encoder, tiny_config

    script, report, cache = tmp_path / "fault.py", tmp_path / "report.json", tmp_path / "c"
    script.write_text(FAULT_SCRIPT)
    res = ray_cluster.run(
        [PYTHON, str(script), str(corpus), str(cache), ray_cluster.address, str(report)]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(report.read_text())
    assert out["killed"] and len(out["pids"]) >= 2  # a new actor process took over
    assert out["batches"] >= 3
    assert out["entries"] == out["n_items"] and out["readable"]  # no missing/corrupt entry
    # every entry is the one a local run writes: read back through a local extraction
    enc = random_encoder(tiny_config(), seed=5)
    local = tmp_path / "local"
    extract(
        read_manifest(corpus),
        enc,
        FeatureStore(local, enc.identity),
        views=(0, 1, 2),
        batch_seconds=1.5,
        progress=False,
    )
    _same_entries(cache, local)


def test_executor_ray_without_ray_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if edgeser[distributed] were absent
    code = main(["train", str(corpus), "--out", str(tmp_path / "m"), "--executor", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["edgeser: error: --executor ray needs Ray: pip install 'edgeser[distributed]'"]


# --------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, Path, int]:
    """A dummy exported model and a manifest of 30 files (one unreadable), ids first."""
    from edgeser.testing import make_dummy_model

    root = tmp_path_factory.mktemp("archive")
    model = make_dummy_model(root / "model")
    lines = ["utt_id,path,label"]
    for i in range(29):
        write_wav(
            root / "audio" / f"a{i:02d}.wav",
            tone(0.4 + 0.03 * i, freq=120 + 25 * i, seed=i, silence=0.1),
            16000 if i % 2 else 48000,
        )
        lines.append(f"u{i:02d},audio/a{i:02d}.wav,{['neutral', 'happy'][i % 2]}")
    (root / "audio" / "bad.wav").write_bytes(b"RIFF, but not audio")
    lines.append("bad,audio/bad.wav,sad")
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return model, root / "m.csv", 30


def _table(out: Path):
    from edgeser.runtime.batch import read_predictions

    return read_predictions(out).to_pandas()


def test_predict_manifest_local_rows_resume_and_error_row(archive, tmp_path, capsys):
    from edgeser.runtime.model import OnnxEmotionModel

    model, manifest, n = archive
    out = tmp_path / "preds.parquet"
    args = [
        "predict",
        str(model),
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--part-rows",
        "8",
        "--workers",
        "2",
    ]
    assert main(args) == 0
    df = _table(out)
    assert len(df) == n and df["utt_id"].is_unique
    assert list(df["utt_id"]) == [f"u{i:02d}" for i in range(29)] + ["bad"]  # manifest order
    bad = df.set_index("utt_id").loc["bad"]
    assert "unreadable audio" in bad["error"] and pd.isna(bad["predicted"])
    good = df[df["error"].isna()]
    assert len(good) == n - 1 and good["model"].str.startswith("model.onnx@").all()
    # the same numbers as `edgeser predict FILE`
    m = OnnxEmotionModel(model, threads=1)
    row = good.iloc[3]
    a = m.analyse_file(row["path"])
    assert row["predicted"] == a.label
    np.testing.assert_allclose(
        [row[f"p_{c}"] for c in m.labels], [a.probabilities[c] for c in m.labels], rtol=1e-6
    )
    assert row["duration"] == pytest.approx(0.4 + 0.03 * 3 + 0.2, abs=1e-3)  # before trim
    # a re-run scores only the row that failed (and it fails again) and duplicates nothing
    capsys.readouterr()
    assert main(args) == 0
    assert (
        "1 utterances scored (1 errors, 1 of them failed before), 29 already there"
        in capsys.readouterr().out
    )
    again = _table(out)
    assert len(again) == n and again["utt_id"].is_unique


def test_predict_manifest_error_rows_are_retried_when_the_file_appears(archive, tmp_path, capsys):
    model, manifest, _ = archive
    audio = tmp_path / "late.wav"
    listing = tmp_path / "m.csv"
    listing.write_text(f"utt_id,path\nlate,{audio}\nok,{manifest.parent / 'audio/a01.wav'}\n")
    out = tmp_path / "preds.parquet"
    args = ["-q", "predict", str(model), "--manifest", str(listing), "--out", str(out)]
    assert main(args) == 0
    assert "no such audio file" in _table(out).set_index("utt_id").loc["late", "error"]
    assert main(args) == 0  # still missing: still one row for it
    assert len(_table(out)) == 2
    write_wav(audio, tone(0.8, freq=200, seed=3))
    capsys.readouterr()
    assert main(args) == 0
    assert "1 utterances scored (0 errors, 1 of them failed before)" in capsys.readouterr().out
    df = _table(out).set_index("utt_id")
    assert len(df) == 2 and df.index.is_unique and df["error"].isna().all()


def test_predict_manifest_runs_into_one_out_lose_nothing(archive, tmp_path):
    """Two runs with different manifests into one --out both wrote part-00000 (half the
    rows lost); a second run while one holds the folder is refused."""
    from edgeser.runtime.batch import _lock

    model, manifest, _ = archive
    lines = manifest.read_text().splitlines()
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text(
        "\n".join(
            [lines[0], *[ln.replace("audio/", f"{manifest.parent}/audio/") for ln in lines[1:11]]]
        )
        + "\n"
    )
    second.write_text(
        "\n".join(
            [lines[0], *[ln.replace("audio/", f"{manifest.parent}/audio/") for ln in lines[11:21]]]
        )
        + "\n"
    )
    out = tmp_path / "preds.parquet"
    for m in (first, second):
        assert main(["-q", "predict", str(model), "--manifest", str(m), "--out", str(out)]) == 0
    df = _table(out)
    assert len(df) == 20 and df["utt_id"].is_unique
    held = _lock(out)
    try:
        with pytest.raises(EdgeserError, match="being written by another edgeser predict"):
            predict_manifest(model, first, out)
    finally:
        held.close()


@pytest.mark.parametrize("header", ["utt_id,path,label", "path,utt_id,label"])
def test_predict_manifest_reads_a_byte_order_mark(archive, tmp_path, header):
    """A BOM (Excel's CSV) was part of the first column's name: ids silently replaced by
    paths, or 'no path column' printed with a name that looked like path."""
    model, manifest, _ = archive
    rows = [
        dict(zip(["utt_id", "path", "label"], ln.split(","), strict=True))
        for ln in manifest.read_text().splitlines()[1:4]
    ]
    names = header.split(",")
    text = header + "\n" + "".join(",".join(r[c] for c in names) + "\n" for r in rows)
    listing = manifest.parent / f"bom-{tmp_path.name}.csv"
    listing.write_bytes(b"\xef\xbb\xbf" + text.encode())
    out = tmp_path / "preds.parquet"
    assert main(["-q", "predict", str(model), "--manifest", str(listing), "--out", str(out)]) == 0
    assert list(_table(out)["utt_id"]) == [r["utt_id"] for r in rows]


def _big_manifest(manifest: Path, path: Path, copies: int) -> int:
    """The archive's files under ``copies`` x as many ids: a run long enough to disturb."""
    rows = manifest.read_text().splitlines()[1:]
    base = manifest.parent
    path.write_text(
        "utt_id,path\n"
        + "\n".join(
            f"r{k}-{line.split(',')[0]},{base / line.split(',')[1]}"
            for k in range(copies)
            for line in rows
        )
        + "\n"
    )
    return copies * len(rows)


def _wait_for_part(out: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def _predict_cmd(model: Path, manifest: Path, out: Path, workers: int) -> list[str]:
    return [
        str(Path(PYTHON).parent / "edgeser"),
        "-q",
        "predict",
        str(model),
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--part-rows",
        "16",
        "--workers",
        str(workers),
    ]


def test_predict_manifest_interrupted_leaves_readable_parts(archive, tmp_path):
    model, manifest, _ = archive
    n = _big_manifest(manifest, tmp_path / "big.csv", 60)
    out = tmp_path / "preds.parquet"
    cmd = _predict_cmd(model, tmp_path / "big.csv", out, 1)
    # Ctrl-C as in a terminal: a shell running the tests in the background starts them with
    # SIGINT ignored, which the command would inherit (and then never see the signal)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_part(out, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    first = _table(out)  # whatever was written is readable ...
    assert 0 < len(first) < n and first["utt_id"].is_unique
    assert not list(out.glob(".*.tmp"))  # ... and no half-written part is left
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    full = _table(out)
    assert len(full) == n and full["utt_id"].is_unique


def _spawned_workers(parent: int) -> list[int]:
    """Pids of ``parent``'s multiprocessing worker processes."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes()
                if ppid == parent and b"spawn_main" in cmdline:
                    pids.append(int(entry.name))
    return pids


def test_predict_manifest_survives_a_killed_worker(archive, tmp_path):
    model, manifest, _ = archive
    n = _big_manifest(manifest, tmp_path / "big.csv", 40)
    out = tmp_path / "preds.parquet"
    proc = subprocess.Popen(
        _predict_cmd(model, tmp_path / "big.csv", out, 2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_part(out, proc)
    workers = _spawned_workers(proc.pid)
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "a worker process died; retrying" in err
    full = _table(out)
    assert len(full) == n and full["utt_id"].is_unique  # nothing lost, nothing twice


def _ray_predictors() -> list[int]:
    """Pids of Ray Data's model actors (their process title names the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if b"_RayPredictor" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def test_predict_manifest_on_ray_writes_the_local_rows(ray_cluster, archive, tmp_path):
    model, manifest, _ = archive
    big = manifest.parent / f"big-{tmp_path.name}.csv"  # same folder: same relative paths
    n = _big_manifest(manifest, big, 40)
    local, ray = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert (
        main(
            [
                "-q",
                "predict",
                str(model),
                "--manifest",
                str(big),
                "--out",
                str(local),
                "--part-rows",
                "16",
            ]
        )
        == 0
    )
    # a third of the rows are there already (a local run that stopped): Ray scores the rest
    half = manifest.parent / f"part-{tmp_path.name}.csv"
    half.write_text("\n".join(big.read_text().splitlines()[: 1 + n // 3]) + "\n")
    assert main(["-q", "predict", str(model), "--manifest", str(half), "--out", str(ray)]) == 0
    cmd = ray_cluster.command(
        [
            str(Path(PYTHON).parent / "edgeser"),
            "predict",
            str(model),
            "--manifest",
            str(big),
            "--out",
            str(ray),
            "--executor",
            f"ray:{ray_cluster.address}",
            "--workers",
            "2",
            "--part-rows",
            "16",
        ]
    )
    proc = subprocess.Popen(
        cmd, env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = None  # one model actor dies mid-run
    deadline = time.monotonic() + 90
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        actors = _ray_predictors()
        if actors and len(list(ray.glob("part-*.parquet"))) > 1:
            killed = actors[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert killed is not None, "the run ended before an actor could be killed"
    lines = big.read_text().splitlines()[1:]
    bad = sum(line.endswith("bad.wav") for line in lines)
    before = sum(line.endswith("bad.wav") for line in lines[: n // 3])  # failed, so retried
    assert (
        f"{n - n // 3 + before} utterances scored ({bad} errors, {before} of them failed "
        f"before), {n // 3 - before} already there"
    ) in out
    a, b = _table(local), _table(ray)
    assert b["utt_id"].is_unique and len(b) == n  # nothing lost, nothing twice
    assert a.equals(b)  # same rows, same order, same numbers


def test_predict_manifest_reads_a_long_file_in_blocks_as_predict_does(archive, tmp_path):
    """A file longer than the model's window is scored by speech segments (here: none, a
    minute of silence), never loaded whole; the row says what predict says."""
    from edgeser.runtime.model import OnnxEmotionModel

    model, manifest, _ = archive
    silent = tmp_path / "silent.wav"
    write_wav(silent, np.zeros(60 * 16000, np.float32))
    listing = tmp_path / "m.csv"
    listing.write_text(f"utt_id,path\nlong,{silent}\nshort,{manifest.parent / 'audio/a03.wav'}\n")
    out = tmp_path / "preds.parquet"
    assert main(["-q", "predict", str(model), "--manifest", str(listing), "--out", str(out)]) == 0
    df = _table(out).set_index("utt_id")
    m = OnnxEmotionModel(model, threads=1)
    for uid, path in (("long", silent), ("short", manifest.parent / "audio/a03.wav")):
        a = m.analyse_file(path)
        row = df.loc[uid]
        assert row["status"] == a.status and row["segments"] == a.segments
        assert row["predicted"] == a.label and pd.isna(row["error"])
    assert df.loc["long", "status"] == "no_speech" and df.loc["long", "duration"] == 60.0
