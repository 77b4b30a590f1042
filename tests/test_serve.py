"""``edgeser serve`` over loopback: the stream protocol gives ``edgeser stream``'s results,
every limit and every malformed input gets its documented error, and the server keeps
serving the others."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from edgeser.cli import main
from edgeser.core.errors import EdgeserError
from edgeser.runtime.segments import SpeechSplitter, array_blocks, speech_segments
from edgeser.runtime.vad import SegmenterConfig, make_vad
from edgeser.serve.app import ServeLimits, key_matches, read_api_keys
from edgeser.serve.client import ServerError, endpoint, predict_file, stream_blocks, stream_file
from edgeser.serve.protocol import ProtocolError, decode_frame, parse_session_start
from edgeser.serve.server import exposure_warning, make_serve_server
from edgeser.testing import make_dummy_model

pytest.importorskip("websockets")
from websockets.asyncio.client import connect

SR = 16_000
FAST = ServeLimits(max_rate=200.0, max_lead=60.0, idle_timeout=5.0, max_streams=4)
KEY = "k" * 20 + "-serve-test"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve") / "model"
    make_dummy_model(folder)
    return folder


@pytest.fixture(scope="module")
def speech(ravdess_mini, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """Real speech with pauses: five RAVDESS utterances (48 kHz, 16-bit) and 0.6 s gaps."""
    files = sorted(ravdess_mini.glob("Actor_*/*.wav"))[:5]
    parts = []
    for f in files:
        x, rate = sf.read(f, dtype="int16")
        assert rate == 48_000
        parts += [x if x.ndim == 1 else x[:, 0], np.zeros(28_800, dtype=np.int16)]
    x = np.concatenate(parts)
    path = tmp_path_factory.mktemp("speech") / "talk.wav"
    sf.write(path, x, 48_000, subtype="PCM_16")
    return path, x


@pytest.fixture(scope="module")
def server(model_dir):
    srv = make_serve_server(model_dir, "127.0.0.1", 0, limits=FAST, page=False).start()
    yield srv
    srv.stop()


def _get(
    url: str, path: str, key: str | None = None, host: str | None = None
) -> tuple[int, bytes, Any]:
    req = urllib.request.Request(url.rstrip("/") + path)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def _post(
    url: str,
    body: bytes,
    ctype: str | None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict]:
    req = urllib.request.Request(
        url.rstrip("/") + "/v1/predict", data=body, method="POST", headers=headers or {}
    )
    if ctype:
        req.add_header("Content-Type", ctype)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _upgrade(url: str, host: str | None, key: str | None, origin: str | None = None) -> str:
    """The status line of a WebSocket handshake sent by hand."""
    import socket

    addr = url.split("//", 1)[1].rstrip("/")
    h, port = addr.rsplit(":", 1)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    auth += f"Origin: {origin}\r\n" if origin else ""
    with socket.create_connection((h, int(port)), timeout=30) as s:
        s.sendall(
            f"GET /v1/stream HTTP/1.1\r\nHost: {host or addr}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{auth}\r\n".encode()
        )
        return s.recv(4096).decode("latin-1").split("\r\n", 1)[0]


def _ws(url: str) -> str:
    return endpoint(url, "/v1/stream", websocket=True)


async def _start(ws, **start) -> dict:
    await ws.send(json.dumps({"type": "session.start", **start}))
    return json.loads(await ws.recv())


async def _error_of(
    url: str, first: dict | str | bytes | None, then: list = (), ready: bool | None = None, **kw
):
    """Open a stream, send ``first`` (a session.start by default) and ``then``; return the
    error event and the close code."""
    async with connect(_ws(url), **kw) as ws:
        if first is not None:
            await ws.send(first if isinstance(first, str | bytes) else json.dumps(first))
            if ready or (ready is None and then):  # a valid session.start first
                assert json.loads(await ws.recv())["type"] == "session.ready"
        for message in then:
            await ws.send(message)
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        with pytest.raises(Exception):  # noqa: B017 - the server closes after the error
            await asyncio.wait_for(ws.recv(), 30)
        return event, ws.close_code


def _tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


# --------------------------------------------------------------------------- segmentation
def test_push_splitter_is_speech_segments_and_announces_only_what_it_returns(speech):
    _, pcm = speech
    import soxr

    x = soxr.resample(pcm.astype(np.float32) / 32768, 48_000, SR)
    vad = make_vad("silero")
    config = SegmenterConfig(max_segment=2.0)
    want = [(a, b) for a, b, _ in speech_segments(array_blocks(x), vad, config)]
    rng = np.random.default_rng(0)
    splitter, got, announced = SpeechSplitter(vad, config), [], []
    i = 0
    while i < x.size:
        n = int(rng.integers(1, 9000))
        got += [(a, b) for a, b, _ in splitter.push(x[i : i + n])]
        start = splitter.open_start()
        if start is not None and (not announced or announced[-1] != start):
            announced.append(start)
        i += n
    got += [(a, b) for a, b, _ in splitter.finish()]
    assert got == want and len(want) >= 5  # max_segment cuts included
    assert set(announced) <= {a for a, _ in got}


def test_protocol_validation():
    s = parse_session_start(
        '{"type": "session.start", "format": "f32le", "sample_rate": '
        '44100, "options": {"max_segment": 5}}',
        window=10.0,
    )
    assert (s.format, s.sample_rate, s.options.max_segment) == ("f32le", 44100, 5.0)
    for bad in (
        "[]",
        '{"type": "hello"}',
        '{"type": "session.start", "format": "mp3"}',
        '{"type": "session.start", "sample_rate": 100}',
        '{"type": "session.start", "sample_rate": true}',
        '{"type": "session.start", "options": {"max_segment": 30}}',
        '{"type": "session.start", "options": {"threshold": "high"}}',
        '{"type": "session.start", "options": {"colour": 1}}',
        '{"type": "session.start", "extra": 1}',
        "not json",
    ):
        with pytest.raises(ProtocolError) as e:
            parse_session_start(bad, window=10.0)
        assert e.value.code == "bad_session"
    assert decode_frame(b"\x00\x80\xff\x7f", "pcm_s16le").tolist() == [-1.0, 32767 / 32768]
    for data, fmt in (
        (b"\x00\x01\x02", "pcm_s16le"),
        (b"", "f32le"),
        (np.array([np.nan], "<f4").tobytes(), "f32le"),
    ):
        with pytest.raises(ProtocolError):
            decode_frame(data, fmt)


# --------------------------------------------------------------------------- round trips
def test_stream_results_equal_local_stream(server, model_dir, speech, capsys):
    """The file, resampled on the client; and the raw 48 kHz samples, resampled on the server:
    both give exactly ``edgeser stream``'s output (lines and JSON)."""
    path, pcm = speech
    onnx = str(model_dir / "model.int8.onnx")
    for extra in ([], ["--max-segment", "2"], ["--json", "--max-segment", "2"]):
        assert main(["stream", onnx, str(path), *extra]) == 0
        local = capsys.readouterr().out
        assert main(["stream", "--server", _ws(server.url), str(path), *extra]) == 0
        assert capsys.readouterr().out == local and local.count("\n") >= 5

    local = [json.loads(line) for line in local.splitlines()]

    async def raw_48k() -> list[dict]:
        blocks = (pcm[i : i + 4800].astype(np.float32) / 32768 for i in range(0, pcm.size, 4800))
        return [
            e
            async for e in stream_blocks(
                server.url, blocks, sample_rate=48_000, fmt="pcm_s16le", options={"max_segment": 2}
            )
        ]

    events = asyncio.run(raw_48k())
    results = [e for e in events if e["type"] == "utterance.result"]
    assert [(round(r["start"], 3), round(r["end"], 3), r["label"]) for r in results] == [
        (r["start"], r["end"], r["label"]) for r in local
    ]
    # every result follows its utterance.start; the session ends with the count
    starts = [e["start"] for e in events if e["type"] == "utterance.start"]
    assert starts == [r["start"] for r in results]
    order = [e["type"] for e in events]
    for k, r in enumerate(results):
        i = events.index(r)
        assert events[:i].count({"type": "utterance.start", "start": r["start"]}) == 1, k
    assert order[0] == "session.ready" and order[-1] == "session.end"
    assert events[-1]["utterances"] == len(results) and events[-1]["reason"] == "client"


