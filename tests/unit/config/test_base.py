"""Settings: seed-job names work case-insensitively; bad values fail naming the setting."""

from __future__ import annotations

import pytest

from shared.config.base import CommonSettings, SettingsError, load_settings, redact_url


class TestCommonSettings:
    """Env names of the seed job and Sedna are honoured, under any case."""

    def test_seed_names_any_case(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("cut_layer", "3")
        monkeypatch.setenv("EPSILON", "8")
        monkeypatch.setenv("Batch_Size", "4")
        monkeypatch.setenv("aggregation_algorithm", "fedavg")
        monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:8333")
        monkeypatch.setenv("ACCESS_KEY_ID", "key")
        monkeypatch.setenv("SECRET_ACCESS_KEY", "hunter2-key")
        settings = load_settings(CommonSettings)
        assert (settings.cut_layer, settings.epsilon, settings.batch_size) == (3, 8.0, 4)
        assert settings.aggregation_algorithm == "fedavg"
        assert settings.s3_endpoint_url == "http://127.0.0.1:8333"
        assert settings.s3_secret_access_key is not None
        assert settings.s3_secret_access_key.get_secret_value() == "hunter2-key"
        assert "hunter2" not in repr(settings)

    def test_prefixed_names_and_flags_win(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MISTNET_JOB", "from-env")
        monkeypatch.setenv("mistnet_cut_layer", "2")
        settings = load_settings(CommonSettings, cut_layer=1)
        assert (settings.job, settings.cut_layer) == ("from-env", 1)

    @pytest.mark.parametrize(
        ("env", "value", "named"),
        [
            ("EPSILON", "-1", "epsilon"),
            ("epsilon", "abc", "epsilon"),
            ("MISTNET_JOB", "Bad Name", "job"),
            ("MISTNET_IMG_SIZE", "100", "img_size"),
            ("MISTNET_AMQP_URL", "http://x", "amqp_url"),
            ("aggregation_algorithm", "fedprox", "aggregation_algorithm"),
        ],
    )
    def test_bad_value_names_the_setting(
        self, monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
    ) -> None:
        monkeypatch.setenv(env, value)
        with pytest.raises(SettingsError) as info:
            load_settings(CommonSettings)
        message = str(info.value)
        assert message.startswith(f"invalid setting {named} ")
        assert "\n" not in message

    def test_secret_values_are_not_echoed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MISTNET_AMQP_URL", "http://user:hunter2@host/")
        with pytest.raises(SettingsError) as info:
            load_settings(CommonSettings)
        assert "amqp_url" in str(info.value) and "hunter2" not in str(info.value)

    def test_broker_user_and_redaction(self) -> None:
        settings = load_settings(CommonSettings, amqp_url="amqp://edge-a:s3cret@host:5672/vh")
        assert settings.broker_user == "edge-a"
        assert "s3cret" not in settings.amqp_url_redacted
        assert redact_url("amqps://u:p@h/") == "amqps://u:***@h/"
        assert redact_url("amqp://h/") == "amqp://h/"
