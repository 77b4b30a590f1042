"""LIGHT-SERNET: the TF-exact MFCC front end, the network, its export graph, ONNX and int8."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edgeser.audio.frontend import peak_normalize, preemphasis
from edgeser.exporting.calibration import speech_like
from edgeser.exporting.exporter import export_onnx
from edgeser.exporting.lightsernet_graph import (
    LightSERNetGraph,
    lightsernet_quantized_nodes,
    quantize_lightsernet_int8,
)
from edgeser.models.lightsernet import (
    LIGHT_SERNET_NUM_PARAMETERS,
    MFCC,
    LightSERNet,
    LightSERNetConfig,
    MFCCConfig,
    MFCCFrontEnd,
    dct_matrix,
    fix_length,
    mel_matrix,
    mfcc_numpy,
    num_parameters,
)
from edgeser.runtime.session import pad_batch

SR = 16_000
CFG = MFCCConfig()
TEST_SECONDS = (0.5, 3.0, 4.2)


def _waves(seconds=TEST_SECONDS, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [speech_like(s, rng) for s in seconds]


def _prepared(wave: np.ndarray) -> np.ndarray:
    return peak_normalize(preemphasis(wave, SR), SR)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine two spinning OpenMP threads make
    these small convolutions up to 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net() -> LightSERNet:
    """Seeded random weights with BatchNorm statistics estimated on speech-like MFCC and a
    classifier standardised over the test inputs, so predictions differ between inputs."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LightSERNet(LightSERNetConfig())
    front = MFCCFrontEnd(CFG)
    calib = torch.stack(front.encode([_prepared(w) for w in _waves((1.0, 2.0, 3.0, 4.0), 3)]))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(calib)
    for bn in bns:
        bn.momentum = 0.01
    model.eval()
    feats = torch.stack(front.encode([_prepared(w) for w in _waves((*TEST_SECONDS, 1.5, 2.5))]))
    pooled = []
    hook = model.classifier.register_forward_hook(lambda _m, inp, _o: pooled.append(inp[0]))
    with torch.no_grad():
        model(feats)
        hook.remove()
        logits = model.classifier(pooled[0])
        mean, std = logits.mean(0), logits.std(0) + 1e-6
        model.classifier.weight.copy_(2.0 * model.classifier.weight / std[:, None])
        model.classifier.bias.copy_(2.0 * (model.classifier.bias - mean) / std)
    return model


@pytest.fixture(scope="module")
def graph(net: LightSERNet) -> LightSERNetGraph:
    return LightSERNetGraph(net, CFG)


def _run(graph: LightSERNetGraph, waves: list[np.ndarray]) -> np.ndarray:
    feed = pad_batch(waves)
    with torch.no_grad():
        out = graph(torch.from_numpy(feed["waveform"]), torch.from_numpy(feed["lengths"]))
    return out.numpy()


# ------------------------------------------------------------------------ network


def test_parameter_count() -> None:
    model = LightSERNet(LightSERNetConfig())
    paths = (11 + 9 + 9) * 32 + 3 * 32 + 3 * 2 * 32  # conv weights, biases, BN affine
    body = 9 * (96 * 64 + 64 * 96 + 96 * 128 + 128 * 160) + 160 * 320
    bn = 2 * (64 + 96 + 128 + 160 + 320)
    head = 320 * 4 + 4
    assert num_parameters(model) == paths + body + bn + head == LIGHT_SERNET_NUM_PARAMETERS
    assert LIGHT_SERNET_NUM_PARAMETERS == 460_740


@pytest.mark.parametrize("seconds", [3.0, 7.0, 1.3])
def test_logits_shape(seconds: float) -> None:
    cfg = MFCCConfig(seconds=seconds)
    model = LightSERNet(LightSERNetConfig(num_classes=5, mfcc=cfg)).eval()
    x = torch.randn(2, cfg.num_frames, cfg.n_mfcc)
    with torch.no_grad():
        assert model(x).shape == (2, 5)
    with pytest.raises(ValueError, match="MFCC"):
        model(torch.randn(2, cfg.num_frames, 13))


def test_pooling_is_tf_same() -> None:
    """AvgPool 2x2 'same' on odd sizes: ceil output, mean over the in-bounds cells only."""
    model = LightSERNet()
    pool = model.body[0][3]
    x = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3)
    expected = torch.tensor([[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8.0]])
    torch.testing.assert_close(pool(x)[0, 0], expected)


