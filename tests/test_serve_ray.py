"""``edgeser serve --ray --replicas 2``: the same application as a Ray Serve deployment, in a
network namespace that has only ``lo`` (as the Ray tests in ``test_distributed.py``).

One test, one cluster: ``edgeser serve MODEL --ray=127.0.0.1:6379 --replicas 2`` runs in
the namespace; a client script beside it sends files to ``POST /v1/predict``, four
concurrent streams to ``WS /v1/stream`` and twenty ``/readyz`` probes, then opens one more
stream and sends the server SIGTERM once that stream has a result (with an API key: one
stream without it is refused). Its answers must equal
``edgeser predict`` and ``edgeser stream`` run here, the requests must reach both
replicas, and the last stream must end with ``session.end`` (reason ``shutdown``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeser.cli import main
from edgeser.testing import NamespaceUnavailable, loopback_ray_cluster, make_dummy_model

pytest.importorskip("ray.serve")
pytest.importorskip("websockets")

PORT = 8000
KEY = "r" * 24 + "-ray-serve-test"

CLIENT = r"""
import asyncio, json, os, signal, sys, urllib.request
from edgeser.serve.client import ServerError, predict_file, stream_blocks, stream_file
from edgeser.runtime.stream import Segment

url, wav, flac, server_pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
key = os.environ["EDGESER_API_KEY"]
fields = set(Segment.__dataclass_fields__)

async def stream(options):
    events = [e async for e in stream_file(url, wav, options=options, api_key=key)]
    lines = [Segment(**{k: v for k, v in e.items() if k in fields}).to_json()
             for e in events if e["type"] == "utterance.result"]
    return events[0]["instance"], lines, events[-1]

def readyz():
    with urllib.request.urlopen(url + "readyz", timeout=30) as r:
        return json.loads(r.read())["instance"]

async def stopped_mid_stream():
    events = []
    async for e in stream_file(url, wav, options={"max_segment": 2}, api_key=key):
        events.append(e)
        if e["type"] == "utterance.result" and len(events) < 4:
            os.kill(server_pid, signal.SIGTERM)
    return events

async def refused():
    try:
        [e async for e in stream_blocks(url, [])]
    except ServerError as e:
        return [e.code, e.status]

async def run():
    out = {"predict": [await predict_file(url, p, api_key=key) for p in (wav, flac)]}
    out["refused"] = await refused()
    out["streams"] = await asyncio.gather(*(stream({"max_segment": 2}) for _ in range(4)))
    out["readyz"] = [readyz() for _ in range(20)]
    out["drained"] = await stopped_mid_stream()
    print(json.dumps(out))

asyncio.run(run())
"""


@pytest.fixture(scope="module")
def ray_cluster():
    try:
        with loopback_ray_cluster(num_cpus=2) as cluster:
            yield cluster
    except NamespaceUnavailable as e:
        pytest.skip(f"Ray Serve test skipped: {e}")


@pytest.fixture(scope="module")
def speech(ravdess_mini, tmp_path_factory) -> tuple[Path, Path]:
    """Five real RAVDESS utterances with 0.6 s pauses (48 kHz), as WAV and FLAC."""
    parts = []
    for f in sorted(ravdess_mini.glob("Actor_*/*.wav"))[:5]:
        x, rate = sf.read(f, dtype="int16")
        assert rate == 48_000
        parts += [x if x.ndim == 1 else x[:, 0], np.zeros(28_800, dtype=np.int16)]
    folder = tmp_path_factory.mktemp("ray-speech")
    x = np.concatenate(parts)
    sf.write(folder / "talk.wav", x, 48_000, subtype="PCM_16")
    sf.write(folder / "talk.flac", x, 48_000)
    return folder / "talk.wav", folder / "talk.flac"


def test_ray_serve_replicas_answer_as_local_and_drain(ray_cluster, speech, tmp_path, capsys):
    wav, flac = speech
    model_dir = tmp_path / "model"
    make_dummy_model(model_dir)
    onnx = str(model_dir / "model.int8.onnx")
    local_predict = []
    for f in (wav, flac):
        assert main(["predict", onnx, str(f), "--json"]) == 0
        local_predict.append({**json.loads(capsys.readouterr().out), "path": "-"})
    assert main(["stream", onnx, str(wav), "--json", "--max-segment", "2"]) == 0
    local_stream = capsys.readouterr().out.splitlines()
    assert len(local_stream) >= 5

    keyfile = tmp_path / "keys"
    keyfile.write_text(KEY + "\n", encoding="utf-8")
    edgeser = str(Path(sys.executable).parent / "edgeser")
    server = subprocess.Popen(
        ray_cluster.command(
            [
                edgeser,
                "serve",
                str(model_dir),
                f"--ray={ray_cluster.address}",
                "--replicas",
                "2",
                "--replica-cpus",
                "0.5",
                "--port",
                str(PORT),
                "--no-page",
                "--max-rate",
                "20",
                "--max-lead",
                "10",
                "--api-key-file",
                str(keyfile),
            ]
        ),
        env=ray_cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert "Ray Serve: 2 replicas" in line, line + server.stderr.read()[-3000:]
        url = f"http://127.0.0.1:{PORT}/"
        client = subprocess.run(
            ray_cluster.command(
                [sys.executable, "-c", CLIENT, url, str(wav), str(flac), str(server.pid)]
            ),
            env={**ray_cluster.env, "EDGESER_API_KEY": KEY},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert client.returncode == 0, client.stderr[-3000:]
        out = json.loads(client.stdout.strip().splitlines()[-1])
        assert server.wait(timeout=120) == 0
        stderr = server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # a stream without the key is refused by the replica's HTTP answer, through Ray's proxy
    assert out["refused"] == ["unauthorized", 401]
    assert "Traceback" not in stderr, stderr[-3000:]
    # the files: edgeser predict's objects
    assert out["predict"] == local_predict
    # four concurrent streams: each exactly edgeser stream's lines, each on one replica
    for instance, lines, end in out["streams"]:
        assert lines == local_stream and end["type"] == "session.end", instance
        assert end["utterances"] == len(local_stream)
    # the requests reached both replicas
    replicas = set(out["readyz"])
    print(
        f"replicas: /readyz {sorted(replicas)}; streams on {sorted({s[0] for s in out['streams']})}"
    )
    assert len(replicas) == 2
    assert {s[0] for s in out["streams"]} <= replicas
    # SIGTERM drained the open stream: its open utterance got its result, then session.end
    drained = out["drained"]
    kinds = [e["type"] for e in drained]
    assert kinds[-2:] == ["utterance.result", "session.end"], kinds
    assert drained[-1]["reason"] == "shutdown"
    assert "2 of 2 replicas drained" in stderr, stderr[-3000:]
