"""Cloud settings: expected edges, speaker mapping, seed names and limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config.base import SettingsError, load_settings
from shared.config.cloud import CloudSettings, ExpectedEdges, parse_edge_users, parse_edges


class TestExpectedEdges:
    """``edges`` is a count or a list of names."""

    def test_count_and_names(self) -> None:
        assert parse_edges("2") == ExpectedEdges(2)
        assert parse_edges(" edge-a, edge-b ") == ExpectedEdges(2, frozenset({"edge-a", "edge-b"}))
        assert parse_edges("3").counts("anyone")
        assert not parse_edges("edge-a").counts("edge-b")

    @pytest.mark.parametrize("value", ["0", "edge-a,edge-a", "", "Edge A"])
    def test_refused(self, value: str) -> None:
        with pytest.raises(ValueError, match=r"edge|at least"):
            parse_edges(value)


class TestEdgeUsers:
    """A user speaks for the edge of its own name unless the mapping says otherwise."""

    def test_default_and_mapping(self) -> None:
        users = parse_edge_users("gw-1=edge-a, gw-1=edge-b")
        assert users.allows("gw-1", "edge-a") and users.allows("gw-1", "edge-b")
        assert not users.allows("gw-1", "gw-1")
        assert users.allows("edge-c", "edge-c") and not users.allows("edge-c", "edge-a")
        assert not users.allows(None, "edge-a")

    def test_malformed(self) -> None:
        with pytest.raises(ValueError, match="USER=EDGE"):
            parse_edge_users("gw-1")


class TestCloudSettings:
    """Seed-job names work; bad values fail at start-up naming the setting."""

    def test_seed_names(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("epochs", "3")
        monkeypatch.setenv("LEARNING_RATE", "0.002")
        monkeypatch.setenv("MODEL_URL", "/models/latest")
        monkeypatch.setenv("MISTNET_EDGES", "edge-a,edge-b")
        settings = load_settings(CloudSettings, store=tmp_path)
        assert (settings.epochs, settings.learning_rate, settings.model_url) == (3, 0.002, "/models/latest")
        assert settings.expected_edges.names == frozenset({"edge-a", "edge-b"})
        assert settings.wire_limits.max_message_bytes == 16 << 20

    def test_count_given_as_int(self, tmp_path: Path) -> None:
        assert load_settings(CloudSettings, store=tmp_path, edges=2).expected_edges == ExpectedEdges(2)

    @pytest.mark.parametrize(
        ("overrides", "named"),
        [
            ({"edges": "edge-a,edge-a"}, "edges"),
            ({"optimizer": "rmsprop"}, "optimizer"),
            ({"rounds": 0}, "rounds"),
            ({"edge_users": "nobody"}, "edge_users"),
            ({"edges": "2", "min_edges": 3}, "min_edges"),
        ],
    )
    def test_bad_values_name_the_setting(self, overrides: dict[str, object], named: str, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match=named):
            load_settings(CloudSettings, store=tmp_path, **overrides)

    def test_store_is_required(self) -> None:
        with pytest.raises(SettingsError, match="store"):
            load_settings(CloudSettings)
