"""Tests of producers.edge.metrics: names and units follow the Prometheus conventions."""

from __future__ import annotations

from producers.edge.metrics import EdgeMetrics
from tests.prometheus_conventions import registry_problems


class TestEdgeMetrics:
    """Every edge metric is prefixed, in base units, with _total counters and bounded labels."""

    def test_conventions(self) -> None:
        metrics = EdgeMetrics()
        metrics.batches.labels("train").inc()
        metrics.bytes.labels("inline").inc(10)
        assert registry_problems(metrics.registry) == []
