"""Tests for the speech encoder: architecture, loaders (hub, HF folder, s3prl .ckpt), batching.

Most tests use a tiny DistilHuBERT-shaped config; the full-size architecture is built once
(module fixture, seeded) for the parameter count, an s3prl round trip in the real layout,
frame arithmetic and the bf16-vs-fp32 check.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeser.core.errors import EdgeserError
from edgeser.models.ssl import (
    BF16_IMPL,
    DISTILHUBERT_NUM_PARAMETERS,
    IMPLS,
    Encoder,
    distilhubert_config,
    load_encoder,
    parse_conv_spec,
    random_encoder,
    tiny_config,
)

SR = 16_000

# --------------------------------------------------------------------------- helpers

_LAYER_PARTS_HF_TO_S3PRL = {
    "attention.q_proj": "self_attn.q_proj",
    "attention.k_proj": "self_attn.k_proj",
    "attention.v_proj": "self_attn.v_proj",
    "attention.out_proj": "self_attn.out_proj",
    "layer_norm": "self_attn_layer_norm",
    "feed_forward.intermediate_dense": "fc1",
    "feed_forward.output_dense": "fc2",
    "final_layer_norm": "final_layer_norm",
}
_HF_LAYER = re.compile(
    r"^encoder\.layers\.(\d+)\.("
    + "|".join(re.escape(p) for p in _LAYER_PARTS_HF_TO_S3PRL)
    + r")\.(weight|bias)$"
)
_HF_CONV = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)$")


def hf_to_s3prl(state: dict[str, torch.Tensor], *, legacy_weight_norm: bool) -> dict:
    """Inverse of the loader's mapping: a HubertModel state dict in s3prl distiller layout.

    Leaves out the mask embedding (s3prl's distiller has none) and writes the weight-norm
    parameters as ``weight_g``/``weight_v`` (older torch) or ``parametrizations.*``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        value = value.clone()
        if key == "masked_spec_embed":
            continue
        if key.startswith("feature_projection.projection."):
            new = "post_extract_proj." + key.removeprefix("feature_projection.projection.")
        elif key.startswith("encoder.pos_conv_embed.conv."):
            rest = key.removeprefix("encoder.pos_conv_embed.conv.")
            if legacy_weight_norm:
                rest = rest.replace("parametrizations.weight.original0", "weight_g")
                rest = rest.replace("parametrizations.weight.original1", "weight_v")
            new = "encoder.pos_conv.0." + rest
        elif key.startswith("encoder.layer_norm."):
            new = key
        elif m := _HF_LAYER.match(key):
            new = f"encoder.layers.{m[1]}.{_LAYER_PARTS_HF_TO_S3PRL[m[2]]}.{m[3]}"
        elif m := _HF_CONV.match(key):
            new = f"feature_extractor.conv_layers.{m[1]}.{'0' if m[2] == 'conv' else '2'}.{m[3]}"
        else:  # pragma: no cover - the test mapping must cover every key
            raise AssertionError(f"unmapped key {key}")
        out[new] = value
    return out


def distiller_config(config, **overrides) -> dict:
    """The ``Config["distiller"]`` dict s3prl stores, for a HubertConfig."""
    spec = " + ".join(f"[({c},{k},{s})]" for c, k, s in zip(*_conv(config), strict=True))
    cfg = {
        "extractor_mode": "default",
        "extractor_conv_feature_layers": spec,
        "extractor_dropout": 0.0,
        "feature_grad_mult": 0.1,
        "conv_pos": config.num_conv_pos_embeddings,
        "conv_pos_groups": config.num_conv_pos_embedding_groups,
        "encoder_layers": config.num_hidden_layers,
        "encoder_embed_dim": config.hidden_size,
        "encoder_ffn_embed_dim": config.intermediate_size,
        "encoder_attention_heads": config.num_attention_heads,
        "activation_fn": "gelu",
        "layer_norm_first": False,
        "attention_type": "original",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.1,
        "encoder_layerdrop": 0.0,
        "final_dim": 16,
        "out_layer_type": "expand-last",
        "n_tasks": 3,
        "task_emb_type": "expand-last",
        "loss_type": "l1",
        "pred_layer_id": [4, 8, 12],
    }
    cfg.update(overrides)
    return cfg


def _conv(config):
    return config.conv_dim, config.conv_kernel, config.conv_stride


def write_s3prl_ckpt(path, model, *, legacy_weight_norm=False, state=None, **cfg_overrides):
    """Write ``model`` as an original s3prl DistilHuBERT checkpoint (with prediction heads)."""
    config = model.config
    distiller = hf_to_s3prl(model.state_dict(), legacy_weight_norm=legacy_weight_norm)
    if state is not None:
        distiller = state
    hidden, n_tasks, final_dim = config.hidden_size, 3, 16
    gen = torch.Generator().manual_seed(1)
    # expand-last prediction heads: Linear(D, D * n_tasks), GELU, SplitLinear.
    distiller["output_layer.0.weight"] = torch.randn(hidden * n_tasks, hidden, generator=gen)
    distiller["output_layer.0.bias"] = torch.randn(hidden * n_tasks, generator=gen)
    distiller["output_layer.2.weight"] = torch.randn(1, n_tasks, hidden, final_dim, generator=gen)
    distiller["output_layer.2.bias"] = torch.randn(1, 1, n_tasks, final_dim, generator=gen)
    ckpt = {
        "Distiller": distiller,
        "Config": {"distiller": distiller_config(config, **cfg_overrides), "runner": {}},
        "Args": argparse.Namespace(mode="train", seed=1337),
        "Step": 200_000,
        "Optimizer": {"state": {}, "param_groups": []},
    }
    torch.save(ckpt, path)
    return path


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """The library's deterministic speech-like signal, seeded by an integer."""
    from edgeser.exporting.calibration import speech_like as generate

    return generate(seconds, np.random.default_rng(seed))


def hf_hidden_states(encoder: Encoder, wave: np.ndarray) -> torch.Tensor:
    """Reference: the wrapped HF model's own ``hidden_states`` for one unpadded input."""
    with torch.no_grad():
        out = encoder.model(torch.from_numpy(wave)[None], output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].float()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def full_encoder() -> Encoder:
    """The full DistilHuBERT architecture, random init (seed 0), built once."""
    return load_encoder("random", seed=0)


@pytest.fixture
def tiny_encoder() -> Encoder:
    return random_encoder(tiny_config(), seed=3)


def tiny_waves(lengths, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


# ------------------------------------------------------------------ architecture


def test_full_architecture_parameter_count(full_encoder: Encoder) -> None:
    model = full_encoder.model
    assert type(model).__name__ == "HubertModel"
    assert sum(p.numel() for p in model.parameters()) == DISTILHUBERT_NUM_PARAMETERS == 23_491_968
    cfg = model.config
    assert list(cfg.conv_kernel) == [10, 3, 3, 3, 3, 2, 2]
    assert list(cfg.conv_stride) == [5, 2, 2, 2, 2, 2, 2]
    assert list(cfg.conv_dim) == [512] * 7
    assert not cfg.conv_bias and not cfg.feat_proj_layer_norm
    assert cfg.feat_extract_norm == "group"
    assert (cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups) == (128, 16)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 768, 12)
    assert (cfg.intermediate_size, cfg.hidden_act) == (3072, "gelu")
    assert not cfg.do_stable_layer_norm
    assert full_encoder.num_layers == 2
    assert full_encoder.num_hidden_states == 3
    assert full_encoder.hidden_size == 768
    assert full_encoder.is_random and full_encoder.source == "random"
    assert not full_encoder.do_normalize
    assert (full_encoder.min_samples, full_encoder.hop_length) == (400, 320)
    assert re.fullmatch(r"[0-9a-f]{16}", full_encoder.identity)


def test_full_frames_49_per_second(full_encoder: Encoder) -> None:
    assert full_encoder.num_frames(SR) == 49
    assert full_encoder.num_frames(0) == full_encoder.num_frames(1) == 1
    rng = np.random.default_rng(0)
    for n in (0, 399, 400, 719, 720, 16_000, 16_319, 16_320, 48_000):
        wave = (0.1 * rng.standard_normal(n)).astype(np.float32)
        assert full_encoder.conv_features(wave).shape == (full_encoder.num_frames(n), 512), n


def test_full_batch_equals_single(full_encoder: Encoder) -> None:
    direct = full_encoder.direct  # the direct float32 path
    assert full_encoder.precision == "fp32" and direct.conv_supported
    assert direct.upper_supported and not direct.int8
    waves = [speech_like(1.0, 1), speech_like(0.37, 2), speech_like(0.8, 3)]
    batched = full_encoder.encode(waves)
    for wave, out in zip(waves, batched, strict=True):
        assert out.shape == (3, full_encoder.num_frames(wave.size), 768)
        assert out.dtype == torch.float32
        assert max_diff(out, full_encoder.encode([wave])[0]) <= 1e-4
        assert max_diff(out, hf_hidden_states(full_encoder, wave)) <= 1e-4


def pooled_cosines(ref: torch.Tensor, low: torch.Tensor) -> tuple[float, float]:
    """Lowest per-layer cosine of mean-pooled and of std-pooled hidden states (the std as
    ``edgeser.features.summarise`` computes it)."""
    cos = torch.nn.functional.cosine_similarity

    def pooled_std(h: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(h.var(1, unbiased=False) + 1e-6)

    mean = cos(ref.mean(1), low.mean(1), dim=-1)
    std = cos(pooled_std(ref), pooled_std(low), dim=-1)
    return float(mean.min()), float(std.min())


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_close_to_fp32(full_encoder: Encoder, impl: str) -> None:
    bf16 = full_encoder.variant(precision="bf16", impl=impl)
    assert bf16.identity != full_encoder.identity
    supported = (bf16.direct.conv_supported, bf16.direct.upper_supported)
    assert supported == ((True, True) if impl != "modules" else (False, False))
    # short inputs: bfloat16 is emulated (slow) on CPUs without native bfloat16
    waves = [speech_like(1.0, 4), speech_like(0.3, 6)]
    for ref, low in zip(full_encoder.encode(waves), bf16.encode(waves), strict=True):
        assert low.dtype == torch.float32 and torch.isfinite(low).all()
        assert low.shape == ref.shape
        assert min(pooled_cosines(ref, low)) >= 0.999


def test_full_size_s3prl_checkpoint(full_encoder: Encoder, tmp_path, caplog) -> None:
    path = write_s3prl_ckpt(tmp_path / "disilhubert_ls960_4-8-12.ckpt", full_encoder.model)
    with caplog.at_level(logging.WARNING, logger="edgeser"):
        loaded = load_encoder(str(path))
    assert not any("weights_only=False" in r.getMessage() for r in caplog.records)
    assert not loaded.is_random
    assert sum(p.numel() for p in loaded.model.parameters()) == DISTILHUBERT_NUM_PARAMETERS
    assert loaded.identity == full_encoder.identity
    wave = speech_like(0.6, 6)
    assert max_diff(loaded.encode([wave])[0], full_encoder.encode([wave])[0]) <= 1e-5


def test_distilhubert_config_overrides() -> None:
    cfg = distilhubert_config(num_hidden_layers=4)
    assert cfg.num_hidden_layers == 4 and cfg.hidden_size == 768


def test_random_is_seeded_and_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edgeser"):
        a = random_encoder(tiny_config(), seed=1)
    assert any("RANDOM ENCODER WEIGHTS" in r.getMessage() for r in caplog.records)
    assert a.is_random
    before = torch.random.get_rng_state()
    b = random_encoder(tiny_config(), seed=1)
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched
    c = random_encoder(tiny_config(), seed=2)
    assert a.identity == b.identity != c.identity


# ------------------------------------------------------------------ loaders


@pytest.mark.parametrize("legacy_weight_norm", [True, False], ids=["weight_g_v", "parametrized"])
def test_s3prl_checkpoint_and_hf_folder_agree(tmp_path, legacy_weight_norm: bool) -> None:
    reference = random_encoder(tiny_config(), seed=5)
    folder = tmp_path / "hf"
    reference.model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    ckpt = write_s3prl_ckpt(  # other dropouts: they do not change identity or outputs
        tmp_path / "tiny.ckpt", reference.model, legacy_weight_norm=legacy_weight_norm, dropout=0.2
    )
    keys = torch.load(ckpt, weights_only=False)["Distiller"].keys()
    assert any(k.startswith("output_layer.") for k in keys)
    assert ("encoder.pos_conv.0.weight_g" in keys) == legacy_weight_norm

    from_folder = load_encoder(str(folder))
    from_ckpt = load_encoder(str(ckpt))
    assert not from_folder.is_random and not from_ckpt.is_random
    assert from_ckpt.identity == from_folder.identity == reference.identity
    waves = tiny_waves([0, 7, 300, 1234, 1234, 4000])
    for a, b, c in zip(
        from_folder.encode(waves), from_ckpt.encode(waves), reference.encode(waves), strict=True
    ):
        assert max_diff(a, b) <= 1e-5
        assert max_diff(a, c) <= 1e-5


def test_hf_folder_with_legacy_bin_weights(tmp_path) -> None:
    """Hub repos saved in 2021 hold pytorch_model.bin with weight_g/weight_v names."""
    reference = random_encoder(tiny_config(), seed=8)
    reference.model.config.to_json_file(tmp_path / "config.json")
    legacy = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v.clone()
        for k, v in reference.model.state_dict().items()
    }
    assert "encoder.pos_conv_embed.conv.weight_g" in legacy
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    loaded = load_encoder(str(tmp_path))
    assert loaded.identity == reference.identity
    waves = tiny_waves([700, 1900], seed=3)
    for a, b in zip(loaded.encode(waves), reference.encode(waves), strict=True):
        assert max_diff(a, b) <= 1e-6


def _tiny_ckpt_model(seed: int = 5, **overrides):
    return random_encoder(tiny_config(**overrides), seed=seed).model


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("fewer_layers_in_weights", "missing: encoder.layers.1."),
        ("more_layers_in_weights", "unexpected: encoder.layers.1."),
        ("wrong_width", "shape mismatch"),
        ("renamed_key", "unexpected: encoder.layers.0.fc_one.weight"),
    ],
)
def test_s3prl_wrong_architecture_refused(tmp_path, case: str, expected: str) -> None:
    path = tmp_path / f"{case}.ckpt"
    if case == "fewer_layers_in_weights":
        write_s3prl_ckpt(path, _tiny_ckpt_model(), encoder_layers=2)
    elif case == "more_layers_in_weights":
        write_s3prl_ckpt(path, _tiny_ckpt_model(num_hidden_layers=2), encoder_layers=1)
    elif case == "wrong_width":
        write_s3prl_ckpt(path, _tiny_ckpt_model(), encoder_embed_dim=64, encoder_ffn_embed_dim=64)
    else:
        model = _tiny_ckpt_model()
        state = hf_to_s3prl(model.state_dict(), legacy_weight_norm=True)
        state["encoder.layers.0.fc_one.weight"] = state.pop("encoder.layers.0.fc1.weight")
        write_s3prl_ckpt(path, model, state=state)
    with pytest.raises(EdgeserError, match=re.escape(expected)):
        load_encoder(str(path))


