"""The daemons' HTTP endpoint, scraped for real: /metrics follows Prometheus conventions, /healthz probes."""

from __future__ import annotations

import importlib
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.observability.http import MetricsServer
from tests.prometheus_conventions import exposition_problems, registry_problems


def _conforming_registry() -> CollectorRegistry:
    """The metrics issue 5 asks of the daemons, named as they should be."""
    r = CollectorRegistry()
    Counter("mistnet_edge_batches", "Feature batches confirmed.", ["split"], registry=r).labels("train").inc(3)
    Counter("mistnet_edge_sent_bytes", "Bytes sent.", registry=r).inc(1024)
    Histogram("mistnet_edge_publish_confirm_seconds", "Publish to confirm.", registry=r).observe(0.01)
    Histogram("mistnet_cloud_s3_get_seconds", "S3 get.", registry=r).observe(0.2)
    Gauge("mistnet_cloud_ingest_lag_seconds", "Publish to store.", registry=r).set(0.5)
    Histogram("mistnet_cloud_round_duration_seconds", "Round wall time.", registry=r).observe(12)
    Gauge("mistnet_cloud_last_round_timestamp_seconds", "Unix time of the last round.", registry=r).set(1.7e9)
    Gauge("mistnet_cloud_loss", "Loss of the last round.", ["part"], registry=r).labels("box").set(0.05)
    Gauge("mistnet_cloud_map50", "mAP@0.5 of the last round.", registry=r).set(0.4)
    return r


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


class TestScrape:
    """A scraped /metrics passes the convention check; /healthz answers 200 or 503 with the detail."""

    def test_metrics_and_health(self) -> None:
        healthy = {"ok": True}
        server = MetricsServer(
            _conforming_registry(),
            lambda: (healthy["ok"], "ok\n" if healthy["ok"] else "broker down\n"),
            port=0,
            host="127.0.0.1",
        ).start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            status, ctype, body = _get(f"{base}/metrics")
            assert status == 200 and ctype.startswith("text/plain")
            assert 'mistnet_edge_batches_total{split="train"} 3.0' in body
            assert "mistnet_cloud_round_duration_seconds_bucket" in body
            assert exposition_problems(body) == []
            assert _get(f"{base}/healthz")[::2] == (200, "ok\n")
            healthy["ok"] = False
            assert _get(f"{base}/healthz")[::2] == (503, "broker down\n")
            assert _get(f"{base}/other")[0] == 404
        finally:
            server.stop()


class TestConventionChecker:
    """The checker names each kind of violation."""

    def test_violations(self) -> None:
        r = CollectorRegistry()
        Counter("edge_batches", "no prefix", registry=r).inc()
        Histogram("mistnet_publish_latency_ms", "ms", registry=r).observe(3)
        Histogram("mistnet_publish_latency", "no unit", registry=r).observe(3)
        Gauge("mistnet_queue_total", "gauge with _total", registry=r).set(1)
        Gauge("mistnet_last_round_timestamp", "timestamp without unit", registry=r).set(1)
        Gauge("mistnet_payload_mb", "megabytes", registry=r).set(1)
        Gauge("mistnet_nohelp", "", registry=r).set(1)
        Counter("mistnet_batches_by_id", "unbounded label", ["message_id"], registry=r).labels("m-1").inc()
        text = "\n".join(registry_problems(r))
        for expected in (
            "edge_batches: does not start with mistnet_",
            "mistnet_publish_latency_ms: uses non-base unit(s) ['ms']",
            "mistnet_publish_latency: a histogram must name its unit",
            "mistnet_queue_total: only counters end in _total",
            "mistnet_last_round_timestamp: timestamps are _timestamp_seconds",
            "mistnet_payload_mb: uses non-base unit(s) ['mb']",
            "mistnet_nohelp: has no help text",
            "mistnet_batches_by_id: label(s) ['message_id'] grow without bound",
        ):
            assert expected in text
        assert registry_problems(_conforming_registry()) == []


@pytest.mark.parametrize(
    ("module", "cls"), [("producers.edge.metrics", "EdgeMetrics"), ("consumers.cloud.metrics", "CloudMetrics")]
)
class TestDaemonMetrics:
    """The edge's and the cloud's own metrics follow the same conventions (once their modules exist)."""

    def test_daemon_registry(self, module: str, cls: str) -> None:
        try:
            metrics = getattr(importlib.import_module(module), cls)()
        except (ImportError, AttributeError) as exc:
            pytest.skip(f"{module}.{cls} is not available in this build: {exc}")
        assert registry_problems(metrics.registry) == []
