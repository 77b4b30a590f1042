"""The browser page in a real headless Chromium (Debian's chromium, npm's playwright-core):
the same answers as ``edgeser predict`` on real speech, bad files, the server's headers."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgeser.runtime.model import OnnxEmotionModel
from edgeser.testing import export_tiny_model

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLAYWRIGHT = ROOT / "web" / "node_modules" / "playwright-core"


def _skip_reason() -> str | None:
    if CHROMIUM is None:
        return "Chromium is not installed (apt-get install chromium)"
    if shutil.which("node") is None:
        return "Node.js is not installed"
    if not PLAYWRIGHT.is_dir():
        return "the page's npm packages are not installed (npm ci --prefix web)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny exported model (sharpened head: confident, so labels are meaningful) served
    by ``edgeser web`` on a free loopback port."""
    from edgeser.web.server import make_server

    root = tmp_path_factory.mktemp("web")
    paths = export_tiny_model(root)
    server = make_server(root / "onnx", "127.0.0.1", 0).start()
    yield {"url": server.url, "paths": paths, "root": root}
    server.stop()


def _drive(
    site: dict,
    batches: list[list[str]],
    screenshot: Path | None = None,
    *,
    mic: dict | None = None,
    deny: bool = False,
    query: dict | None = None,
) -> dict:
    job = {
        "url": site["url"],
        "chromium": CHROMIUM,
        "files": batches,
        "mic": mic,
        "deny": deny,
        "query": query or {},
        "screenshot": str(screenshot) if screenshot else None,
    }
    run = subprocess.run(
        ["node", str(ROOT / "web" / "drive.mjs"), json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT / "web",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_server_sends_isolation_headers_and_only_the_page(site):
    with urllib.request.urlopen(site["url"]) as r:
        assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert b"<title>edgeser" in r.read()
    with urllib.request.urlopen(site["url"] + "model/model.json") as r:
        assert json.loads(r.read())["format"] == "edgeser-onnx"
    with urllib.request.urlopen(site["url"] + "vendor/ort/ort-wasm-simd-threaded.wasm") as r:
        assert r.headers["Content-Type"] == "application/wasm"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(site["url"] + "../../etc/passwd")
    assert e.value.code == 404


def test_page_equals_predict_on_real_speech_and_survives_bad_files(site, ravdess_mini, tmp_path):
    files = sorted(str(p) for p in ravdess_mini.rglob("*.wav"))
    assert len(files) >= 100
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all", encoding="utf-8")
    shot = site["root"] / "page.png"
    out = _drive(site, [[str(empty)], [str(text)], files], screenshot=shot)
    assert out["ready"], out.get("logs")
    assert out["isolated"]  # COOP/COEP took effect: WASM threads are available
    bad_empty, bad_text, good = out["batches"]
    assert bad_empty["error"] == "empty.wav: the file is empty"
    assert bad_text["error"].startswith("notes.wav: not an audio file")
    assert good["error"] is None  # the page kept working after the bad files
    native = OnnxEmotionModel(site["paths"]["int8"])
    same, deltas = 0, []
    for path, got in zip(files, good["results"], strict=True):
        assert got["path"] == Path(path).name
        ref = native.analyse_file(path)
        assert got["status"] == ref.status, (path, got["status"], ref.status)
        same += got["label"] == ref.label
        deltas.append(
            np.mean([abs(got["probabilities"][k] - v) for k, v in ref.probabilities.items()])
        )
    agreement, mean_delta = same / len(files), float(np.mean(deltas))
    print(
        f"browser vs predict on {len(files)} files: agreement {agreement:.3f}, "
        f"mean |dp| {mean_delta:.5f}, max {max(deltas):.5f}"
    )
    assert agreement >= 0.99 and mean_delta <= 0.02
    assert shot.stat().st_size > 10_000


def _speech_with_pauses(ravdess_mini: Path, out: Path, rate: int = 48000) -> float:
    """Four real utterances (both actors) with 1.5 s pauses, as a mono WAV at the corpus's
    48 kHz (the fake microphone's rate, and the page's audio context's: no resampling inside
    Chromium); returns its length in seconds.

    A live stream's 32 ms VAD frames do not start where the file starts (the capture begins
    at an arbitrary sample), so a pause whose speech probability hovers at the threshold
    can split an utterance in one alignment and not in another. The utterances chosen here
    give one segment at every frame offset, so the comparison tests the page, not that."""
    import soundfile as sf

    from edgeser.audio.io import load_audio
    from edgeser.runtime.stream import speech_segments
    from edgeser.runtime.vad import make_vad

    vad = make_vad("silero")
    chosen = []
    for f in sorted(ravdess_mini.rglob("*.wav"))[::7]:
        x16 = load_audio(f, 16000)
        counts = {
            len(
                list(
                    speech_segments(
                        [
                            np.concatenate(
                                [
                                    np.zeros(16000 + shift, np.float32),
                                    x16,
                                    np.zeros(24000, np.float32),
                                ]
                            )
                        ],
                        vad,
                    )
                )
            )
            for shift in (0, 128, 256, 384)
        }
        if counts == {1}:
            chosen.append(f)
        if len(chosen) == 4:
            break
    assert len(chosen) == 4
    parts = [np.zeros(rate, np.float32)]
    for f in chosen:
        parts += [load_audio(f, rate), np.zeros(int(1.5 * rate), np.float32)]
    x = np.concatenate(parts)
    sf.write(out, x, rate, subtype="FLOAT")
    return len(x) / rate


def test_microphone_timeline_equals_stream(site, ravdess_mini, tmp_path):
    """The page listening to a fake microphone that plays a WAV gives `edgeser stream`'s
    segments on that WAV: boundaries within 0.1 s, the same label per segment."""
    from edgeser.runtime.model import OnnxEmotionModel
    from edgeser.runtime.stream import file_blocks, stream_predictions
    from edgeser.runtime.vad import make_vad

    wav = tmp_path / "speech.wav"
    seconds = _speech_with_pauses(ravdess_mini, wav)
    model = OnnxEmotionModel(site["paths"]["int8"])
    ref = list(stream_predictions(model, file_blocks(wav), make_vad("silero")))
    assert len(ref) == 4
    shot = site["root"] / "page-microphone.png"  # the README's screenshot comes from here
    out = _drive(site, [], mic={"wav": str(wav), "seconds": seconds + 1.5}, screenshot=shot)
    assert out["ready"] and out["error"] is None, out.get("logs")
    got = out["timeline"]
    assert set(got[0]) >= {"start", "end", "label", "confidence", "probabilities"}
    print("stream:", [(round(s.start, 2), round(s.end, 2), s.label) for s in ref])
    print("page:  ", [(g["start"], g["end"], g["label"]) for g in got])
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert abs(g["start"] - r.start) <= 0.1 and abs(g["end"] - r.end) <= 0.1, (g, r)
        assert g["label"] == r.label
    assert shot.stat().st_size > 10_000


def test_denied_microphone_says_so_and_files_still_work(site, ravdess_mini):
    good = sorted(str(p) for p in ravdess_mini.rglob("*.wav"))[:1]
    out = _drive(site, [good], deny=True)
    assert out["ready"]
    assert out["micError"].startswith("Microphone access was denied: allow it for this page")
    assert out["batches"][0]["results"][0]["label"]  # the page went on working
    assert out["batches"][0]["error"] is None


def _long_wav(ravdess_mini: Path, path: Path, minutes: float) -> Path:
    """Real speech with pauses, repeated to ``minutes`` (16 kHz, 16-bit), written in blocks."""
    import soundfile as sf

    from edgeser.audio.io import load_audio

    clips = [load_audio(f, 16000) for f in sorted(ravdess_mini.rglob("*.wav"))[:20]]
    total, k = int(minutes * 60 * 16000), 0
    with sf.SoundFile(path, "w", samplerate=16000, channels=1, subtype="PCM_16") as f:
        written = 0
        while written < total:
            for part in (clips[k % len(clips)], np.zeros(12000, np.float32)):
                n = min(len(part), total - written)
                f.write(part[:n])
                written += n
            k += 1
    return path


def test_installed_page_works_offline_at_phone_size(site, ravdess_mini, tmp_path):
    """Loaded once at phone size, the page installs (manifest, icons, service worker),
    then with the server gone and the browser offline it reloads, classifies files as
    `edgeser predict` does, listens to the fake microphone, and streams a 10-minute WAV
    from disk without its memory growing with the file."""
    from edgeser.runtime.model import OnnxEmotionModel
    from edgeser.web.server import make_server

    server = make_server(site["root"] / "onnx", "127.0.0.1", 0).start()
    files = sorted(str(p) for p in ravdess_mini.rglob("*.wav"))[:3]
    mic = tmp_path / "speech.wav"
    seconds = _speech_with_pauses(ravdess_mini, mic)
    long = _long_wav(ravdess_mini, tmp_path / "ten-minutes.wav", 10.0)
    shot = site["root"] / "page-phone-offline.png"
    job = {
        "url": server.url,
        "chromium": CHROMIUM,
        "files": files,
        "long": str(long),
        "mic": {"wav": str(mic), "seconds": seconds + 1.5},
        "screenshot": str(shot),
    }
    proc = subprocess.Popen(
        ["node", str(ROOT / "web" / "offline.mjs"), json.dumps(job)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT / "web",
    )
    try:
        first = proc.stdout.readline()
        assert first.strip() == "cached", first + proc.stderr.read()[-3000:]
    finally:
        server.stop()  # no network from here on
    stdout, stderr = proc.communicate("go\n", timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["manifestErrors"] == [] and out["installabilityErrors"] == [], out
    assert out["readyOffline"] and out["controlled"] and out["isolatedOffline"], out["logs"]
    assert out["offlineNote"].startswith("Works offline"), out["offlineNote"]
    native = OnnxEmotionModel(site["paths"]["int8"])
    assert [r["label"] for r in out["files"]] == [native.analyse_file(f).label for f in files]
    assert len(out["timeline"]) == 4 and out["error"] is None  # the microphone, offline
    assert out["longSegments"] > 100 and out["longError"] is None
    # the tab's memory while the file streams, each sample after a full garbage collection.
    # Holding the file, even as its 16-bit samples, would add its size (19.2 MB) over the run;
    # what the page keeps must stay a fraction of that: onnxruntime-web's heap grows to the
    # longest segment's needs in the first half and the rest is flat.
    file_mb = long.stat().st_size / 1e6
    samples = np.asarray(out["memorySamples"]) / 1e6
    heap = np.asarray(out["heapSamples"]) / 1e6
    half = len(samples) // 2
    first, second = samples[:half].max(), samples[half:].max()
    print(
        f"offline at 390 px: {len(out['files'])} files, {len(out['timeline'])} microphone "
        f"segments; 10-minute WAV ({file_mb:.1f} MB): {out['longSegments']} segments in "
        f"{out['longSeconds']:.0f} s, tab memory {out['memoryBefore'] / 1e6:.0f} MB before, "
        f"peak {first:.0f} MB in the first half and {second:.0f} MB in the second; JS heap "
        f"{out['heapBefore'] / 1e6:.1f} MB before, {heap.max():.1f} MB at most "
        f"({len(samples)} samples)"
    )
    assert len(samples) >= 10, samples
    assert second <= first + file_mb / 4, samples.round()
    assert heap.max() <= out["heapBefore"] / 1e6 + file_mb / 4, heap.round(1)
    assert shot.stat().st_size > 10_000


def test_page_with_server_equals_predict_and_stream(site, ravdess_mini, tmp_path):
    """?server=ws://HOST:PORT/v1/stream&token=KEY: the page, served by `edgeser web` on
    another origin (allowed by the server's --allow-origin), sends files to the server's
    POST /v1/predict (answers: `edgeser predict --json`'s objects) and the fake microphone
    over WS /v1/stream (segments and labels of `edgeser stream`), loading no model itself."""
    from edgeser.runtime.model import OnnxEmotionModel
    from edgeser.runtime.output import format_prediction
    from edgeser.runtime.stream import file_blocks, stream_predictions
    from edgeser.runtime.vad import make_vad
    from edgeser.serve.server import make_serve_server

    key = "w" * 24 + "-page-key"
    origin = site["url"].rstrip("/")
    server = make_serve_server(
        site["root"] / "onnx",
        "127.0.0.1",
        0,
        api_keys=(key.encode(),),
        allowed_origins=(origin,),
        page=False,
    ).start()
    files = sorted(str(p) for p in ravdess_mini.rglob("*.wav"))[::5]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all", encoding="utf-8")
    wav = tmp_path / "speech.wav"
    seconds = _speech_with_pauses(ravdess_mini, wav)
    ws = server.url.replace("http://", "ws://") + "v1/stream"
    try:
        out = _drive(
            site,
            [[str(empty)], [str(text)], files],
            mic={"wav": str(wav), "seconds": seconds + 1.5},
            query={"server": ws, "token": key},
        )
        streams = server.app_state.metrics.registry.get_sample_value("edgeser_streams_total")
    finally:
        server.stop()
    assert out["ready"], out.get("logs")
    assert streams == 1  # the microphone went to the server
    bad_empty, bad_text, good = out["batches"]
    assert bad_empty["error"] == "empty.wav: the file is empty"
    assert bad_text["error"].startswith("notes.wav: "), bad_text["error"]
    assert good["error"] is None
    native = OnnxEmotionModel(site["paths"]["int8"])
    for path, got in zip(files, good["results"], strict=True):
        name = Path(path).name
        assert got == json.loads(format_prediction(name, native.analyse_file(path), True))
    ref = list(stream_predictions(native, file_blocks(wav), make_vad("silero")))
    got = out["timeline"]
    print("stream:", [(round(s.start, 2), round(s.end, 2), s.label) for s in ref])
    print("page via the server:", [(g["start"], g["end"], g["label"]) for g in got])
    assert len(got) == len(ref) == 4
    for g, r in zip(got, ref, strict=True):
        assert abs(g["start"] - r.start) <= 0.1 and abs(g["end"] - r.end) <= 0.1, (g, r)
        assert g["label"] == r.label and g["status"] == r.status
        assert set(g) == {"start", "end", "label", "confidence", "probabilities", "status"}