def test_stdin_pcm_through_the_server_equals_local(server, model_dir, speech, capsys, monkeypatch):
    path, _ = speech
    import soxr

    x16 = soxr.resample(sf.read(path, dtype="float32")[0], 48_000, SR)
    pcm = (np.clip(x16, -1, 1) * 32767).astype("<i2").tobytes()
    outs = []
    for argv in (
        ["stream", str(model_dir / "model.int8.onnx"), "-"],
        ["stream", "--server", server.url, "-"],
    ):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm)))
        assert main(argv) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0].count("\n") >= 4


def test_predict_endpoint_equals_predict(server, model_dir, speech, tmp_path, capsys):
    path, _ = speech
    flac = tmp_path / "talk.flac"
    sf.write(flac, sf.read(path)[0], 48_000)
    for f in (path, flac):
        assert main(["predict", str(model_dir / "model.int8.onnx"), str(f), "--json"]) == 0
        local = json.loads(capsys.readouterr().out)
        remote = asyncio.run(predict_file(server.url, f))
        assert remote == {**local, "path": "-"} and remote["segments"] >= 2
    # multipart, one file part: its name is the path
    boundary = "edgeserboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="../../x/talk.flac"\r\nContent-Type: audio/flac\r\n\r\n'
        ).encode()
        + flac.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, obj = _post(server.url, body, f"multipart/form-data; boundary={boundary}")
    assert status == 200 and obj == {**local, "path": "talk.flac"}


