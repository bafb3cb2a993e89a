"""Daemon settings: `SAGAWIRE_*` environment variables, overridden by command-line flags.

URLs may hold passwords: print or log them only through `redacted()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.logs import redact
from orchestrator.runtime.system import RuntimeSettings

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_MONGODB_URL = "mongodb://localhost:27017/sagawire"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGAWIRE_", extra="ignore", frozen=True)

    amqp_url: str = DEFAULT_AMQP_URL
    """RabbitMQ, e.g. `amqp://user:password@rabbitmq:5672/vhost`."""
    mongodb_url: str = DEFAULT_MONGODB_URL
    """MongoDB; the database is the URL's path (default `sagawire`)."""
    store: Literal["mongodb", "memory"] = "mongodb"
    """`memory` keeps sagas in the process only, lost when it stops: for benchmarks and trials."""
    machines: Path = Path("machines")
    """A folder of machine YAML files, or one file."""
    queue_type: Literal["quorum", "classic"] = "quorum"
    delivery_limit: int = Field(default=20, ge=1)
    max_live_actors: int = Field(default=10_000, ge=1)
    passivate_after: float = Field(default=60.0, gt=0)
    sweep_interval: float = Field(default=5.0, gt=0)
    prefetch: int = Field(default=256, ge=1)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    """Liveness, readiness and metrics; 0 turns the endpoint off."""
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=0, le=65535)
    """`sagawire gateway`: the HTTP API and the flow monitor."""
    api_tokens: SecretStr | None = None
    """The gateway's bearer tokens, `TOKEN:SCOPE` separated by commas; scope `read` or
    `operator`. Never logged."""
    api_auth: bool = True
    """False lets every request through without a token: for local use only."""

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError(f"must start with amqp:// or amqps://, got {redact(value)!r}")
        return value

    @field_validator("mongodb_url")
    @classmethod
    def _mongo_scheme(cls, value: str) -> str:
        if not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"must start with mongodb:// or mongodb+srv://, got {redact(value)!r}")
        return value

    def runtime(self) -> RuntimeSettings:
        return RuntimeSettings(
            max_live_actors=self.max_live_actors,
            passivate_after=self.passivate_after,
            sweep_interval=self.sweep_interval,
            prefetch=self.prefetch,
        )

    def redacted(self) -> dict[str, Any]:
        """Every setting, fit for a log line: passwords in URLs replaced by `***`."""
        values = self.model_dump(mode="json")
        values["amqp_url"] = redact(self.amqp_url)
        values["mongodb_url"] = redact(self.mongodb_url)
        return values