def test_hf_folder_wrong_architecture_refused(tmp_path) -> None:
    model = _tiny_ckpt_model()
    model.save_pretrained(tmp_path)
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EdgeserError, match=r"missing: encoder\.layers\.1\."):
        load_encoder(str(tmp_path))


def test_existing_folder_wins_over_alias(tmp_path, monkeypatch) -> None:
    model = _tiny_ckpt_model(seed=11)
    model.save_pretrained(tmp_path / "distilhubert")
    monkeypatch.chdir(tmp_path)
    encoder = load_encoder("distilhubert")
    assert encoder.hidden_size == 32
    assert encoder.source == str((tmp_path / "distilhubert").resolve())


def test_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source in ("distilhubert", "ntu-spml/distilhubert", "someone/no-such-model"):
        with pytest.raises(EdgeserError, match="could not fetch") as info:
            load_encoder(source, cache_dir=tmp_path / "hf-cache")
        message = str(info.value)
        assert ".ckpt" in message and "folder" in message
        assert "ntu-spml/distilhubert" in message or source in message


def test_unreachable_hub_fails_at_once(monkeypatch, tmp_path) -> None:
    """Not cached and no network: one clear error from one quick connection check, not the
    hub client's retries."""
    from huggingface_hub import constants

    import edgeser.models.ssl.sources as encoder_module

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    probes = []
    real = encoder_module._hub_reachable

    def probe(timeout: float = 3.0):
        probes.append(timeout)
        return real(timeout)

    monkeypatch.setattr(encoder_module, "_hub_reachable", probe)
    with pytest.raises(EdgeserError, match=r"127\.0\.0\.1 is unreachable") as info:
        load_encoder("ntu-spml/distilhubert", cache_dir=tmp_path / "hf-cache")
    assert probes == [3.0]
    message = str(info.value)
    assert "--encoder DIR" in message and ".ckpt" in message and "--encoder random" in message


