"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Requests, latency, texts per request and texts per inference batch."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request to the end of the response, by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inputs = Histogram(
            "request_texts", "Texts per embedding request", buckets=_SIZE_BUCKETS, registry=self.registry
        )
        self.batch_size = Histogram(
            "inference_batch_texts",
            "Texts per inference call (dynamic batching)",
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.queued = Gauge(
            "inference_queue_requests", "Requests waiting for inference", registry=self.registry
        )
        self.rejected = Counter(
            "rejected_requests",
            "Requests refused before inference, by reason",
            ["reason"],
            registry=self.registry,
        )
