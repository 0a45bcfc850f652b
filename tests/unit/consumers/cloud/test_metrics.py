"""The cloud's metrics follow the project's Prometheus conventions."""

from __future__ import annotations

from consumers.cloud.metrics import CloudMetrics
from tests.prometheus_conventions import registry_problems


class TestCloudMetrics:
    """Names, units, types and labels of every family pass the convention check."""

    def test_conventions(self) -> None:
        metrics = CloudMetrics()
        metrics.loss.labels("box").set(0.1)
        metrics.map50.labels("private").set(0.2)
        metrics.s3_get.observe(0.01)
        assert registry_problems(metrics.registry) == []
