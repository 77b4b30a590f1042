"""The speech encoder: DistilHuBERT (and its SSL family) as a frozen feature extractor.

:func:`load_encoder` takes one ``source`` string and returns an :class:`Encoder`:

- ``"random"``: the exact DistilHuBERT architecture (:func:`distilhubert_config`) with a
  seeded random initialisation, for tests and dry runs only (a loud warning says so);
  ``"random:<alias>"`` does the same for another architecture of :data:`ALIASES`
  (``random:wav2vec2-base``: wav2vec 2.0 Base as ``Wav2Vec2Config()`` defines it, ~95 M
  parameters), so size and speed comparisons run offline;
- a short alias (:data:`ALIASES`) or a Hugging Face hub id such as
  ``ntu-spml/distilhubert``, fetched with ``AutoModel.from_pretrained`` (needs the network
  or the local hub cache; ``HF_HUB_OFFLINE=1`` makes the miss fail fast);
- a local Hugging Face model folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``); HuBERT, wav2vec 2.0 and WavLM folders all load this way;
- the original s3prl DistilHuBERT checkpoint (a torch pickle ``.ckpt`` with ``"Config"``
  and ``"Distiller"`` entries), converted to a ``transformers`` ``HubertModel``.

The :class:`Encoder` maps 16 kHz mono float waveforms to all hidden states
(``[num_hidden_states, frames, hidden]``, 49 frames per second). It is frozen by default;
:meth:`Encoder.unfreeze_upper` makes the projection, positional convolution and
transformer trainable over the frozen convolutional feature extractor, using the split
API :meth:`Encoder.conv_features` + :meth:`Encoder.forward_from_conv`.

``precision`` is ``"fp32"``, ``"bf16"`` or ``"auto"`` (the pipeline's default, resolved
once per process by :func:`edgeser.core.cpu.resolve_precision`: ``"bf16"`` only where
this CPU has native bfloat16 products, else ``"fp32"``). Both run a *direct*
implementation wherever the architecture allows it, rather than the ``transformers``
modules: the first convolution and its GroupNorm are folded into one product (the
normalisation's statistics follow exactly from the wave's input frames); the other
convolutions run time-major as matrix products over several utterances laid end to end;
the transformer keeps a float32 residual stream and LayerNorms with fused q/k/v
products.

In ``"bf16"`` the frozen weights are cast to bfloat16 once (and re-cast only when the
float32 master weights change), the first product runs at float32 accuracy as a split
bfloat16 product, the positional convolution as one product per group, and by default
the transformer layers' linear maps as dynamic int8 products (:data:`BF16_IMPL`). In
``"fp32"`` every product is float32 (the modules' arithmetic in another summation order;
the positional convolution is oneDNN's grouped convolution, faster in float32 than the
per-group products). Fine-tuning (:meth:`Encoder.unfreeze_upper`) still runs the upper
part through the modules (under autocast in ``"bf16"``).

Files: :mod:`~edgeser.models.ssl.configs` (named architectures, shared constants, the
conv-spec parser), :mod:`~edgeser.models.ssl.encoder` (:class:`Encoder`),
:mod:`~edgeser.models.ssl.direct` (the direct implementation),
:mod:`~edgeser.models.ssl.sources` (:func:`load_encoder`: random, hub, local folders),
:mod:`~edgeser.models.ssl.s3prl` (the s3prl checkpoint and its conversion),
:mod:`~edgeser.models.ssl.checkpoints` (what both kinds of checkpoint loading share).
"""

from edgeser.models.ssl.configs import (
    ALIASES,
    BF16_IMPL,
    DISTILHUBERT_CONV_SPEC,
    DISTILHUBERT_HUB_ID,
    DISTILHUBERT_NUM_PARAMETERS,
    IMPLS,
    PRECISIONS,
    distilhubert_config,
    parse_conv_spec,
    random_architecture,
    tiny_config,
)
from edgeser.models.ssl.encoder import Encoder
from edgeser.models.ssl.s3prl import s3prl_to_hf_state_dict
from edgeser.models.ssl.sources import load_encoder, random_encoder, recorded_source

__all__ = [
    "ALIASES",
    "BF16_IMPL",
    "DISTILHUBERT_CONV_SPEC",
    "DISTILHUBERT_HUB_ID",
    "DISTILHUBERT_NUM_PARAMETERS",
    "IMPLS",
    "PRECISIONS",
    "Encoder",
    "distilhubert_config",
    "load_encoder",
    "parse_conv_spec",
    "random_architecture",
    "random_encoder",
    "recorded_source",
    "s3prl_to_hf_state_dict",
    "tiny_config",
]
