"""FedAvg settings: the cloud needs the edges by name; deadline and edge limits are validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config.base import SettingsError, load_settings
from shared.config.cloud import CloudSettings
from shared.config.edge import EdgeSettings


class TestFedAvgSettings:
    """aggregation_algorithm=fedavg with a bare count of edges fails at start-up, saying why."""

    def test_needs_edge_names(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match="needs the edges by name"):
            load_settings(CloudSettings, store=tmp_path, edges=2, aggregation_algorithm="fedavg")
        settings = load_settings(
            CloudSettings, store=tmp_path, edges="edge-a,edge-b", aggregation_algorithm="fedavg", round_deadline_s=30
        )
        assert settings.round_deadline_s == 30.0

    def test_bad_values_named(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match="round_deadline_s"):
            load_settings(CloudSettings, store=tmp_path, round_deadline_s=0)
        with pytest.raises(SettingsError, match="max_model_bytes"):
            load_settings(EdgeSettings, edge="edge-a", data=tmp_path, max_model_bytes=1)
        with pytest.raises(SettingsError, match="device"):
            load_settings(EdgeSettings, edge="edge-a", data=tmp_path, device="tpu")
