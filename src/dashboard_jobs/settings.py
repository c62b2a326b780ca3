"""Process settings, read once from the environment at each entry point."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from yarl import URL

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@localhost:5672/"

# Used only when APP_ENV=development, so the demo runs without a secret. In production a
# missing JWT_SECRET stops the API at start.
DEVELOPMENT_JWT_SECRET = "development-only-secret-change-me-in-production-0123456789"

# RFC 7518, section 3.2, requires an HMAC key at least as long as the hash output, which is
# 256 bits (32 ASCII characters) for HS256.
MIN_JWT_SECRET_LENGTH = 32


class MissingJwtSecretError(RuntimeError):
    """No JWT_SECRET outside development mode, so tokens can be neither signed nor verified."""


def _check_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ZoneInfoNotFoundError is a KeyError, which pydantic would not report as a validation error.
        raise ValueError("no such time zone; use an IANA name such as Europe/Paris") from None
    return name


def _check_cron(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise ValueError(
            "invalid cron expression; use five fields such as '0 6 * * 1' (minute hour day month weekday)"
        )
    return expression


def _check_amqp_url(url: str) -> str:
    parsed = URL(url)
    if parsed.scheme not in {"amqp", "amqps"} or not parsed.host:
        raise ValueError(
            "not a RabbitMQ URL; use amqp://user:password@host:5672/ (scheme amqp or amqps, and a host)"
        )
    return url


def _check_postgresql_url(url: str | None) -> str | None:
    if not url:
        return url
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise ValueError("not a URL; use postgresql://user@host:5432/dbname") from None
    if backend not in {"postgres", "postgresql"}:
        raise ValueError("not a PostgreSQL URL; use postgresql://user@host:5432/dbname")
    return url


# An IANA time zone name such as Europe/Paris, checked with zoneinfo (the system database or tzdata).
TimeZoneName = Annotated[str, AfterValidator(_check_time_zone)]
CronExpression = Annotated[str, AfterValidator(_check_cron)]

# One pause before a consumer retries a message, in seconds. Retry queues are named after
# their delay and expire messages with a per-queue TTL, so a day is a sane upper bound.
RetryDelaySeconds = Annotated[float, Field(gt=0, le=86_400)]


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every setting of every process; environment variable names are the field names in capitals."""

    # Validation errors leave out the offending values, so printing one cannot leak
    # JWT_SECRET or a password in a URL. The CLI prints the values that are safe to show.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    app_env: Environment = Environment.PRODUCTION
    log_level: str = "INFO"

    database_url: Annotated[str | None, AfterValidator(_check_postgresql_url)] = Field(
        default=None,
        description="SQLAlchemy URL such as postgresql+asyncpg://user@host/db; "
        "unset means the CLI starts an embedded PostgreSQL.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    embedded_postgres_dir: str = Field(
        default=".data/postgres", description="Data folder of the embedded PostgreSQL."
    )

    rabbitmq_url: Annotated[str, AfterValidator(_check_amqp_url)] = DEFAULT_RABBITMQ_URL
    broker_prefix: str = Field(
        default="dashboard",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,60}$",
        description="Prefix of every exchange and queue name, so several deployments or "
        "test runs can share one RabbitMQ virtual host.",
    )
    publish_timeout_seconds: float = Field(default=10.0, gt=0)
    startup_retry_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long `relay --once` and the worker retry connecting to RabbitMQ at "
        "start, with growing pauses, before they exit with code 1, in seconds.",
    )

    jwt_secret: SecretStr | None = None
    jwt_algorithm: str = "HS256"
    jwt_issuer: str = "dashboard-jobs"
    jwt_audience: str = "dashboard-api"

    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_concurrency: int = Field(
        default=2, ge=1, le=16, description="Batches one relay process publishes at the same time."
    )
    relay_interval_seconds: float = Field(
        default=60.0, gt=0, description="Poll fallback when no NOTIFY arrives, in seconds."
    )
    outbox_retention: timedelta = Field(default=timedelta(days=7))
    outbox_cleanup_batch_size: int = Field(default=1_000, ge=1)
    outbox_max_attempts: int = Field(
        default=10,
        ge=1,
        le=1_000,
        description="Publish attempts of one outbox row (nack, return or confirm timeout) "
        "before the relay parks it for an operator; a broker outage does not count.",
    )

    shutdown_grace_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a process finishes its in-flight work after SIGTERM or "
        "SIGINT before it abandons the rest (rolled back, redelivered later), in seconds.",
    )
    worker_health_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="TCP port of the worker's /health/live and /health/ready; 0 disables them.",
    )
    relay_health_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="TCP port of the relay's /health/live and /health/ready; 0 disables them.",
    )
    health_host: str = Field(
        default="127.0.0.1",
        description="Address the worker's and the relay's health endpoints listen on; "
        "0.0.0.0 when probes come from outside the container.",
    )
    worker_unready_exit_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long the worker may stay not ready (broker connection down or a "
        "consumer cancelled) before it exits non-zero for its supervisor to restart it, in seconds.",
    )

    summary_prefetch: int = Field(default=256, ge=1, le=10_000)
    summary_coalesce_seconds: float = Field(
        default=0.05,
        ge=0,
        description="How long the summary consumer waits for more requests before one "
        "recomputation covers them all, in seconds.",
    )
    summary_max_batch_messages: int = Field(default=500, ge=1)
    summary_rebuild_batch_size: int = Field(default=500, ge=1, le=10_000)
    summary_rebuild_cron: CronExpression = Field(
        default="30 2 * * *",
        description="Cron expression (in the platform time zone) of the full summary "
        "rebuild that ages the rolling windows.",
    )
    timezone: TimeZoneName = "Europe/Paris"

    report_locale: str = Field(
        default="fr", pattern=r"^(fr|en)$", description="Language of the parent reports: fr or en."
    )
    report_prefetch: int = Field(default=16, ge=1, le=1_000)
    consumer_retry_delays_seconds: list[RetryDelaySeconds] = Field(
        default=[1.0, 10.0, 60.0],
        max_length=10,
        description="Pause before each retry of a message whose handling failed on a transient "
        "error, in seconds; their number is the number of retries before the message is "
        "dead-lettered. Set as JSON, for example CONSUMER_RETRY_DELAYS_SECONDS='[1, 10, 60]'.",
    )
    bulk_report_max_students: int = Field(default=1_000, ge=1, le=100_000)
    report_schedule_cron: CronExpression = Field(
        default="0 6 * * 1",
        description="Cron expression of the weekly parent report generation, in "
        "report_schedule_timezone.",
    )
    report_schedule_timezone: TimeZoneName = "Europe/Paris"
    report_schedule_grace: timedelta = Field(
        default=timedelta(hours=6),
        description="How late a fire missed while the scheduler was stopped is still run; "
        "older ones are recorded as skipped.",
    )
    # Only safe behind a gateway that authenticates the caller, sets X-Role and X-User-Id,
    # and strips those headers from client requests. Anywhere else a client could claim any
    # role by sending the headers, so the default ignores them.
    trust_gateway_identity_headers: bool = False
    api_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="Largest request body the API reads, in bytes; a larger one gets 413.",
    )

    @field_validator("jwt_secret")
    @classmethod
    def _check_secret_length(cls, secret: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # app_env is declared first, so it is validated by now; it is missing only when invalid.
        if secret is None or info.data.get("app_env") is Environment.DEVELOPMENT:
            return secret
        if len(secret.get_secret_value()) < MIN_JWT_SECRET_LENGTH:
            raise ValueError(
                f"shorter than {MIN_JWT_SECRET_LENGTH} characters; outside APP_ENV=development use a "
                f"random string of at least {MIN_JWT_SECRET_LENGTH} characters, for example from "
                "`openssl rand -hex 32`"
            )
        return secret

    @model_validator(mode="after")
    def _require_secret_outside_development(self) -> Settings:
        if self.jwt_secret is None and self.app_env is Environment.DEVELOPMENT:
            self.jwt_secret = SecretStr(DEVELOPMENT_JWT_SECRET)
        return self

    def require_jwt_secret(self) -> str:
        """Return the signing key; raise MissingJwtSecretError when none is configured outside development mode."""
        if self.jwt_secret is None:
            raise MissingJwtSecretError(
                "JWT_SECRET is not set. Set JWT_SECRET to a random string of at least 32 "
                "characters, or APP_ENV=development to use the development key."
            )
        return self.jwt_secret.get_secret_value()

    @cached_property
    def exchange_name(self) -> str:
        return f"{self.broker_prefix}.events"

    def queue_name(self, consumer: str) -> str:
        return f"{self.broker_prefix}.{consumer}"