def test_bad_uploads_get_their_errors(model_dir, tmp_path):
    limits = ServeLimits(max_upload_bytes=200_000, max_upload_seconds=2.0)
    srv = make_serve_server(model_dir, "127.0.0.1", 0, limits=limits, page=False).start()
    try:
        wav = tmp_path / "a.wav"
        sf.write(wav, _tone(1.0), SR)
        assert _post(srv.url, wav.read_bytes(), "audio/wav")[0] == 200
        assert _post(srv.url, b"x" * 300_000, "audio/wav")[1]["error"]["code"] == "upload_too_large"
        # chunked, no Content-Length: counted as it arrives
        chunks = iter([b"\0" * 65536] * 5)
        status, obj = _post(
            srv.url,
            chunks,
            "audio/wav",  # type: ignore[arg-type]
            headers={"Transfer-Encoding": "chunked"},
        )
        assert (status, obj["error"]["code"]) == (413, "upload_too_large")
        assert _post(srv.url, b"{}", "application/json")[0] == 415
        assert _post(srv.url, b"abc", None)[0] == 415
        status, obj = _post(srv.url, b"RIFF not audio" * 10, "audio/wav")
        assert status == 422 and obj["error"]["code"] == "bad_audio"
        assert "edgeser-upload" not in obj["error"]["message"]  # no server paths
        sf.write(wav, _tone(3.0), SR)
        status, obj = _post(srv.url, wav.read_bytes(), "audio/wav")
        assert (status, obj["error"]["code"]) == (413, "audio_too_long")
        status, obj = _post(srv.url, b"--b\r\n\r\n--b--\r\n", "multipart/form-data; boundary=b")
        assert status == 400
        assert _get(srv.url, "/healthz")[0] == 200  # still serving
    finally:
        srv.stop()


