"""The server's Prometheus metrics (``GET /metrics``), one registry per application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeser.core.errors import EdgeserError

#: The stages of :attr:`Metrics.result_stages`, in order; their sum is the result latency.
STAGES = ("vad", "queue", "pool", "model", "send")
#: Latency buckets (seconds) of the result histograms: 10 ms to 10 s.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Metrics:
    """The counters, gauges and histograms ``edgeser serve`` exports."""

    registry: Any
    open_streams: Any
    streams: Any
    utterances: Any
    frames: Any
    audio_seconds: Any
    rejected: Any
    result_latency: Any
    result_stages: Any
    predictions: Any
    predict_latency: Any

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def make_metrics() -> Metrics:
    """A fresh registry with the server's metrics (names prefixed ``edgeser_``)."""
    try:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    except ImportError:
        raise EdgeserError(
            "edgeser serve needs prometheus-client: pip install 'edgeser[serve]'"
        ) from None
    r = CollectorRegistry(auto_describe=True)
    return Metrics(
        registry=r,
        open_streams=Gauge("edgeser_open_streams", "WebSocket streams open now", registry=r),
        streams=Counter("edgeser_streams", "WebSocket streams accepted", registry=r),
        utterances=Counter("edgeser_utterances", "utterance results sent", registry=r),
        frames=Counter("edgeser_audio_frames", "binary audio frames received", registry=r),
        audio_seconds=Counter(
            "edgeser_audio_seconds", "seconds of stream audio received", registry=r
        ),
        rejected=Counter(
            "edgeser_rejected", "requests, streams and messages refused", ["reason"], registry=r
        ),
        result_latency=Histogram(
            "edgeser_result_latency_seconds",
            "from the audio frame that closed an utterance to its utterance.result",
            buckets=BUCKETS,
            registry=r,
        ),
        result_stages=Histogram(
            "edgeser_result_stage_seconds",
            "where an utterance's result latency goes, per stage: vad (the closing frame "
            "through the VAD), queue (waiting behind the stream's earlier utterances), pool "
            "(waiting for a model thread), model (the model), send (back on the event loop "
            "and sent)",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        ),
        predictions=Counter(
            "edgeser_predictions", "POST /v1/predict answers", ["status"], registry=r
        ),
        predict_latency=Histogram(
            "edgeser_predict_seconds",
            "POST /v1/predict: from the end of the upload to the answer",
            buckets=BUCKETS,
            registry=r,
        ),
    )
