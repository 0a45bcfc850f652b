"""Settings shared by the edge and the cloud, and how a bad value is reported at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.privacy import Mechanism, PrivacyParams, privacy_params
from shared.wire.names import check_name

ENV_PREFIX = "MISTNET_"
MiB = 1 << 20


def env(name: str, *seed_names: str) -> Any:
    """Field alias accepting ``MISTNET_<NAME>`` and, first, the seed job's or Sedna's own names."""
    return AliasChoices(*seed_names, f"{ENV_PREFIX}{name}".lower())


class SettingsError(ValueError):
    """A setting has a value the daemon cannot run with; the message names it."""


class CommonSettings(BaseSettings):
    """What every daemon needs: the job, the broker, the object store, the model and privacy."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    job: str = Field("mistnet", validation_alias=env("job"), description="Job name; routing keys and keys use it.")
    amqp_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        validation_alias=env("amqp_url"),
        description="Broker URL (amqp:// or amqps://); the user name is this daemon's broker identity.",
    )
    amqp_ca_file: Path | None = Field(None, validation_alias=env("amqp_ca_file"), description="CA bundle for amqps://.")
    amqp_cert_file: Path | None = Field(
        None, validation_alias=env("amqp_cert_file"), description="Client certificate for amqps://."
    )
    amqp_key_file: Path | None = Field(
        None, validation_alias=env("amqp_key_file"), description="Client key for amqps://."
    )
    connect_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        10,
        validation_alias=env("connect_attempts"),
        description="Tries to reach the broker at start, with back-off doubling from 0.5 s to 10 s (10: about a "
        "minute); after that the daemon exits 1 for its supervisor to restart it. Once connected it reconnects "
        "by itself.",
    )
    blob_store: str = Field(
        "s3",
        validation_alias=env("blob_store"),
        description="'s3' (uses S3_ENDPOINT_URL and the bucket) or file:///DIR for a machine without S3.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        validation_alias=env("s3_endpoint_url", "s3_endpoint_url", "mistnet_s3_endpoint"),
        description="S3 endpoint, e.g. http://127.0.0.1:8333 (Sedna injects S3_ENDPOINT_URL).",
    )
    s3_access_key_id: str | None = Field(
        None,
        validation_alias=env("s3_access_key_id", "access_key_id"),
        description="S3 access key (ACCESS_KEY_ID).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        None,
        validation_alias=env("s3_secret_access_key", "secret_access_key"),
        description="S3 secret key (SECRET_ACCESS_KEY).",
    )
    s3_region: str = Field("us-east-1", validation_alias=env("s3_region"), description="S3 region name.")
    s3_ca_bundle: Path | None = Field(None, validation_alias=env("s3_ca_bundle"), description="CA bundle for https S3.")
    s3_timeout_s: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = Field(
        30.0,
        validation_alias=env("s3_timeout_s"),
        description="Seconds an S3 call may wait to connect or for each read before it is retried (a stalled server).",
    )
    s3_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        6,
        validation_alias=env("s3_attempts"),
        description="Tries of each S3 call, with exponential back-off, before it counts as failed.",
    )
    bucket: str = Field("mistnet", validation_alias=env("bucket"), description="S3 bucket for features and models.")
    weights: str = Field(
        "yolov5n.pt",
        validation_alias=env("weights"),
        description="Pretrained weights: official .pt, our .safetensors or an artifact folder.",
    )
    img_size: Annotated[int, Field(ge=32, le=4096, multiple_of=32)] = Field(
        640, validation_alias=env("img_size"), description="Square input size (multiple of 32)."
    )
    cut_layer: int = Field(
        4, validation_alias=env("cut_layer", "cut_layer"), description="Split point (yolov5 v6.x: 1..4)."
    )
    privacy: Mechanism = Field(Mechanism.RR_SYM, validation_alias=env("privacy"), description="rr-sym, rr-opt or none.")
    epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        100.0,
        validation_alias=env("epsilon", "epsilon"),
        description="Privacy budget ε of the mechanism (DESIGN §3).",
    )
    aggregation_algorithm: Literal["mistnet", "fedavg"] = Field(
        "mistnet",
        validation_alias=env("aggregation_algorithm", "aggregation_algorithm"),
        description="mistnet (split learning) or fedavg.",
    )
    batch_size: Annotated[int, Field(ge=1, le=4096)] = Field(
        32,
        validation_alias=env("batch_size", "batch_size"),
        description="Images per feature batch / training step.",
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        None,
        validation_alias=env("metrics_port"),
        description="Serve /metrics and /healthz on this port (0: off).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias=env("log_level"), description="debug, info, warning or error."
    )
    log_format: Literal["text", "json"] = Field(
        "text", validation_alias=env("log_format"), description="text (key=value) or json (one object a line)."
    )

    @field_validator("job")
    @classmethod
    def _job_name(cls, value: str) -> str:
        return check_name("job", value)

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("amqp", "amqps"):
            raise ValueError("must start with amqp:// or amqps://")
        return value

    @field_validator("blob_store")
    @classmethod
    def _blob_store(cls, value: str) -> str:
        if value != "s3" and not value.startswith("file://"):
            raise ValueError("must be 's3' or a file:///DIR URL")
        return value

    @property
    def privacy_params(self) -> PrivacyParams:
        return privacy_params(self.privacy, None if self.privacy is Mechanism.NONE else self.epsilon)

    @property
    def broker_user(self) -> str:
        """The user name in the AMQP URL: what RabbitMQ checks ``user_id`` against."""
        return urlsplit(self.amqp_url.get_secret_value()).username or "guest"

    @property
    def amqp_url_redacted(self) -> str:
        """The broker URL with its password masked, for logs."""
        return redact_url(self.amqp_url.get_secret_value())


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/`` -> ``amqp://user:***@host/``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment plus explicit ``overrides`` (CLI flags win).

    Raises :class:`SettingsError` with one line naming the setting, its env names and flag.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = str(first["loc"][0]) if first["loc"] else "settings"
        field = _field_for(cls, loc)
        names = _env_names(cls, field)
        # A missing field's "input" is every other value given, secrets included: never echo it,
        # nor the value of a secret field (a malformed URL may still hold a password).
        secret = "SecretStr" in str(cls.model_fields[field].annotation) if field in cls.model_fields else True
        got = "" if first["type"] == "missing" or secret else f"; got {first.get('input')!r}"
        raise SettingsError(
            f"invalid setting {field} (env {' / '.join(names)}, flag --{field.replace('_', '-')}): {first['msg']}{got}"
        ) from None


def _field_for(cls: type[BaseSettings], loc: str) -> str:
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else []
        if loc == name or loc in [str(c) for c in choices]:
            return name
    return loc


def _env_names(cls: type[BaseSettings], field: str) -> list[str]:
    info = cls.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return [str(choice).upper() for choice in alias.choices]
    return [f"{ENV_PREFIX}{field.upper()}"]