def test_bad_sources(tmp_path) -> None:
    with pytest.raises(EdgeserError, match="no such file"):
        load_encoder(str(tmp_path / "missing.ckpt"))
    with pytest.raises(EdgeserError, match="no such file"):
        load_encoder("not a model")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(EdgeserError, match="not a readable torch checkpoint"):
        load_encoder(str(garbage))
    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    with pytest.raises(EdgeserError, match="'Config' and 'Distiller'"):
        load_encoder(str(plain))
    with pytest.raises(EdgeserError, match=r"no config\.json"):
        load_encoder(str(tmp_path))
    with pytest.raises(EdgeserError, match="precision"):
        load_encoder("random", precision="fp16")


def write_published_s3prl_ckpt(path, model) -> Path:
    """``model`` as the published ``disilhubert_ls960_4-8-12.ckpt`` is laid out: the six
    top-level entries, an optimizer state whose param groups carry a schedule object of
    ``s3prl.optimizers.WarmupLinearSchedule`` (a module not installed here: registered only
    while writing), s3prl's prediction-head shapes and the four Config sections."""
    import sys
    import types

    config = model.config
    distiller = hf_to_s3prl(model.state_dict(), legacy_weight_norm=True)
    hidden, gen = config.hidden_size, torch.Generator().manual_seed(1)
    distiller["output_layer.0.weight"] = torch.randn(3 * hidden, hidden, generator=gen)
    distiller["output_layer.0.bias"] = torch.randn(3 * hidden, generator=gen)
    distiller["output_layer.2.weight"] = torch.randn(3, hidden, hidden, generator=gen)
    distiller["output_layer.2.bias"] = torch.randn(1, 1, 3, hidden, generator=gen)
    package, module = types.ModuleType("s3prl"), types.ModuleType("s3prl.optimizers")

    class WarmupLinearSchedule:
        def __init__(self, warmup: float, t_total: int) -> None:
            self.warmup, self.t_total = warmup, t_total
            self.warned_for_t_total_at_progress = -1

    WarmupLinearSchedule.__module__ = "s3prl.optimizers"
    WarmupLinearSchedule.__qualname__ = "WarmupLinearSchedule"
    module.WarmupLinearSchedule = WarmupLinearSchedule
    package.optimizers = module
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    optimizer.param_groups[0]["schedule"] = WarmupLinearSchedule(0.07, 200_000)
    ckpt = {
        "Optimizer": optimizer.state_dict(),
        "Step": 200_000,
        "Args": argparse.Namespace(mode="train", seed=1337, config="pretrain/distiller.yaml"),
        "Runner": {"n_epochs": -1, "total_steps": 200_000, "gradient_clipping": 10.0},
        "Distiller": distiller,
        "Config": {
            "distiller": distiller_config(config),
            "teacher": {"model": "hubert_base"},
            "task": {"sequence_length": 250_000},
            "audio": {"target_level": None},
        },
    }
    sys.modules.update({"s3prl": package, "s3prl.optimizers": module})
    try:
        torch.save(ckpt, path)
    finally:
        del sys.modules["s3prl"], sys.modules["s3prl.optimizers"]
    return path


