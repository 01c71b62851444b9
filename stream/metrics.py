"""Prometheus metrics for one server, in a registry of its own (tests run several servers)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Seconds: a fast GPU step is ~10 ms, the tiny model on a laptop CPU ~100 ms, a stall is seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class StreamMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fps = Gauge("stream_fps", "Video frames produced per second by the generator", registry=r)
        self.generate_latency = Histogram(
            "stream_generate_latency_seconds",
            "Wall time of one generator step (one latent frame): what the model adds to the stream's latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "stream_delivery_latency_seconds",
            "From a generated frame to its encoded packet's hand-off to a viewer's sender (pacing, encoding, queueing)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.kept_ratio = Gauge(
            "stream_kept_ratio", "Fraction of tokens LIPAR recomputed in the last frame", registry=r
        )
        self.viewers = Gauge("stream_viewers", "Connected viewers", registry=r)
        self.frames = Counter("stream_frames", "Video frames produced by the generator", registry=r)
        self.dropped = Counter(
            "stream_dropped_frames",
            "Frames dropped for connected viewers: full queues (slow viewers), waiting for a keyframe",
            registry=r,
        )
        self.generator_errors = Counter("stream_generator_errors", "Generator steps that raised", registry=r)
        self.encoded = Counter(
            "stream_encoded_frames", "Frames encoded (once per codec in use, whatever the viewer count)", registry=r
        )
        self.rejected = Counter(
            "stream_rejected_requests",
            "Client input refused with a 4xx or an error message, by where it came in",
            ["where"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