# --------------------------------------------------------------------- front end


def test_config() -> None:
    assert (CFG.num_samples, CFG.num_frames) == (48_000, 184)
    assert MFCCConfig(seconds=7.0).num_frames == 1 + (112_000 - 1024) // 256 == 434
    key = CFG.key()
    assert json.loads(json.dumps(key)) == key and key["seconds"] == 3.0
    with pytest.raises(ValueError):
        MFCCConfig(seconds=0.05)  # shorter than one frame
    with pytest.raises(ValueError):
        MFCCConfig(n_mfcc=200)


def test_mel_matrix() -> None:
    m = mel_matrix(CFG)
    assert m.shape == (513, 128) and m.dtype == np.float32
    assert not m[0].any()  # DC bin excluded
    assert (m >= 0).all() and m.max() <= 1.0 + 1e-6
    # sampled triangles: each filter's peak is its bin nearest the centre (<= 1, >= 0.6
    # for the narrow low filters that fall between two 15.6 Hz bins)
    peaks = m.max(axis=0)
    assert peaks.min() > 0.6 and np.median(peaks) > 0.85
    centres = (m * np.arange(513)[:, None]).sum(0) / m.sum(0)
    assert np.all(np.diff(centres) > 0)
    # nothing outside [80, 7600] Hz: first non-zero bin 6 (93.75 Hz), last 486 (7593.75 Hz)
    nonzero = np.flatnonzero(m.any(axis=1))
    assert (nonzero[0], nonzero[-1]) == (6, 486)
    # by hand: filter 0 rises from mel(80) to the next of 130 edges; bin 6 = 93.75 Hz
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    step = (mel(7600.0) - mel(80.0)) / 129
    assert m[6, 0] == pytest.approx((mel(93.75) - mel(80.0)) / step, abs=1e-5)
    assert m[6, 0] == pytest.approx(0.9533, abs=1e-4)
    assert m[5, 0] == 0.0  # 78.125 Hz < 80 Hz


def test_dct_matches_scipy() -> None:
    fft = pytest.importorskip("scipy.fft")
    x = np.random.default_rng(0).standard_normal((5, 128))
    want = fft.dct(x, type=2, norm=None)[:, :40] / math.sqrt(2 * 128)
    np.testing.assert_allclose(x @ dct_matrix(128, 40).astype(np.float64), want, atol=1e-5)


def test_mfcc_module_matches_numpy() -> None:
    short, long = (fix_length(_prepared(w), CFG.num_samples) for w in _waves((2.2, 4.0), 1))
    batch = torch.from_numpy(np.stack([short, long]))
    with torch.no_grad():
        got = MFCC(CFG)(batch).numpy()
    assert got.shape == (2, CFG.num_frames, 40)
    for row, wave in zip(got, (short, long), strict=True):
        ref = mfcc_numpy(wave, CFG)
        assert ref.shape == row.shape
        assert np.abs(row - ref).max() <= 1e-3
    assert np.abs(got).max() <= CFG.clip
    tail = got[0, -10:, 0]  # frames of the zero-padded tail: c0 = 16 log(1e-6) -> clipped
    assert np.all(tail == -CFG.clip)


def test_frame_count_other_config() -> None:
    cfg = MFCCConfig(seconds=1.0, frame_step=160)
    wave = _waves((1.0,), 2)[0]
    expected = 1 + (16_000 - 1024) // 160
    ref = mfcc_numpy(wave, cfg)
    with torch.no_grad():
        got = MFCC(cfg)(torch.from_numpy(wave)[None])[0].numpy()
    assert cfg.num_frames == expected == ref.shape[0] == got.shape[0]
    assert np.abs(got - ref).max() <= 1e-3


def test_fix_length() -> None:
    x = np.arange(1, 6, dtype=np.float64)
    np.testing.assert_array_equal(fix_length(x, 3), [1, 2, 3])
    np.testing.assert_array_equal(fix_length(x, 7), [1, 2, 3, 4, 5, 0, 0])
    assert fix_length(x, 5).dtype == np.float32
    np.testing.assert_array_equal(fix_length(np.zeros(0), 4), np.zeros(4))


