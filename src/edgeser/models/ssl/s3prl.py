"""The original s3prl DistilHuBERT checkpoint (a torch pickle), read weights-only with
inert stand-ins for the training state it carries, and converted to a ``HubertModel``."""

from __future__ import annotations

import argparse
import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgeser.core.errors import EdgeserError
from edgeser.models.ssl.checkpoints import describe_keys, first_line, zero_optional
from edgeser.models.ssl.configs import (
    DISTILHUBERT_CONV_SPEC,
    OPTIONAL_KEYS,
    distilhubert_config,
    parse_conv_spec,
)

if TYPE_CHECKING:
    from transformers import HubertConfig, PreTrainedModel

logger = logging.getLogger(__name__)


class InertObject:
    """Stands in for a class or function of a checkpoint that the loader does not know.

    :func:`_load_pickle` maps every such global (an optimizer schedule of the training
    toolkit, say) to a subclass of this one, named after it: the unpickler then builds an
    instance that only records the arguments and state the file holds (``args``,
    ``state``); nothing the file names is imported or run.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert stand-in for {self.qualified_name}>"


def _stand_in(name: str) -> type[InertObject]:
    return type(name.rsplit(".", 1)[-1], (InertObject,), {"qualified_name": name})


#: Unknown globals one checkpoint may bring before the loader gives up.
_MAX_STAND_INS = 64


def _load_pickle(path: Path) -> tuple[Any, list[str]]:
    """``torch.load`` a file the user named, weights-only, never with full unpickling.

    Tensors, plain containers and ``argparse.Namespace`` load as themselves; every other
    global the file names (a class of the toolkit that wrote it, which need not be
    installed here) is replaced by an inert stand-in (:class:`InertObject`): recorded,
    never imported or called. Returns the object and the names of the globals stood in
    for. Globals of modules torch blocks outright (``os``, ``sys``, ...) are refused.
    """
    stand_ins: dict[str, type[InertObject]] = {}
    while True:
        allowed: list[Any] = [argparse.Namespace, *((c, n) for n, c in stand_ins.items())]
        try:
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(path, map_location="cpu", weights_only=True)
            return obj, sorted(stand_ins)
        except pickle.UnpicklingError as exc:
            match = re.search(r"Unsupported global: GLOBAL (\S+) was not", str(exc))
            if match is None:
                raise EdgeserError(
                    f"{path}: not a readable torch checkpoint: {first_line(exc)}"
                ) from exc
            name = match.group(1)
            if "." not in name:  # torch prints builtins without their module
                name = f"builtins.{name}"
            if name in stand_ins or len(stand_ins) >= _MAX_STAND_INS:
                raise EdgeserError(
                    f"{path}: could not read it weights-only (at {name}): {first_line(exc)}"
                ) from exc
            stand_ins[name] = _stand_in(name)
        except Exception as exc:  # a corrupt or foreign file fails in many ways
            raise EdgeserError(
                f"{path}: not a readable torch checkpoint: {first_line(exc)}"
            ) from exc


def _stand_ins_in(obj: Any, depth: int = 0) -> set[str]:
    """Qualified names of the :class:`InertObject` stand-ins anywhere inside ``obj``."""
    if isinstance(obj, InertObject):
        return {obj.qualified_name} | _stand_ins_in((obj.args, obj.state), depth + 1)
    if depth > 32:
        return set()
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, list | tuple | set):
        found: set[str] = set()
        for item in obj:
            found |= _stand_ins_in(item, depth + 1)
        return found
    return set()


_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new", "tanh": "tanh"}


def _config_from_distiller(cfg: Mapping[str, Any], path: Path) -> HubertConfig:
    """A ``HubertConfig`` from an s3prl ``Config["distiller"]`` dict (s3prl's defaults)."""
    spec = cfg.get("extractor_conv_feature_layers", cfg.get("conv_feature_layers"))
    layers = parse_conv_spec(str(spec) if spec is not None else DISTILHUBERT_CONV_SPEC)
    mode = str(cfg.get("extractor_mode", "default"))
    if mode not in {"default", "layer_norm"}:
        raise EdgeserError(f"{path}: unsupported extractor_mode {mode!r}")
    attention = str(cfg.get("attention_type", "original"))
    if attention != "original":
        raise EdgeserError(f"{path}: unsupported attention_type {attention!r}")
    activation = str(cfg.get("activation_fn", "gelu"))
    if activation not in _ACTIVATIONS:
        raise EdgeserError(f"{path}: unsupported activation_fn {activation!r}")
    try:
        fields: dict[str, Any] = {
            "conv_dim": tuple(c for c, _, _ in layers),
            "conv_kernel": tuple(k for _, k, _ in layers),
            "conv_stride": tuple(s for _, _, s in layers),
            "feat_extract_norm": "layer" if mode == "layer_norm" else "group",
            "hidden_size": int(cfg.get("encoder_embed_dim", 768)),
            "num_hidden_layers": int(cfg.get("encoder_layers", 1)),
            "intermediate_size": int(cfg.get("encoder_ffn_embed_dim", 3072)),
            "num_attention_heads": int(cfg.get("encoder_attention_heads", 12)),
            "num_conv_pos_embeddings": int(cfg.get("conv_pos", 128)),
            "num_conv_pos_embedding_groups": int(cfg.get("conv_pos_groups", 16)),
            "hidden_act": _ACTIVATIONS[activation],
            "do_stable_layer_norm": bool(cfg.get("layer_norm_first", False)),
            "hidden_dropout": float(cfg.get("dropout", 0.1)),
            "attention_dropout": float(cfg.get("attention_dropout", 0.1)),
            "activation_dropout": float(cfg.get("activation_dropout", 0.1)),
        }
    except (TypeError, ValueError) as exc:
        raise EdgeserError(f"{path}: malformed distiller config: {exc}") from exc
    hidden, heads = fields["hidden_size"], fields["num_attention_heads"]
    groups = fields["num_conv_pos_embedding_groups"]
    if fields["num_hidden_layers"] < 1 or hidden < 1 or heads < 1 or groups < 1:
        raise EdgeserError(f"{path}: the distiller config describes no transformer encoder")
    if hidden % heads or hidden % groups:
        raise EdgeserError(
            f"{path}: encoder_embed_dim {hidden} is not divisible by its {heads} heads and "
            f"{groups} positional-conv groups"
        )
    return distilhubert_config(**fields)


_S3PRL_LAYER_PARTS = {
    "self_attn.q_proj": "attention.q_proj",
    "self_attn.k_proj": "attention.k_proj",
    "self_attn.v_proj": "attention.v_proj",
    "self_attn.out_proj": "attention.out_proj",
    "self_attn_layer_norm": "layer_norm",
    "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense",
    "final_layer_norm": "final_layer_norm",
}

_S3PRL_LAYER = re.compile(
    r"^encoder\.layers\.(\d+)\.(" + "|".join(re.escape(p) for p in _S3PRL_LAYER_PARTS) + r")\.(.+)$"
)

_S3PRL_CONV = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(0|2|2\.1)\.(weight|bias)$")

_WEIGHT_NORM_NAMES = {
    "weight_g": "weight_g",
    "weight_v": "weight_v",
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


def _s3prl_key(key: str) -> str | None:
    """The HF ``HubertModel`` name of one s3prl distiller key; None for prediction heads.

    Unknown keys come back unchanged (and are then reported as unexpected).
    """
    if key.startswith("output_layer."):
        return None
    if key == "mask_emb":
        return "masked_spec_embed"
    if key.startswith("post_extract_proj."):
        return "feature_projection.projection." + key.removeprefix("post_extract_proj.")
    if key.startswith("encoder.pos_conv.0."):
        return "encoder.pos_conv_embed.conv." + key.removeprefix("encoder.pos_conv.0.")
    if key in {"encoder.layer_norm.weight", "encoder.layer_norm.bias"}:
        return key
    match = _S3PRL_LAYER.match(key)
    if match:
        index, part, rest = match.groups()
        return f"encoder.layers.{index}.{_S3PRL_LAYER_PARTS[part]}.{rest}"
    match = _S3PRL_CONV.match(key)
    if match:
        index, sub, name = match.groups()
        module = "conv" if sub == "0" else "layer_norm"
        return f"feature_extractor.conv_layers.{index}.{module}.{name}"
    return key


def s3prl_to_hf_state_dict(
    state: Mapping[str, torch.Tensor], target_keys: Sequence[str] | set[str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename an s3prl distiller state dict to ``HubertModel`` keys.

    Drops the prediction heads (``output_layer.*``) and maps weight-norm parameters,
    stored as ``weight_g``/``weight_v`` or ``parametrizations.weight.original0/1``, to the
    naming found in ``target_keys`` (the state-dict keys of the model to load into).
    Returns ``(converted, origin)`` where ``origin`` maps each new key to its s3prl key.
    """
    targets = set(target_keys)
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = _s3prl_key(str(key))
        if new is None:
            continue
        for suffix, kind in _WEIGHT_NORM_NAMES.items():
            if new.endswith("." + suffix):
                base = new[: -len(suffix)]
                index = 0 if kind == "weight_g" else 1
                modern = f"{base}parametrizations.weight.original{index}"
                legacy = base + kind
                new = legacy if legacy in targets and modern not in targets else modern
                break
        if new in converted:
            raise EdgeserError(f"s3prl checkpoint holds two tensors for {new} ({key})")
        converted[new] = value
        origin[new] = str(key)
    return converted, origin


def load_s3prl_checkpoint(path: Path) -> PreTrainedModel:
    """Build a ``HubertModel`` from an original s3prl DistilHuBERT checkpoint."""
    from transformers import HubertModel

    obj, _ = _load_pickle(path)
    if not isinstance(obj, Mapping) or "Distiller" not in obj or "Config" not in obj:
        found = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise EdgeserError(
            f"{path}: not an s3prl DistilHuBERT checkpoint (expected a dict with 'Config' and "
            f"'Distiller' entries; found {found})"
        )
    config_entry = obj["Config"]
    if isinstance(config_entry, argparse.Namespace):
        config_entry = vars(config_entry)
    distiller_cfg = config_entry.get("distiller") if isinstance(config_entry, Mapping) else None
    if isinstance(distiller_cfg, argparse.Namespace):
        distiller_cfg = vars(distiller_cfg)
    if not isinstance(distiller_cfg, Mapping):
        raise EdgeserError(f"{path}: its 'Config' entry has no 'distiller' section")
    state = obj["Distiller"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise EdgeserError(f"{path}: its 'Distiller' entry is not a state dict of tensors")
    unknown = _stand_ins_in(distiller_cfg)
    if unknown:
        raise EdgeserError(
            f"{path}: its Config['distiller'] holds objects of unknown classes "
            f"({', '.join(sorted(unknown))})"
        )
    ignored = []
    for key in obj:
        if key in ("Distiller", "Config"):
            continue
        inner = sorted(_stand_ins_in(obj[key]))
        ignored.append(f"{key} ({', '.join(inner)})" if inner else str(key))
    if ignored:
        logger.info("%s: ignored: %s", path.name, ", ".join(ignored))
    config = _config_from_distiller(distiller_cfg, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HubertModel(config)
    expected = model.state_dict()
    converted, origin = s3prl_to_hf_state_dict(state, expected.keys())
    missing = [k for k in expected if k not in converted and k not in OPTIONAL_KEYS]
    unexpected = [origin[k] for k in converted if k not in expected]
    mismatched = [
        f"{origin[k]} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise EdgeserError(
            f"{path}: weights do not match the architecture in its Config "
            f"({config.num_hidden_layers} layers, width {config.hidden_size}, "
            f"{len(config.conv_dim)} conv layers) "
            + describe_keys(missing=missing, unexpected=unexpected, mismatched=mismatched)
        )
    if not any(k in converted for k in OPTIONAL_KEYS):
        zero_optional(model)
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    model.eval()
    dropped = sum(1 for k in state if str(k).startswith("output_layer."))
    logger.info(
        "loaded s3prl DistilHuBERT checkpoint %s (%d layers; dropped %d prediction-head tensors)",
        path,
        config.num_hidden_layers,
        dropped,
    )
    return model