# --------------------------------------------------------------------------- access
def test_api_keys_and_hosts(model_dir, tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"# keys\n\n{KEY}\n{'z' * 32}\n", encoding="utf-8")
    keys = read_api_keys(keyfile)
    srv = make_serve_server(
        model_dir, "127.0.0.1", 0, limits=FAST, api_keys=keys, page=False
    ).start()
    url = srv.url
    try:
        assert _get(url, "/healthz")[0] == 200 and _get(url, "/readyz")[0] == 200
        status, body, headers = _get(url, "/metrics")
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        assert headers["WWW-Authenticate"] == "Bearer"
        assert _get(url, "/metrics", key="z" * 31)[0] == 401
        assert _get(url, "/metrics", key="z" * 32)[0] == 200
        assert _post(url, b"", "audio/wav", key="wrong" * 5)[0] == 401
        assert _get(url, "/healthz", host="evil.example")[0] == 400

        async def streams() -> None:
            with pytest.raises(ServerError) as e:
                [x async for x in stream_blocks(url, [_tone(0.5)])]
            assert (e.value.code, e.value.status) == ("unauthorized", 401)
            with pytest.raises(ServerError):
                [x async for x in stream_blocks(url, [_tone(0.5)], api_key="y" * 20)]
            ok = [x async for x in stream_blocks(url, [_tone(0.5)], api_key=KEY)]
            assert ok[-1]["type"] == "session.end"
            async with connect(_ws(url) + f"?token={KEY}") as ws:  # browsers
                assert (await _start(ws))["type"] == "session.ready"

        asyncio.run(streams())
        assert _upgrade(url, "evil.example", KEY).startswith("HTTP/1.1 400")
        assert _upgrade(url, None, KEY).startswith("HTTP/1.1 101")
        assert _upgrade(url, None, None).startswith("HTTP/1.1 401")
    finally:
        srv.stop()
    assert key_matches(KEY, keys) and not key_matches(KEY[:-1], keys)
    assert not key_matches(None, keys) and not key_matches("", keys)
    for text in ("", "# only a comment\n", "short\n", "has a space in it somewhere\n"):
        keyfile.write_text(text, encoding="utf-8")
        with pytest.raises(EdgeserError):
            read_api_keys(keyfile)
    assert exposure_warning("127.0.0.1", ()) is None
    assert exposure_warning("0.0.0.0", keys) is None
    assert "--api-key-file" in exposure_warning("0.0.0.0", ())


