"""Named encoder architectures, the constants every part of the encoder shares, and
s3prl's conv-spec strings parsed safely (never with ``eval``)."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgeser.core.errors import EdgeserError

if TYPE_CHECKING:
    from transformers import HubertConfig


DISTILHUBERT_HUB_ID = "ntu-spml/distilhubert"

#: Parameters of ``HubertModel(distilhubert_config())`` (incl. the 768-d mask embedding).
DISTILHUBERT_NUM_PARAMETERS = 23_491_968

DISTILHUBERT_CONV_SPEC = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"

#: Arithmetic an :class:`Encoder` runs in (``"auto"`` resolves to one of them).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

#: Tag of the direct bfloat16 implementation (see the module docstring). It is part of
#: the :attr:`Encoder.identity` of bf16 encoders that use it, so feature caches written by
#: the earlier autocast implementation are not reused; float32 identities do not change.
BF16_IMPL = "bf16-v2"

#: Choices of :class:`Encoder` ``impl``: the direct implementation with int8 transformer
#: linears (bf16's default; in fp32 measured 1.06x faster on an AVX2 CPU, but then no
#: longer float32 throughout, so not fp32's default), the direct implementation, or the
#: ``transformers`` modules.
IMPLS: tuple[str, ...] = ("direct+int8", "direct", "modules")

#: Short names accepted by :func:`load_encoder`.
ALIASES: dict[str, str] = {
    "distilhubert": DISTILHUBERT_HUB_ID,
    "hubert-base": "facebook/hubert-base-ls960",
    "wav2vec2-base": "facebook/wav2vec2-base",
    "wavlm-base-plus": "microsoft/wavlm-base-plus",
}

#: Training-only parameter (SpecAugment mask embedding): never used on the feature path, so
#: it may be absent from a checkpoint (s3prl's distiller has none) and is left out of
#: ``Encoder.identity``.
OPTIONAL_KEYS = frozenset({"masked_spec_embed"})

#: Config entries that do not change what the encoder computes at inference (file and
#: library metadata, training-only settings); left out of ``Encoder.identity`` so that the
#: same weights reached through different sources (hub folder, s3prl .ckpt) share caches.
VOLATILE_CONFIG_KEYS = frozenset(
    {
        "apply_spec_augment",
        "chunk_size_feed_forward",
        "classifier_proj_size",
        "id2label",
        "initializer_range",
        "is_encoder_decoder",
        "label2id",
        "problem_type",
        "use_weighted_layer_sum",
        "vocab_size",
        "transformers_version",
        "_name_or_path",
        "name_or_path",
        "_commit_hash",
        "architectures",
        "dtype",
        "torch_dtype",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "attn_implementation",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "use_return_dict",
        "layerdrop",
    }
)


def distilhubert_config(**overrides: Any) -> HubertConfig:
    """The exact DistilHuBERT architecture as a ``transformers.HubertConfig``.

    7 conv layers of 512 channels, kernels (10,3,3,3,3,2,2), strides (5,2,2,2,2,2,2), no
    conv bias, GroupNorm on the first layer only, GELU (a 400-sample receptive field and a
    320-sample hop: 49 frames per second); projection 512→768 without a LayerNorm before
    it; convolutional positional embedding (kernel 128, 16 groups, weight norm); 2 post-LN
    transformer layers, 768 wide, 12 heads, FFN 3072, GELU. ``HubertModel`` of it has
    :data:`DISTILHUBERT_NUM_PARAMETERS` parameters. Its feature extractor uses
    ``do_normalize=False``: the waveform is not standardised per utterance.
    ``overrides`` replace individual fields (used for s3prl checkpoints and tiny tests).
    """
    from transformers import HubertConfig

    fields: dict[str, Any] = {
        "vocab_size": 32,
        "hidden_size": 768,
        "num_hidden_layers": 2,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout": 0.1,
        "activation_dropout": 0.1,
        "attention_dropout": 0.1,
        "feat_proj_layer_norm": False,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
        "layerdrop": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "feat_extract_norm": "group",
        "feat_extract_activation": "gelu",
        "conv_dim": (512,) * 7,
        "conv_stride": (5, 2, 2, 2, 2, 2, 2),
        "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
        "conv_bias": False,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
        "do_stable_layer_norm": False,
        "apply_spec_augment": False,
        "mask_time_prob": 0.05,
        "architectures": ["HubertModel"],
    }
    fields.update(overrides)
    return HubertConfig(**fields)


def tiny_config(**overrides: Any) -> HubertConfig:
    """A tiny DistilHuBERT-shaped config for fast tests (2 conv layers, width 32, 1 layer).

    Receptive field 20 samples, hop 10 samples.
    """
    fields: dict[str, Any] = {
        "conv_dim": (32, 32),
        "conv_kernel": (10, 3),
        "conv_stride": (5, 2),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    }
    fields.update(overrides)
    return distilhubert_config(**fields)


#: ``random:<alias>`` architectures: the transformers config defaults of each family are
#: the Base models; ``do_normalize`` is the released checkpoint's preprocessor setting.
_RANDOM_ARCHS: dict[str, tuple[str, bool]] = {
    "distilhubert": ("distilhubert", False),
    "hubert-base": ("HubertConfig", False),
    "wav2vec2-base": ("Wav2Vec2Config", True),
    "wavlm-base-plus": ("WavLMConfig", False),
}


def random_architecture(arch: str) -> tuple[Any, bool]:
    """``(config, do_normalize)`` of a named architecture for ``random:<arch>``."""
    if arch not in _RANDOM_ARCHS:
        raise EdgeserError(
            f"unknown architecture {arch!r} in 'random:{arch}'; use one of "
            f"{', '.join(sorted(_RANDOM_ARCHS))}"
        )
    name, do_normalize = _RANDOM_ARCHS[arch]
    if name == "distilhubert":
        return distilhubert_config(), do_normalize
    import transformers

    config = getattr(transformers, name)()
    config.apply_spec_augment = False
    return config, do_normalize


_MAX_SPEC_CHARS = 2_000

_MAX_CONV_LAYERS = 64

_MAX_SPEC_INT = 1 << 20


def parse_conv_spec(spec: str) -> list[tuple[int, int, int]]:
    """Parse an s3prl/fairseq conv spec such as ``"[(512,10,5)] + [(512,3,2)] * 4"``.

    Returns ``[(channels, kernel, stride), ...]``. Only list/tuple literals of
    non-negative integers, ``+`` (concatenation) and ``*`` (repetition by an integer) are
    allowed; the string is parsed with :mod:`ast` and never evaluated, so names, calls,
    attributes and any other syntax are refused with :class:`EdgeserError`.
    """
    if not isinstance(spec, str):
        raise EdgeserError(f"conv spec must be a string, got {type(spec).__name__}")
    if len(spec) > _MAX_SPEC_CHARS:
        raise EdgeserError(f"conv spec is too long ({len(spec)} characters)")
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as exc:
        raise EdgeserError(f"conv spec {spec!r} is not a valid expression: {exc.msg}") from exc
    value = _eval_spec_node(tree.body, spec)
    if not isinstance(value, list | tuple) or not value:
        raise EdgeserError(f"conv spec {spec!r} must be a non-empty list of (dim, kernel, stride)")
    layers: list[tuple[int, int, int]] = []
    for item in value:
        if (
            not isinstance(item, tuple | list)
            or len(item) != 3
            or not all(isinstance(v, int) and v > 0 for v in item)
        ):
            raise EdgeserError(
                f"conv spec {spec!r}: each layer must be (dim, kernel, stride) of positive "
                f"integers, got {item!r}"
            )
        layers.append((int(item[0]), int(item[1]), int(item[2])))
    return layers


def _eval_spec_node(node: ast.AST, spec: str) -> Any:
    """Evaluate one node of a conv spec: int/list/tuple literals, ``+`` and ``*`` only."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise EdgeserError(f"conv spec {spec!r}: only integer constants are allowed")
        if not 0 <= value <= _MAX_SPEC_INT:
            raise EdgeserError(f"conv spec {spec!r}: integer {value} out of range")
        return value
    if isinstance(node, ast.List | ast.Tuple):
        if len(node.elts) > _MAX_CONV_LAYERS:
            raise EdgeserError(f"conv spec {spec!r}: literal too long")
        items = [_eval_spec_node(elt, spec) for elt in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
        left = _eval_spec_node(node.left, spec)
        right = _eval_spec_node(node.right, spec)
        if isinstance(node.op, ast.Add):
            if isinstance(left, list) and isinstance(right, list):
                result: Any = left + right
            elif isinstance(left, tuple) and isinstance(right, tuple):
                result = left + right
            else:
                raise EdgeserError(f"conv spec {spec!r}: '+' joins two lists (or two tuples)")
        else:
            if isinstance(left, list | tuple) and isinstance(right, int):
                seq, count = left, right
            elif isinstance(right, list | tuple) and isinstance(left, int):
                seq, count = right, left
            else:
                raise EdgeserError(f"conv spec {spec!r}: '*' repeats a list by an integer")
            if count > _MAX_CONV_LAYERS:
                raise EdgeserError(f"conv spec {spec!r}: repetition {count} is too large")
            result = seq * count
        if len(result) > _MAX_CONV_LAYERS:
            raise EdgeserError(f"conv spec {spec!r}: more than {_MAX_CONV_LAYERS} layers")
        return result
    raise EdgeserError(
        f"conv spec {spec!r}: unsupported syntax ({type(node).__name__}); only list/tuple "
        "literals of integers, '+' and '*' are allowed"
    )


def conv_frames(num_samples: int, conv: Sequence[tuple[int, int]]) -> int:
    """Frames out of a stack of unpadded convolutions ``[(kernel, stride), ...]``."""
    n = int(num_samples)
    for kernel, stride in conv:
        n = (n - kernel) // stride + 1
    return n
