"""The light runtime: run an exported model (``model.onnx`` / ``model.int8.onnx`` +
``model.json``) on files or on a stream split by voice activity detection
(:func:`load_model`, ``edgeser.load``, gives an :class:`EmotionModel`).

Imports only numpy, soundfile, soxr and onnxruntime (webrtcvad for the WebRTC VAD), so it
works on the ``edgeser[runtime]`` install without torch.
"""

from __future__ import annotations

from edgeser.runtime.card import read_model_card
from edgeser.runtime.loaded import EmotionModel, load_model
from edgeser.runtime.model import Analysis, OnnxEmotionModel
from edgeser.runtime.stream import (
    Segment,
    file_blocks,
    pcm_blocks,
    speech_segments,
    stream_predictions,
)
from edgeser.runtime.vad import (
    SegmenterConfig,
    SileroVAD,
    SpeechSegmenter,
    WebRtcVAD,
    find_silero_onnx,
    make_vad,
)

__all__ = [
    "Analysis",
    "EmotionModel",
    "OnnxEmotionModel",
    "Segment",
    "SegmenterConfig",
    "SileroVAD",
    "SpeechSegmenter",
    "WebRtcVAD",
    "file_blocks",
    "find_silero_onnx",
    "load_model",
    "make_vad",
    "pcm_blocks",
    "read_model_card",
    "speech_segments",
    "stream_predictions",
]
