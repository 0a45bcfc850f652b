"""Prometheus metrics of the cloud daemon (prefix ``mistnet_cloud_``, base units, bounded labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200)


class CloudMetrics:
    """One registry per daemon (tests build several daemons in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.batches = Counter("mistnet_cloud_batches_total", "Feature batches by outcome.", ["outcome"], registry=r)
        for outcome in ("stored", "duplicate", "dead", "retried", "requeued"):
            self.batches.labels(outcome)
        self.received_bytes = Counter(
            "mistnet_cloud_received_bytes_total", "Bytes of stored batches (bodies and objects).", registry=r
        )
        self.s3_get = Histogram(
            "mistnet_cloud_s3_get_seconds",
            "Time to fetch a claim-checked payload.",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.ingest_lag = Histogram(
            "mistnet_cloud_ingest_lag_seconds",
            "Time from publishing to storing a batch.",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.round_duration = Histogram(
            "mistnet_cloud_round_duration_seconds", "Wall time of a round.", buckets=_SECONDS_BUCKETS, registry=r
        )
        self.last_round = Gauge("mistnet_cloud_last_round", "Number of the last completed round.", registry=r)
        self.last_round_time = Gauge(
            "mistnet_cloud_last_round_timestamp_seconds", "Unix time the last round completed.", registry=r
        )
        self.loss = Gauge("mistnet_cloud_loss", "Mean training loss of the last round by part.", ["part"], registry=r)
        self.map50 = Gauge("mistnet_cloud_map50", "mAP@0.5 of the last round by val set.", ["split"], registry=r)