def _request(url: str, path: str, method: str = "GET", headers: dict | None = None):
    req = urllib.request.Request(url.rstrip("/") + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def test_origins_cors_and_preflight(model_dir):
    """Browsers' Origin: the server's own pages and --allow-origin ones (with CORS headers
    and preflight answers, no key needed for the preflight); every other page is refused,
    for HTTP and for the WebSocket handshake."""
    page = "http://page.example:8080"
    srv = make_serve_server(
        model_dir,
        "127.0.0.1",
        0,
        limits=FAST,
        api_keys=(KEY.encode(),),
        allowed_origins=(page + "/",),
        page=False,
    ).start()
    url, own = srv.url, srv.url.rstrip("/")
    try:
        status, headers = _request(url, "/readyz", headers={"Origin": "http://evil.example"})
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
        status, headers = _request(url, "/readyz", headers={"Origin": page})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == page
        status, headers = _request(url, "/readyz", headers={"Origin": own})  # same origin
        assert status == 200 and "Access-Control-Allow-Origin" not in headers
        preflight = {
            "Origin": page,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        status, headers = _request(url, "/v1/predict", "OPTIONS", preflight)
        assert status == 204 and headers["Access-Control-Allow-Origin"] == page
        assert "authorization" in headers["Access-Control-Allow-Headers"]
        status, _ = _request(
            url, "/v1/predict", "OPTIONS", {**preflight, "Origin": "http://evil.example"}
        )
        assert status == 403
        # an allowed page without the key: 401 it can read (CORS headers on the error too)
        status, headers = _request(url, "/metrics", headers={"Origin": page})
        assert status == 401 and headers["Access-Control-Allow-Origin"] == page
        assert _upgrade(url, None, KEY, "http://evil.example").startswith("HTTP/1.1 403")
        assert _upgrade(url, None, KEY, page).startswith("HTTP/1.1 101")
        assert _upgrade(url, None, KEY, own).startswith("HTTP/1.1 101")
        body = _get(url, "/metrics", key=KEY)[1].decode()
        assert 'edgeser_rejected_total{reason="origin"} 3.0' in body
    finally:
        srv.stop()
    from edgeser.serve.app import normal_origin

    assert normal_origin("HTTPS://Example.org/") == "https://example.org"
    for bad in ("example.org", "https://example.org/page", "ftp://x", "https://"):
        with pytest.raises(EdgeserError):
            normal_origin(bad)


# --------------------------------------------------------------------------- abuse
def test_malformed_messages_get_their_errors_and_others_are_served(server):
    url = server.url
    start = {"type": "session.start", "format": "pcm_s16le", "sample_rate": SR}
    f32 = {**start, "format": "f32le"}
    cases = [
        (start, [b"\x01\x02\x03"], "bad_audio", 1007),
        (f32, [np.array([0.1, np.inf], "<f4").tobytes()], "bad_audio", 1007),
        (start, ["hello"], "bad_message", 1003),
        (start, [json.dumps({"type": "session.start"})], "bad_message", 1003),
        (start, [b"\0" * (FAST.max_message_bytes + 2)], "message_too_large", 1009),
        (b"\0\0", [], "bad_session", 1008),
        ({"type": "audio"}, [], "bad_session", 1008),
        ({**start, "options": {"max_segment": 99}}, [], "bad_session", 1008),
    ]

    async def run() -> None:
        for first, then, code, close in cases:
            event, closed = await _error_of(url, first, then)
            assert (event["type"], event["code"], closed) == ("error", code, close), code
            assert event["message"]
        events = [e async for e in stream_blocks(url, [_tone(1.0)])]
        assert events[-1]["type"] == "session.end"

    asyncio.run(run())
    body = _get(url, "/metrics")[1]
    assert 'edgeser_rejected_total{reason="bad_audio"} 2.0' in body.decode()


def test_stream_limits(model_dir):
    limits = ServeLimits(
        max_streams=2, max_rate=1.0, max_lead=0.5, idle_timeout=0.5, max_session=60.0
    )
    srv = make_serve_server(model_dir, "127.0.0.1", 0, limits=limits, page=False).start()
    url = srv.url
    start = {"type": "session.start"}

    async def run() -> None:
        async with connect(_ws(url)) as a, connect(_ws(url)) as b:
            await _start(a)
            await _start(b)
            event, code = await _error_of(url, None)
            assert (event["code"], code) == ("too_many_streams", 1013)
        # the two are closed: a new one is taken
        event, code = await _error_of(url, start, [b"\0\0" * SR * 2])  # 2 s at once
        assert (event["code"], code) == ("rate_exceeded", 1008)
        event, code = await _error_of(url, start, ready=True)  # then silence
        assert (event["code"], code) == ("idle_timeout", 1008)
        event, code = await _error_of(url, None)  # no session.start at all
        assert (event["code"], code) == ("idle_timeout", 1008)

    try:
        asyncio.run(run())
    finally:
        srv.stop()
    short = ServeLimits(max_session=0.3, idle_timeout=5.0)
    srv = make_serve_server(model_dir, "127.0.0.1", 0, limits=short, page=False).start()

    async def too_long() -> None:
        async with connect(_ws(srv.url)) as ws:
            await _start(ws)
            end = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert end["type"] == "session.end" and end["reason"] == "max_duration"

    try:
        asyncio.run(too_long())
    finally:
        srv.stop()


def _wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_disconnect_mid_utterance_frees_the_session(model_dir, speech):
    path, pcm = speech
    limits = ServeLimits(max_streams=1, max_rate=200.0, max_lead=60.0)
    srv = make_serve_server(model_dir, "127.0.0.1", 0, limits=limits, page=False).start()
    state = srv.app_state
    x = pcm.astype(np.float32) / 32768

    async def vanish() -> None:
        async with connect(_ws(srv.url)) as ws:
            await _start(ws, format="f32le", sample_rate=48_000)
            i = 0
            while True:  # until an utterance is open
                await ws.send(x[i : i + 4800].astype("<f4").tobytes())
                i += 4800
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 0.01))
                except TimeoutError:
                    continue
                if event["type"] == "utterance.start":
                    break
            ws.transport.abort()  # no close frame: the connection is just gone

    try:
        for _ in range(3):
            asyncio.run(vanish())
            _wait_for(lambda: not state.sessions, "the session was freed")
        events = asyncio.run(_collect(stream_file(srv.url, path)))
        assert events[-1]["type"] == "session.end" and events[-1]["utterances"] >= 5
        body = _get(srv.url, "/metrics")[1].decode()
        assert "edgeser_open_streams 0.0" in body and "edgeser_streams_total 4.0" in body
        # every result's latency is split into the stages, which add up to it
        sample = state.metrics.registry.get_sample_value
        results = sample("edgeser_utterances_total")
        assert sample("edgeser_result_latency_seconds_count") == results >= 5
        stages = [("stage", s) for s in ("vad", "queue", "pool", "model", "send")]
        counts = [sample("edgeser_result_stage_seconds_count", dict([s])) for s in stages]
        sums = [sample("edgeser_result_stage_seconds_sum", dict([s])) for s in stages]
        assert counts == [results] * 5 and min(sums) >= 0 and sums[3] > 0
        total = sample("edgeser_result_latency_seconds_sum")
        assert sum(sums) == pytest.approx(total, rel=1e-6)
    finally:
        srv.stop()