def test_front_end_identity() -> None:
    a, b = MFCCFrontEnd(), MFCCFrontEnd(MFCCConfig())
    assert a.identity == b.identity == "d646e4f322bf83e1"  # stable across runs
    assert MFCCFrontEnd(MFCCConfig(seconds=7.0)).identity != a.identity
    assert MFCCFrontEnd(MFCCConfig(lower_hz=60.0)).identity != a.identity
    assert (a.source, a.is_random, a.precision, a.cfg) == ("mfcc", False, "fp32", CFG)


def test_front_end_encode() -> None:
    waves = [*_waves((1.0, 4.5), 4), np.zeros(0, np.float32)]
    feats = MFCCFrontEnd().encode(waves)
    assert len(feats) == 3
    for f, w in zip(feats, waves, strict=True):
        assert f.shape == (184, 40) and f.dtype == torch.float32
        ref = mfcc_numpy(fix_length(w, CFG.num_samples), CFG)
        assert np.abs(f.numpy() - ref).max() <= 1e-3


# -------------------------------------------------------------------- export graph


def test_graph_padded_rows_equal_single_rows(graph: LightSERNetGraph) -> None:
    waves = [*_waves(), np.zeros(0, np.float32)]
    batch = _run(graph, waves)
    assert batch.shape == (4, 4)
    np.testing.assert_allclose(batch.sum(1), 1.0, atol=1e-5)
    for i, w in enumerate(waves):
        assert np.abs(batch[i] - _run(graph, [w])[0]).max() <= 1e-5


@pytest.mark.parametrize(("pre", "peak"), [(0.97, True), (0.0, False)])
def test_graph_matches_independent_pipeline(net: LightSERNet, pre: float, peak: bool) -> None:
    graph = LightSERNetGraph(net, CFG, preemphasis=pre, peak_normalize=peak)
    waves = _waves()
    prepared = []
    for w in waves:
        x = preemphasis(w, SR, coef=pre) if pre else w
        prepared.append(fix_length(peak_normalize(x, SR) if peak else x, CFG.num_samples))
    with torch.no_grad():
        mfcc = MFCC(CFG)(torch.from_numpy(np.stack(prepared)))
        want = torch.softmax(net.eval()(mfcc), dim=-1).numpy()
    got = np.concatenate([_run(graph, [w]) for w in waves])
    assert np.abs(got - want).max() <= 1e-5
    assert len(set(want.argmax(1))) > 1  # the fixture's net tells inputs apart


# -------------------------------------------------------------------- ONNX, int8


@pytest.fixture(scope="module")
def onnx_files(graph: LightSERNetGraph, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from edgeser.exporting.calibration import calibration_waves

    folder = tmp_path_factory.mktemp("lightsernet")
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    export_onnx(graph, fp32)
    quantize_lightsernet_int8(fp32, int8, calibration_waves(count=4))
    return fp32, int8


def _inputs() -> list[list[np.ndarray]]:
    waves = _waves()
    return [[w] for w in waves] + [waves, [np.zeros(0, np.float32)]]


def test_onnx_float32_parity(graph: LightSERNetGraph, onnx_files) -> None:
    from edgeser.runtime.session import onnx_session

    session = onnx_session(onnx_files[0], threads=1)
    assert [i.name for i in session.get_inputs()] == ["waveform", "lengths"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    for waves in _inputs():
        got = session.run(None, pad_batch(waves))[0]
        assert np.abs(got - _run(graph, waves)).max() <= 1e-4


def test_onnx_int8(graph: LightSERNetGraph, onnx_files) -> None:
    import onnx

    from edgeser.runtime.session import onnx_session

    fp32, int8 = onnx_files
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size
    quantised, kept = lightsernet_quantized_nodes(onnx.load(str(fp32)))
    assert len(quantised) == 5 and all(n.startswith("/net/body/") for n in quantised)
    assert len(kept) == 6 and {n.split("/")[1] for n in kept} == {"mfcc", "net"}
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "STFT"} <= ops
    session = onnx_session(int8, threads=1)
    for waves in _inputs():
        got = session.run(None, pad_batch(waves))[0]
        np.testing.assert_array_equal(got.argmax(1), _run(graph, waves).argmax(1))
