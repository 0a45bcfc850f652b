"""Tests of shared.config.edge: the seed job's and Sedna's names, and one-line errors naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mistnet.cli import main as cli_main
from shared.config.base import SettingsError, load_settings
from shared.config.edge import EdgeSettings

SEED_NAMES = {"CUT_LAYER", "EPSILON", "BATCH_SIZE", "AGGREGATION_ALGORITHM", "TRAIN_DATASET_URL"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MISTNET_") or name.upper() in SEED_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("MISTNET_EDGE", "edge-a")


class TestSeedNames:
    """cut_layer, epsilon, batch_size and aggregation_algorithm work in any case, as the seed job spells them."""

    @pytest.mark.parametrize("case", ["lower", "upper", "title"])
    def test_seed_names(self, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
        values = {"cut_layer": "3", "epsilon": "2.5", "batch_size": "8", "aggregation_algorithm": "fedavg"}
        for name, value in values.items():
            monkeypatch.setenv(getattr(name, case)(), value)
        monkeypatch.setenv("MISTNET_DATA", "/data")
        settings = load_settings(EdgeSettings)
        assert (settings.cut_layer, settings.epsilon, settings.batch_size) == (3, 2.5, 8)
        assert settings.aggregation_algorithm == "fedavg"

    def test_train_dataset_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TRAIN_DATASET_URL", "/sedna/data/train.txt")
        assert load_settings(EdgeSettings).data == Path("/sedna/data/train.txt")
        monkeypatch.setenv("TRAIN_DATASET_URL", "file:///sedna/data/")
        assert load_settings(EdgeSettings).data == Path("/sedna/data")
        monkeypatch.setenv("MISTNET_DATA", "/mine")
        assert load_settings(EdgeSettings).data == Path("/mine")

    def test_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MISTNET_DATA", "/data")
        settings = load_settings(EdgeSettings)
        assert settings.inline_threshold_bytes == 1 << 20
        assert settings.val_fraction == 0.1
        assert settings.seed is None
        assert (settings.once, settings.re_release, settings.on_bad_input) == (False, False, "error")


class TestBadValues:
    """A bad value fails at start with one line naming the setting, its env names and flag."""

    @pytest.mark.parametrize(
        ("env", "value", "named"),
        [
            ("BATCH_SIZE", "zero", "batch_size (env BATCH_SIZE / MISTNET_BATCH_SIZE, flag --batch-size)"),
            ("EPSILON", "-1", "epsilon (env EPSILON / MISTNET_EPSILON"),
            ("aggregation_algorithm", "fedprox", "aggregation_algorithm"),
            ("MISTNET_INLINE_THRESHOLD_BYTES", str(17 << 20), "inline_threshold_bytes"),
            ("MISTNET_VAL_FRACTION", "1.5", "val_fraction"),
            ("MISTNET_ON_BAD_INPUT", "ignore", "on_bad_input"),
            ("TRAIN_DATASET_URL", "s3://bucket/train.txt", "data (env MISTNET_DATA / TRAIN_DATASET_URL"),
            ("MISTNET_EDGE", "Edge A", "edge (env MISTNET_EDGE"),
        ],
    )
    def test_named(self, monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str) -> None:
        if env != "TRAIN_DATASET_URL":
            monkeypatch.setenv("MISTNET_DATA", "/data")
        monkeypatch.setenv(env, value)
        with pytest.raises(SettingsError) as info:
            load_settings(EdgeSettings)
        message = str(info.value)
        assert f"invalid setting {named}" in message
        assert "\n" not in message

    def test_missing_edge_does_not_echo_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("MISTNET_EDGE")
        with pytest.raises(SettingsError) as info:
            load_settings(EdgeSettings, data="/data", amqp_url="amqp://u:hunter2@host/")
        assert "invalid setting edge" in str(info.value)
        assert "hunter2" not in str(info.value)

    def test_cli_exits_2_with_one_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as info:
            cli_main(["edge", "--data", "/data", "--batch-size", "many"])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: invalid setting batch_size") and "\n" not in err