async def _collect(events) -> list[dict]:
    return [e async for e in events]


def test_stop_drains_open_utterances(model_dir, speech):
    _, pcm = speech
    srv = make_serve_server(model_dir, "127.0.0.1", 0, limits=FAST, page=False).start()
    x = pcm.astype(np.float32) / 32768
    events: list[dict] = []

    async def run() -> int:
        async with connect(_ws(srv.url)) as ws:
            await _start(ws, format="f32le", sample_rate=48_000)
            i = 0
            while not any(e["type"] == "utterance.start" for e in events):
                await ws.send(x[i : i + 4800].astype("<f4").tobytes())
                i += 4800
                with contextlib.suppress(TimeoutError):
                    events.append(json.loads(await asyncio.wait_for(ws.recv(), 0.01)))
            await asyncio.to_thread(srv.stop)
            async for message in ws:
                events.append(json.loads(message))
            return ws.close_code

    code = asyncio.run(run())
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["utterance.result", "session.end"] and code == 1001
    assert events[-1]["reason"] == "shutdown" and events[-1]["utterances"] >= 1


# --------------------------------------------------------------------------- the command
def test_serve_command_health_metrics_and_sigterm(model_dir, speech, tmp_path):
    """``edgeser serve`` in its own process: ready, streams, and SIGTERM drains; the server
    modules import no torch."""
    path, _ = speech
    keyfile = tmp_path / "keys"
    keyfile.write_text(KEY + "\n", encoding="utf-8")
    check = (
        "import sys; import edgeser.cli.serving; "
        "from edgeser.serve import app, client, server, session; "
        f"app.create_serve_app(app.load_serving_model({str(model_dir)!r})); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=120)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeser.cli",
            "serve",
            str(model_dir),
            "--port",
            "0",
            "--no-page",
            "--api-key-file",
            str(keyfile),
            "--max-rate",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        assert json.loads(_get(url, "/readyz")[1])["status"] == "ready"

        async def run() -> list[dict]:
            events = []
            async for event in stream_file(url, path, api_key=KEY):
                events.append(event)
                if event["type"] == "utterance.result":
                    proc.send_signal(signal.SIGTERM)
            return events

        events = asyncio.run(run())
        assert events[-1]["type"] == "session.end" and events[-1]["reason"] == "shutdown"
        # uvicorn ends the process with the signal it drained for
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in proc.stderr.read()


def test_the_page_is_served_as_edgeser_web_serves_it(server, model_dir):
    root = Path(__file__).resolve().parents[1] / "web" / "node_modules" / "onnxruntime-web"
    if not root.is_dir() and not os.environ.get("EDGESER_WEB_VENDOR"):
        pytest.skip("the page's npm packages are not installed (npm ci --prefix web)")
    srv = make_serve_server(model_dir, "127.0.0.1", 0, limits=FAST).start()
    try:
        status, _, headers = _get(srv.url, "/")
        assert status == 200 and headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert _get(srv.url, "/model/model.json")[0] == 200
        assert _get(srv.url, "/model/../../etc/passwd")[0] == 404
        assert _get(srv.url, "/healthz")[0] == 200
    finally:
        srv.stop()
