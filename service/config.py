"""Configuration of the scoring service: one settings class, read from the environment.

Every variable is documented in ``docs/service.md``. ``ADMIN_TOKEN``, ``MODEL_VERSION`` and ``PORT``
keep exactly those names because operators type them into Render and AWS Lambda by hand.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Values an operator might leave in place from an example file; refused outside dev.
PLACEHOLDER_TOKENS = frozenset(
    {"changeme", "change-me", "change_me", "secret", "admin", "token", "password", "xxx"}
)
MIN_TOKEN_LENGTH = 16
"""Shorter admin tokens are guessable; refused outside dev."""


class Settings(BaseSettings):
    """Settings of the scoring service; each field is one environment variable of the same name."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    environment: Literal["dev", "prod"] = Field(
        "prod",
        validation_alias="ENVIRONMENT",
        description="'dev' relaxes the admin-token checks; anything deployed runs 'prod'.",
    )
    model_dir: Path = Field(
        PROJECT_ROOT / "model",
        validation_alias="MODEL_DIR",
        description="The promoted model directory; a relative path is resolved against the project root.",
    )
    frontend_dir: Path = Field(
        PROJECT_ROOT / "frontend",
        validation_alias="FRONTEND_DIR",
        description="Folder of the analysts' page (index.html) served at /ui/ when bundled.",
    )
    admin_token: SecretStr | None = Field(
        None,
        validation_alias="ADMIN_TOKEN",
        description="Bearer token for POST /reload-model; unset disables the endpoint.",
    )
    model_version: str = Field(
        "v1.0",
        validation_alias="MODEL_VERSION",
        description="Label of a model whose meta.json carries no version (the original API's variable).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="CORS_ORIGINS",
        description="Origins allowed by CORS, comma-separated or a JSON list; '*' only when set explicitly.",
    )
    max_batch_rows: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        validation_alias="MAX_BATCH_ROWS",
        description="Largest number of transactions POST /predict/batch accepts in one request.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        validation_alias="MAX_BODY_BYTES",
        description=(
            "Largest request body accepted, in bytes, checked before the body is parsed; larger "
            "answers 413. The default fits a 10,000-row batch with room to spare."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="LOG_LEVEL", description="Level of the service's JSON log lines."
    )
    log_flush_interval: float = Field(
        0.2,
        ge=0,
        le=10,
        validation_alias="LOG_FLUSH_INTERVAL",
        description=(
            "Seconds a log line may wait to be written together with the lines after it (one write "
            "per batch instead of one per request); warnings and errors are written at once. 0 "
            "writes every line at once."
        ),
    )
    host: str = Field(
        "127.0.0.1", validation_alias="HOST", description="Interface `python -m service` listens on."
    )
    port: int = Field(
        8000, ge=1, le=65535, validation_alias="PORT", description="Port of `python -m service`."
    )
    reasons_top_k: int = Field(
        3,
        ge=1,
        le=5,
        validation_alias="REASONS_TOP_K",
        description="Most reason codes returned per prediction.",
    )
    fastapi_telemetry: bool = Field(
        False,
        validation_alias="FASTAPI_TELEMETRY",
        description=(
            "Turn on FastAPI's native OpenTelemetry instrumentation: spans, metrics and log records "
            "for each request, sent to the globally configured OpenTelemetry providers (an SDK the "
            "operator installs, e.g. under opentelemetry-instrument). Off by default: the service's "
            "own metrics are at /metrics and its logs are JSON lines, and the check FastAPI makes on "
            "every request costs CPU even when no provider is configured."
        ),
    )

    reload_rate_limit: int = Field(
        10,
        ge=1,
        le=1_000_000,
        validation_alias="RELOAD_RATE_LIMIT",
        description=(
            "Most POST /reload-model attempts (any outcome, failed auth included) per "
            "RELOAD_RATE_WINDOW seconds, process-wide; more answer 429 with Retry-After."
        ),
    )
    reload_rate_window: float = Field(
        60.0,
        gt=0,
        le=86_400,
        validation_alias="RELOAD_RATE_WINDOW",
        description="Sliding window of RELOAD_RATE_LIMIT, in seconds.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @field_validator("model_dir", "frontend_dir")
    @classmethod
    def _resolve_against_root(cls, value: Path) -> Path:
        return value if value.is_absolute() else PROJECT_ROOT / value

    @model_validator(mode="after")
    def _refuse_weak_token(self) -> Settings:
        if self.admin_token is None or self.environment == "dev":
            return self
        token = self.admin_token.get_secret_value()
        if token.strip().lower() in PLACEHOLDER_TOKENS or len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"ADMIN_TOKEN is a placeholder or shorter than {MIN_TOKEN_LENGTH} characters; "
                "set a random token, or leave it unset to disable /reload-model"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