def test_published_s3prl_layout_loads_without_s3prl(tmp_path, caplog) -> None:
    """The real checkpoint's extra entries (an optimizer schedule of an uninstalled module,
    argparse arguments, runner settings) are read as inert stand-ins and skipped, in one
    line; the encoder equals the same weights loaded from a Hugging Face folder."""
    import sys

    from edgeser.models.ssl.s3prl import InertObject, _load_pickle

    reference = random_encoder(tiny_config(), seed=5)
    folder = tmp_path / "hf"
    reference.model.save_pretrained(folder)
    path = write_published_s3prl_ckpt(tmp_path / "disilhubert_ls960_4-8-12.ckpt", reference.model)
    assert "s3prl" not in sys.modules
    with pytest.raises(Exception, match="s3prl"):  # what a plain full unpickling meets
        torch.load(path, weights_only=False)
    obj, stood_in = _load_pickle(path)
    assert stood_in == ["s3prl.optimizers.WarmupLinearSchedule"]
    assert list(obj) == ["Optimizer", "Step", "Args", "Runner", "Distiller", "Config"]
    schedule = obj["Optimizer"]["param_groups"][0]["schedule"]
    assert isinstance(schedule, InertObject)
    assert schedule.qualified_name == "s3prl.optimizers.WarmupLinearSchedule"
    assert schedule.state == {
        "warmup": 0.07,
        "t_total": 200_000,
        "warned_for_t_total_at_progress": -1,
    }
    assert "s3prl" not in sys.modules  # nothing was imported
    with caplog.at_level(logging.INFO, logger="edgeser"):
        loaded = load_encoder(str(path))
    lines = [r.getMessage() for r in caplog.records if "ignored:" in r.getMessage()]
    assert lines == [
        f"{path.name}: ignored: Optimizer (s3prl.optimizers.WarmupLinearSchedule),"
        " Step, Args, Runner"
    ]
    from_folder = load_encoder(str(folder))
    assert loaded.identity == from_folder.identity == reference.identity
    waves = tiny_waves([300, 1234, 4000])
    for a, b in zip(loaded.encode(waves), from_folder.encode(waves), strict=True):
        assert max_diff(a, b) <= 1e-5


def test_checkpoint_globals_are_never_run(tmp_path) -> None:
    """A pickle that calls a function on load gets an inert stand-in, not the function;
    globals of modules torch blocks are refused."""
    import os

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (_touch, (str(marker),))

    model = _tiny_ckpt_model()
    path = write_s3prl_ckpt(tmp_path / "payload.ckpt", model)
    ckpt = torch.load(path, weights_only=False)
    ckpt["Runner"] = {"created": datetime.date(2021, 10, 5), "hook": Payload()}
    torch.save(ckpt, path)
    loaded = load_encoder(str(path))  # dates and the payload stood in for, never called
    assert not marker.exists()
    assert loaded.identity == Encoder(model, source="x").identity

    class Shell:
        def __reduce__(self):
            return (os.system, ("true",))

    ckpt["Runner"] = {"hook": Shell()}
    torch.save(ckpt, path)
    with pytest.raises(EdgeserError, match="not a readable torch checkpoint"):
        load_encoder(str(path))


