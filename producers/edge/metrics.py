"""Prometheus metrics of the edge daemon (prefix ``mistnet_edge_``, base units, ``_total`` counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class EdgeMetrics:
    """One registry per daemon (tests build their own, so nothing is global)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.batches = Counter(
            "mistnet_edge_batches", "Feature batches confirmed by the broker.", ["split"], registry=r
        )
        self.images = Counter("mistnet_edge_images", "Images released in confirmed batches.", ["split"], registry=r)
        self.images_skipped = Counter(
            "mistnet_edge_images_skipped", "Images skipped as unreadable (on_bad_input=skip).", registry=r
        )
        self.bytes = Counter(
            "mistnet_edge_bytes", "Bytes sent: message bodies plus S3 payloads, by payload path.", ["path"], registry=r
        )
        self.publish_confirm_seconds = Histogram(
            "mistnet_edge_publish_confirm_seconds",
            "Publish to broker confirm, retries included.",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.s3_put_seconds = Histogram(
            "mistnet_edge_s3_put_seconds", "Upload of one claim-check payload.", buckets=_LATENCY_BUCKETS_S, registry=r
        )
        self.outbox_batches = Gauge(
            "mistnet_edge_outbox_batches", "Batches persisted but not yet confirmed.", registry=r
        )
        self.done_events = Counter("mistnet_edge_done_events", "edge.done events published.", registry=r)
