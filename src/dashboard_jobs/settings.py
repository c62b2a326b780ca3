"""Process settings, read once from the environment at each entry point."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from typing import Annotated

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@localhost:5672/"

# Used only when APP_ENV=development, so the demo runs without a secret. In production a
# missing JWT_SECRET stops the API at start.
DEVELOPMENT_JWT_SECRET = "development-only-secret-change-me-in-production-0123456789"

# One pause before a consumer retries a message, in seconds. Retry queues are named after
# their delay and expire messages with a per-queue TTL, so a day is a sane upper bound.
RetryDelaySeconds = Annotated[float, Field(gt=0, le=86_400)]


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every setting of every process; environment variable names are the field names in capitals."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    app_env: Environment = Environment.PRODUCTION
    log_level: str = "INFO"

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL such as postgresql+asyncpg://user@host/db; "
        "unset means the CLI starts an embedded PostgreSQL.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    embedded_postgres_dir: str = Field(
        default=".data/postgres", description="Data folder of the embedded PostgreSQL."
    )

    rabbitmq_url: str = DEFAULT_RABBITMQ_URL
    broker_prefix: str = Field(
        default="dashboard",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,60}$",
        description="Prefix of every exchange and queue name, so several deployments or "
        "test runs can share one RabbitMQ virtual host.",
    )
    publish_timeout_seconds: float = Field(default=10.0, gt=0)

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
    summary_rebuild_cron: str = Field(
        default="30 2 * * *",
        description="Cron expression (in the platform time zone) of the full summary "
        "rebuild that ages the rolling windows.",
    )
    timezone: str = "Europe/Paris"

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
    report_schedule_cron: str = Field(
        default="0 6 * * 1",
        description="Cron expression of the weekly parent report generation, in "
        "report_schedule_timezone.",
    )
    report_schedule_timezone: str = "Europe/Paris"
    report_schedule_grace: timedelta = Field(
        default=timedelta(hours=6),
        description="How late a fire missed while the scheduler was stopped is still run; "
        "older ones are recorded as skipped.",
    )
    # Only safe behind a gateway that authenticates the caller, sets X-Role and X-User-Id,
    # and strips those headers from client requests. Anywhere else a client could claim any
    # role by sending the headers, so the default ignores them.
    trust_gateway_identity_headers: bool = False

    @model_validator(mode="after")
    def _require_secret_outside_development(self) -> Settings:
        if self.jwt_secret is None and self.app_env is Environment.DEVELOPMENT:
            self.jwt_secret = SecretStr(DEVELOPMENT_JWT_SECRET)
        return self

    def require_jwt_secret(self) -> str:
        """Return the signing key, raising when none is configured outside development mode."""
        if self.jwt_secret is None:
            raise RuntimeError(
                "JWT_SECRET is not set. Set JWT_SECRET to a random string of at least 32 "
                "characters, or APP_ENV=development to use the development key."
            )
        return self.jwt_secret.get_secret_value()

    @cached_property
    def exchange_name(self) -> str:
        return f"{self.broker_prefix}.events"

    def queue_name(self, consumer: str) -> str:
        return f"{self.broker_prefix}.{consumer}"