def _touch(path: str) -> None:
    Path(path).write_text("ran")


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_other_ssl_families_load_from_folder(tmp_path, family: str) -> None:
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
        WavLMConfig,
        WavLMModel,
    )

    shape = {
        "conv_dim": (16, 16),
        "conv_kernel": (10, 3),
        "conv_stride": (5, 2),
        "conv_bias": True,
        "hidden_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 48,
        "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 4,
        "layerdrop": 0.1,
    }
    torch.manual_seed(7)
    if family == "wav2vec2":
        model = Wav2Vec2Model(Wav2Vec2Config(**shape))
    else:
        model = WavLMModel(WavLMConfig(**shape, num_buckets=16, max_bucket_distance=40))
    model.save_pretrained(tmp_path)
    normalize = family == "wav2vec2"  # wav2vec 2.0 Base standardises its input
    Wav2Vec2FeatureExtractor(do_normalize=normalize).save_pretrained(tmp_path)

    encoder = load_encoder(str(tmp_path))
    assert type(encoder.model).__name__ == type(model).__name__
    assert encoder.num_hidden_states == 3 and encoder.hidden_size == 24
    assert encoder.do_normalize is normalize
    waves = tiny_waves([50, 333, 1000, 2000], seed=2)
    waves[2] = waves[2] * 0.05 + 0.01  # standardisation changes this one visibly
    outputs = encoder.encode(waves)
    for wave, out in zip(waves, outputs, strict=True):
        assert out.shape == (3, encoder.num_frames(wave.size), 24)
        assert max_diff(out, encoder.encode([wave])[0]) <= 1e-4
        ref_input = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7) if normalize else wave
        reference = hf_hidden_states(encoder, ref_input.astype(np.float32))
        assert max_diff(out[:-1], reference[:-1]) <= 1e-4
        assert max_diff(out[-1], reference[-1]) <= 1e-4
    if family == "wavlm":  # trains, but has no export graph: the refusal names what does
        from edgeser.exporting.graph import check_exportable

        with pytest.raises(EdgeserError, match="train --model distilhubert"):
            check_exportable(encoder.model)


