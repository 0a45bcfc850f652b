"""Settings of ``mistnet provision``: where the broker's management API is, the job, its edges and users."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config.base import ENV_PREFIX, env
from shared.wire.names import check_name


def parse_edge_names(value: str) -> list[str]:
    """``"edge-a,edge-b"`` -> ``["edge-a", "edge-b"]``; a bare count is refused (users need names)."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names or any(name.isdigit() for name in names):
        raise ValueError("must list the edges by name, e.g. edge-a,edge-b (each edge gets a broker user of its name)")
    if len(set(names)) != len(names):
        raise ValueError("lists an edge twice")
    return [check_name("edge", name) for name in names]


def parse_passwords(value: str) -> dict[str, str]:
    """``"edge-a=pw1,mistnet-cloud=pw2"`` -> ``{user: password}`` (passwords may not contain ',')."""
    result: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        user, sep, password = pair.partition("=")
        if not sep or not user.strip() or not password:
            raise ValueError("each entry must be USER=PASSWORD, separated by commas")
        result[user.strip()] = password
    return result


class ProvisionSettings(BaseSettings):
    """Everything ``mistnet provision`` reads; env ``MISTNET_<NAME>`` (the job also reads the seed's names)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore", populate_by_name=True, validate_default=True
    )

    management_url: str = Field(
        "http://127.0.0.1:15672",
        validation_alias=env("management_url"),
        description="RabbitMQ management API (users, permissions, policies).",
    )
    admin_user: str = Field("guest", validation_alias=env("admin_user"), description="Broker administrator.")
    admin_password: SecretStr = Field(
        SecretStr("guest"), validation_alias=env("admin_password"), description="The administrator's password."
    )
    admin_amqp_url: SecretStr | None = Field(
        None,
        validation_alias=env("admin_amqp_url"),
        description="AMQP URL used to declare the topology (default: the management host, port 5672, the admin).",
    )
    vhost: str = Field("/", validation_alias=env("vhost"), description="Virtual host of the job (created if missing).")
    job: str = Field("mistnet", validation_alias=env("job"), description="Job name.")
    edges: str = Field(
        validation_alias=env("edges"),
        description="Edge names, comma separated; each gets a broker user of that name.",
    )
    cloud_user: str = Field("mistnet-cloud", validation_alias=env("cloud_user"), description="The cloud's broker user.")
    monitor_user: str = Field(
        "mistnet-monitor",
        validation_alias=env("monitor_user"),
        description="Read-only user for `mistnet monitor` ('' for none).",
    )
    passwords: SecretStr | None = Field(
        None,
        validation_alias=env("passwords"),
        description="Passwords to set, USER=PASSWORD,...; users not listed keep theirs or get a generated one.",
    )
    passwords_file: Path | None = Field(
        None,
        validation_alias=env("passwords_file"),
        description="JSON {user: password}: read, and generated passwords written to it (mode 0600).",
    )
    reset_passwords: bool = Field(
        False,
        validation_alias=env("reset_passwords"),
        description="Give users that already exist a new generated password (default: keep theirs).",
    )
    delivery_limit: Annotated[int, Field(ge=1, le=1000)] = Field(
        5, validation_alias=env("delivery_limit"), description="Deliveries of one message before it is dead-lettered."
    )
    events_max_age: str = Field(
        "7D", validation_alias=env("events_max_age"), description="How long the events stream keeps history (7D, 12h)."
    )
    declare_topology: bool = Field(
        True,
        validation_alias=env("declare_topology"),
        description="Also declare exchanges and queues over AMQP (off: users and permissions only).",
    )

    @field_validator("job")
    @classmethod
    def _job(cls, value: str) -> str:
        return check_name("job", value)

    @field_validator("edges")
    @classmethod
    def _edges(cls, value: str) -> str:
        parse_edge_names(value)
        return value

    @field_validator("passwords")
    @classmethod
    def _passwords(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_passwords(value.get_secret_value())
        return value

    @field_validator("events_max_age")
    @classmethod
    def _max_age(cls, value: str) -> str:
        unit = value[-1:] if value else ""
        if unit not in ("Y", "M", "D", "h", "m", "s") or not value[:-1].isdigit():
            raise ValueError("must be a number and a unit Y, M, D, h, m or s, e.g. 7D")
        return value

    @field_validator("management_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def edge_names(self) -> list[str]:
        return parse_edge_names(self.edges)
