"""Settings of ``mistnet monitor``: which broker to watch and which job."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config.base import ENV_PREFIX, env
from shared.wire.names import check_name


class MonitorSettings(BaseSettings):
    """What ``mistnet monitor`` reads; the broker user needs only the monitor's read permissions."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore", populate_by_name=True, validate_default=True
    )

    job: str | None = Field(None, validation_alias=env("job"), description="Show only this job (default: every job).")
    amqp_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        validation_alias=env("amqp_url"),
        description="Broker URL; a read-only monitor user is enough.",
    )
    amqp_ca_file: Path | None = Field(None, validation_alias=env("amqp_ca_file"), description="CA bundle for amqps://.")

    @field_validator("job")
    @classmethod
    def _job(cls, value: str | None) -> str | None:
        return None if value is None else check_name("job", value)