def test_gradient_checkpointing_from_a_config_is_switched_off(tmp_path) -> None:
    """Some wav2vec 2.0 hub configs carry gradient_checkpointing: true; transformers then
    turns it on at load, which only costs compute for a frozen or fine-tuned encoder."""
    import json

    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(3)
    Wav2Vec2Model(Wav2Vec2Config(**_direct_shape(), conv_bias=True)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["gradient_checkpointing"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    encoder = load_encoder(str(tmp_path))
    modules = [m for m in encoder.model.modules() if hasattr(m, "gradient_checkpointing")]
    assert modules and not any(m.gradient_checkpointing for m in modules)
    encoder.unfreeze_upper()
    assert not any(m.gradient_checkpointing for m in modules)


# ------------------------------------------------------------------ encoding


def test_tiny_padded_batch_equals_single_and_hf(tiny_encoder: Encoder) -> None:
    lengths = [5000, 20, 321, 5000, 2222, 64, 4096, 999]
    waves = tiny_waves(lengths, seed=1)
    outputs = tiny_encoder.encode(waves, batch_size=3)
    assert len(outputs) == len(waves)
    for wave, out in zip(waves, outputs, strict=True):
        assert out.shape == (2, tiny_encoder.num_frames(wave.size), 32)
        assert max_diff(out, tiny_encoder.encode([wave])[0]) <= 1e-4
        assert max_diff(out, hf_hidden_states(tiny_encoder, wave)) <= 1e-4


def test_num_frames_matches_outputs(tiny_encoder: Encoder) -> None:
    lengths = [*range(60), 99, 100, 101, 1000, 1001]
    outputs = tiny_encoder.encode([np.zeros(n, np.float32) for n in lengths])
    for n, out in zip(lengths, outputs, strict=True):
        assert out.shape[1] == tiny_encoder.num_frames(n) >= 1


@pytest.mark.parametrize("length", [0, 1])
def test_empty_and_one_sample_inputs(tiny_encoder: Encoder, full_encoder: Encoder, length) -> None:
    for encoder in (tiny_encoder, full_encoder):
        for wave in (np.full(length, 0.5, np.float32), torch.full((length,), 0.5)):
            (out,) = encoder.encode([wave])
            assert out.shape == (encoder.num_hidden_states, 1, encoder.hidden_size)
            assert torch.isfinite(out).all()


def test_input_validation(tiny_encoder: Encoder) -> None:
    with pytest.raises(EdgeserError, match="mono 1-D"):
        tiny_encoder.encode([np.zeros((2, 100), np.float32)])
    with pytest.raises(EdgeserError, match="float"):
        tiny_encoder.encode([np.zeros(100, np.int16)])
    with pytest.raises(EdgeserError, match="NaN"):
        tiny_encoder.encode([np.full(100, np.nan, np.float32)])
    assert tiny_encoder.encode([]) == []
    (out,) = tiny_encoder.encode([np.zeros(300, np.float64)])
    assert out.dtype == torch.float32


def test_frozen_by_default_and_outputs_feed_autograd(tiny_encoder: Encoder) -> None:
    assert not any(p.requires_grad for p in tiny_encoder.parameters())
    tiny_encoder.train()
    assert not tiny_encoder.model.training  # frozen: dropout stays off
    (out,) = tiny_encoder.encode(tiny_waves([800]))
    assert not out.requires_grad and not out.is_inference()
    head = nn.Linear(tiny_encoder.hidden_size, 4)
    head(out.mean(dim=(0, 1))).sum().backward()
    assert head.weight.grad is not None


def test_split_api_matches_encode_and_trains_upper_only(tiny_encoder: Encoder) -> None:
    waves = tiny_waves([1500, 400, 2600], seed=4)
    reference = tiny_encoder.encode(waves)
    feats = [tiny_encoder.conv_features(w) for w in waves]
    assert [f.shape for f in feats] == [(tiny_encoder.num_frames(w.size), 32) for w in waves]
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    mask = torch.arange(padded.shape[1])[None] < torch.tensor([f.shape[0] for f in feats])[:, None]
    frozen = tiny_encoder.forward_from_conv(padded, mask)
    assert frozen.shape == (2, 3, padded.shape[1], 32) and not frozen.requires_grad
    for j, ref in enumerate(reference):
        assert max_diff(frozen[:, j, : ref.shape[1]], ref) <= 1e-5

    tiny_encoder.unfreeze_upper().train()
    assert tiny_encoder.model.training and not tiny_encoder.model.feature_extractor.training
    named = dict(tiny_encoder.model.named_parameters())
    assert not any(p.requires_grad for n, p in named.items() if n.startswith("feature_extractor."))
    assert named["encoder.layers.0.attention.q_proj.weight"].requires_grad
    assert named["feature_projection.projection.weight"].requires_grad
    out = tiny_encoder(padded, mask)
    assert out.requires_grad
    out[-1][mask].pow(2).mean().backward()
    assert named["encoder.layers.0.attention.q_proj.weight"].grad is not None
    assert named["encoder.pos_conv_embed.conv.bias"].grad is not None
    assert all(p.grad is None for n, p in named.items() if n.startswith("feature_extractor."))

    # encode() runs in eval mode even now: deterministic features, mode restored after.
    again_encoded = tiny_encoder.encode(waves)
    assert tiny_encoder.model.training
    for a, b in zip(again_encoded, reference, strict=True):
        assert max_diff(a, b) <= 1e-5

    tiny_encoder.eval()
    with torch.no_grad():
        again = tiny_encoder.forward_from_conv(padded, mask)
    for j, ref in enumerate(reference):
        assert max_diff(again[:, j, : ref.shape[1]], ref) <= 1e-5
    tiny_encoder.freeze()
    assert not any(p.requires_grad for p in tiny_encoder.parameters())


def test_forward_from_conv_validates_shapes(tiny_encoder: Encoder) -> None:
    with pytest.raises(EdgeserError, match="conv features"):
        tiny_encoder.forward_from_conv(torch.zeros(2, 5, 7))
    with pytest.raises(EdgeserError, match="frame_mask"):
        tiny_encoder.forward_from_conv(torch.zeros(2, 5, 32), torch.ones(2, 4, dtype=torch.bool))


def test_identity_is_stable_and_sensitive(tmp_path) -> None:
    model = _tiny_ckpt_model(seed=9)
    model.save_pretrained(tmp_path)
    first, second = load_encoder(str(tmp_path)), load_encoder(str(tmp_path))
    assert first.identity == second.identity
    assert load_encoder(str(tmp_path), precision="bf16").identity != first.identity
    with torch.no_grad():
        second.model.encoder.layer_norm.bias[0] += 1e-3
    assert Encoder(second.model, source="x").identity != first.identity


# ------------------------------------------------------------------ conv spec


def test_conv_spec_parser_accepts_s3prl_specs() -> None:
    expected = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    assert parse_conv_spec("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == expected
    assert parse_conv_spec("[(512, 10, 5)] + 4 * [(512, 3, 2)] + [(512,2,2)]*2") == expected
    assert parse_conv_spec("[[32,10,5],[32,3,2]]") == [(32, 10, 5), (32, 3, 2)]


@pytest.mark.parametrize(
    "spec",
    [
        "__import__('os')",
        "__import__('os').system('echo pwned')",
        "print(1)",
        "list(range(3))",
        "os.system",
        "[(512,10,5)] * 10**9",
        "[(512,10,5)] * 100000",
        "[(512,10,5)] + x",
        "lambda: [(1,2,3)]",
        "[(512,10,5.0)]",
        "[(512,10)]",
        "[(512,10,5)] - [(1,1,1)]",
        "[(True,10,5)]",
        "[]",
        "[(512,10,5)",
        "{'a': 1}",
        "[(512,10,5)] if 1 else []",
    ],
)
def test_conv_spec_parser_rejects(spec: str) -> None:
    with pytest.raises(EdgeserError):
        parse_conv_spec(spec)


def test_conv_spec_from_checkpoint_is_never_evaluated(tmp_path) -> None:
    path = write_s3prl_ckpt(
        tmp_path / "evil.ckpt",
        _tiny_ckpt_model(),
        extractor_conv_feature_layers="__import__('os').system('touch pwned')",
    )
    with pytest.raises(EdgeserError, match="unsupported syntax"):
        load_encoder(str(path))
    assert not (tmp_path / "pwned").exists()


def test_first_conv_as_strided_matmul_matches_conv1d():
    from edgeser.models.ssl.direct import StridedMatmulConv1d

    torch.manual_seed(0)
    conv = nn.Conv1d(1, 16, 10, 5, bias=True)
    fast = StridedMatmulConv1d(conv)
    x = torch.randn(3, 1, 1234)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-5, atol=1e-5)
    assert fast.weight is conv.weight and set(dict(fast.named_parameters())) == {"weight", "bias"}
    enc = random_encoder(tiny_config(), seed=0)
    first = enc.model.feature_extractor.conv_layers[0].conv
    assert isinstance(first, StridedMatmulConv1d)
    assert "model.feature_extractor.conv_layers.0.conv.weight" in enc.state_dict()


# ------------------------------------------------------------------ direct path


def _direct_shape() -> dict:
    return {
        "conv_dim": (32, 32, 32),
        "conv_kernel": (10, 3, 2),
        "conv_stride": (5, 2, 2),
        "hidden_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 96,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    }


def _direct_model(kind: str) -> nn.Module:
    """Tiny models of the architectures the direct path covers (and one it does not)."""
    from transformers import HubertModel, Wav2Vec2Config, Wav2Vec2Model

    shape = _direct_shape()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if kind == "hubert":
            return HubertModel(tiny_config(**shape))
        if kind == "hubert-stable":
            return HubertModel(tiny_config(**shape, do_stable_layer_norm=True))
        if kind == "wav2vec2":  # conv biases, LayerNorm before the projection
            return Wav2Vec2Model(Wav2Vec2Config(**shape, conv_bias=True))
        if kind == "wav2vec2-layer-conv":  # LayerNorm conv extractor: conv stays on modules
            return Wav2Vec2Model(
                Wav2Vec2Config(
                    **shape, conv_bias=True, do_stable_layer_norm=True, feat_extract_norm="layer"
                )
            )
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("precision", "impl"),
    [("fp32", "direct"), ("fp32", "direct+int8"), ("bf16", "direct"), ("bf16", "direct+int8")],
)
@pytest.mark.parametrize("kind", ["hubert", "hubert-stable", "wav2vec2", "wav2vec2-layer-conv"])
def test_direct_path_matches_modules_tiny(kind: str, precision: str, impl: str) -> None:
    model = _direct_model(kind)
    ref_encoder = Encoder(model, source=kind, impl="modules")
    low_encoder = Encoder(model, source=kind, precision=precision, impl=impl)
    assert low_encoder.direct.conv_supported == (kind != "wav2vec2-layer-conv")
    assert low_encoder.direct.upper_supported
    assert low_encoder.direct.int8 == (impl == "direct+int8")
    exact = (precision, impl) == ("fp32", "direct")
    assert (low_encoder.identity == ref_encoder.identity) == exact
    waves = tiny_waves([5000, 20, 2222, 4096, 999, 3000], seed=2)
    reference = ref_encoder.encode(waves)
    outputs = low_encoder.encode(waves, batch_size=4)
    for wave, ref, low in zip(waves, reference, outputs, strict=True):
        assert low.shape == ref.shape == (3, low_encoder.num_frames(wave.size), 48)
        assert low.dtype == torch.float32 and torch.isfinite(low).all()
        assert min(pooled_cosines(ref, low)) >= 0.999
        if exact:  # float32 in another summation order
            assert max_diff(ref, low) <= 1e-4 * float(ref.abs().max())
        # Each output is that input encoded alone, up to bfloat16 (and int8) rounding.
        (alone,) = low_encoder.encode([wave])
        assert min(pooled_cosines(alone, low)) >= 0.9999
        assert max_diff(alone, low) <= (1e-5 if exact else 0.05) * float(alone.abs().max())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_first_conv_folds_group_norm_exactly(conv_bias: bool, precision: str) -> None:
    """First conv + GroupNorm (folded into the weights) + GELU: the float32 modules' output
    (in bf16: rounded to bfloat16), for waves laid end to end (gap rows zeroed)."""
    encoder = random_encoder(tiny_config(conv_bias=conv_bias), seed=6, precision=precision)
    first = encoder.model.feature_extractor.conv_layers[0]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-trivial affine GroupNorm (the initial one is 1, 0)
        first.layer_norm.weight.uniform_(0.5, 2.0, generator=gen)
        first.layer_norm.bias.uniform_(-1.0, 1.0, generator=gen)
    waves = [torch.from_numpy(speech_like(s, i)) for i, s in enumerate((0.07, 0.0025, 0.13))]
    waves[1] = waves[1] + 0.3  # a DC offset
    hop = encoder.hop_length
    bounds, total = [], 0
    for wave in waves:
        span = -(-max(wave.numel(), encoder.min_samples) // hop) * hop
        bounds.append((total, total + span))
        total += span
    waves = [encoder._prepare(w, index=0) for w in waves]
    with torch.inference_mode():
        hidden = encoder.direct.first_conv(waves, bounds)
        assert hidden.dtype == encoder.direct.dtype
        for wave, (start, stop) in zip(waves, bounds, strict=True):
            ref = first(wave[None, None])[0].t()  # [T, C] float32 modules
            got = hidden[start // 5 : start // 5 + ref.shape[0]].float()
            # bfloat16 rounding before and after the GELU: within 2 ulps of the largest value
            tolerance = 2**-7 if precision == "bf16" else 1e-5
            assert max_diff(got, ref) <= tolerance * float(ref.abs().max())
            assert not hidden[start // 5 + ref.shape[0] : stop // 5].any()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_conv_groups_equal_single_items(tiny_encoder: Encoder, monkeypatch, precision) -> None:
    """Waves laid end to end through the extractor give each wave's own features."""
    import edgeser.models.ssl.direct as encoder_module

    bf16 = tiny_encoder.variant(precision=precision)
    modules = tiny_encoder.variant(impl="modules")
    ulp = 2**-7 if precision == "bf16" else 1e-5
    waves = [
        tiny_encoder._prepare(w, index=0)
        for w in tiny_waves([20, 64, 321, 999, 999, 2222, 4096, 5000, 7], seed=5)
    ]
    with torch.inference_mode():
        alone = [bf16._conv_batch([w])[0] for w in waves]
        for group_samples in (10**9, 3000, 1):  # one group, a few, one wave per group
            monkeypatch.setattr(encoder_module, "_CONV_GROUP_SAMPLES", group_samples)
            grouped = bf16._conv_batch(waves)
            for wave, a, g in zip(waves, alone, grouped, strict=True):
                assert a.dtype == g.dtype == bf16.direct.dtype
                assert g.shape == (bf16.num_frames(wave.numel()), 32)
                assert max_diff(a.float(), g.float()) <= ulp * float(a.abs().max())
    feats = bf16.conv_features(waves[6])
    reference = modules.conv_features(waves[6])
    assert feats.dtype == torch.float32 and not feats.is_inference()
    assert max_diff(feats, reference) <= 2 * ulp * float(reference.abs().max())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_positional_conv_matches_module(monkeypatch, precision: str) -> None:
    """The positional conv as per-group products of gathered windows, in any chunking."""
    import edgeser.models.ssl.direct as encoder_module

    encoder = random_encoder(tiny_config(), seed=7, precision=precision)
    pos = encoder.model.encoder.pos_conv_embed
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 45, 32, generator=gen).to(encoder.direct.dtype)
    ulp = 2**-6 if precision == "bf16" else 1e-5
    with torch.inference_mode():
        reference = pos(hidden.float())
        for rows in (4096, 40, 1):  # all utterances at once, one, a few frames at a time
            monkeypatch.setattr(encoder_module, "_POS_CONV_ROWS", rows)
            got = encoder.direct.pos_conv(hidden)
            assert got.shape == reference.shape and got.dtype == encoder.direct.dtype
            assert max_diff(got.float(), reference) <= ulp * float(reference.abs().max())


def test_int8_linear_rows_are_independent() -> None:
    """Each row is quantised on its own scale: results do not depend on the other rows,
    and stay close to the float32 product."""
    from edgeser.models.ssl.direct import _int8_available, _int8_linear, _pack_int8

    _int8_available.cache_clear()
    before = torch.random.get_rng_state()
    available = _int8_available()
    assert torch.equal(before, torch.random.get_rng_state())  # the probe leaves RNG alone
    if not available:
        pytest.skip("no quantized CPU kernels in this torch build")
    gen = torch.Generator().manual_seed(2)
    linears = [nn.Linear(64, 48), nn.Linear(64, 16)]
    packed, bias = _pack_int8(linears)
    x = torch.randn(2, 37, 64, generator=gen)
    x[1, 5:] *= 40.0  # rows of very different magnitudes in one call
    x[0, 3] = 0.0  # an all-zero row
    out = _int8_linear(x, packed, bias)
    with torch.no_grad():
        reference = torch.cat([m(x) for m in linears], dim=-1)
    assert out.shape == (2, 37, 64) and out.dtype == torch.float32
    for b, t in ((0, 0), (0, 3), (1, 4), (1, 30)):
        alone = _int8_linear(x[b, t : t + 1], packed, bias)[0]
        assert torch.equal(alone, out[b, t])
        err = (out[b, t] - reference[b, t]).norm() / reference[b, t].norm()
        assert float(err) <= 0.05


def test_identity_tags(tiny_encoder: Encoder) -> None:
    from edgeser.models.ssl.direct import _int8_available
    from edgeser.models.ssl.encoder import _fingerprint

    model = tiny_encoder.model
    fp32 = {impl: Encoder(model, source="x", impl=impl).identity for impl in IMPLS}
    # float32 identities do not depend on the implementation, unless int8 enters
    assert fp32["direct"] == fp32["modules"] == tiny_encoder.identity
    assert tiny_encoder.identity == _fingerprint(model, "fp32")
    assert fp32["direct+int8"] == _fingerprint(
        model, "fp32", impl="direct+int8" if _int8_available() else None
    )
    bf16 = {
        impl: Encoder(model, source="x", precision="bf16", impl=impl).identity for impl in IMPLS
    }
    assert bf16["modules"] == _fingerprint(model, "bf16")  # identity of the autocast code
    assert bf16["direct"] == _fingerprint(model, "bf16", impl=BF16_IMPL)
    int8_tag = BF16_IMPL + ("+int8" if _int8_available() else "")
    assert bf16["direct+int8"] == _fingerprint(model, "bf16", impl=int8_tag)
    assert len(set(bf16.values()) | set(fp32.values())) == 3 + 2 * _int8_available()
    with pytest.raises(EdgeserError, match="impl"):
        Encoder(model, source="x", impl="fast")
    with pytest.raises(EdgeserError, match="precision"):
        Encoder(model, source="x", precision="fp16")


@pytest.mark.parametrize(
    ("precision", "impl"), [("bf16", "direct"), ("bf16", "direct+int8"), ("fp32", "direct")]
)
def test_weight_casts_follow_weight_updates(precision: str, impl: str) -> None:
    """Pre-cast weights are rebuilt when the float32 masters change (in-place edits,
    load_state_dict, fine-tuning steps), and copies start from the current weights."""
    import copy

    encoder = random_encoder(tiny_config(), seed=3, precision=precision)
    encoder = Encoder(encoder.model, source="x", precision=precision, impl=impl)
    waves = tiny_waves([1500, 400, 2600], seed=4)
    before = encoder.encode(waves)
    assert len(encoder.direct.casts) > 0

    def fresh(enc: Encoder) -> list[torch.Tensor]:
        return Encoder(copy.deepcopy(enc.model), source="y", precision=precision, impl=impl).encode(
            waves
        )

    with torch.no_grad():  # an in-place edit of a conv and of a transformer weight
        encoder.model.feature_extractor.conv_layers[1].conv.weight.mul_(1.5)
        encoder.model.encoder.layers[0].feed_forward.output_dense.weight.mul_(-1.0)
    after = encoder.encode(waves)
    for a, b, c in zip(before, after, fresh(encoder), strict=True):
        assert max_diff(a, b) > 1e-2
        assert max_diff(b, c) <= 1e-6

    state = {
        k: v.clone() for k, v in random_encoder(tiny_config(), seed=4).model.state_dict().items()
    }
    encoder.model.load_state_dict(state)
    for b, c in zip(encoder.encode(waves), fresh(encoder), strict=True):
        assert max_diff(b, c) <= 1e-6

    # Fine-tuning the upper part (modules, with gradients), then encoding again.
    encoder.unfreeze_upper().train()
    feats = [encoder.conv_features(w) for w in waves]
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    mask = torch.arange(padded.shape[1])[None] < torch.tensor([f.shape[0] for f in feats])[:, None]
    optimizer = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.5)
    out = encoder(padded, mask)
    assert out.requires_grad and out.dtype == torch.float32
    out[-1][mask].pow(2).mean().backward()
    optimizer.step()
    tuned = encoder.encode(waves)
    copied = copy.deepcopy(encoder)
    assert len(copied.direct.casts) == 0
    for b, c, d in zip(tuned, fresh(encoder), copied.encode(waves), strict=True):
        assert max_diff(b, c) <= 1e-6
        assert max_diff(b, d) <= 1e-6
    encoder.freeze().eval()
    with torch.no_grad():
        frozen = encoder.forward_from_conv(padded, mask)
    for j, ref in enumerate(tuned):
        assert min(pooled_cosines(ref, frozen[:, j, : ref.shape[1]])) >= 0.9999


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_faithful_on_real_speech(ravdess_mini, full_encoder: Encoder, precision: str) -> None:
    """Per-layer mean- and std-pooled features within cosine 0.999 of the float32
    ``transformers`` modules on real RAVDESS speech, for the precision this CPU picks and
    for bf16 (a few files, fewer for bf16, which is slow where it is emulated;
    bench/extract_speed.py checks all of them)."""
    from edgeser.audio.frontend import FrontEnd
    from edgeser.audio.io import load_audio

    files = sorted(ravdess_mini.glob("Actor_*/*.wav"))[:: 20 if precision == "auto" else 60]
    front_end = FrontEnd()
    waves = [front_end(load_audio(f, SR), SR) for f in files]
    reference = full_encoder.variant(impl="modules").encode(waves)
    encoder = full_encoder.variant(precision=precision)
    for ref, low in zip(reference, encoder.encode(waves), strict=True):
        assert min(pooled_cosines(ref, low)) >= 0.999
