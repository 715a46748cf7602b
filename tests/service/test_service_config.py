"""Settings: operator-typed names, documented variables, refused placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import PROJECT_ROOT, Settings, get_settings

LONG_TOKEN = "a-long-random-admin-token-value"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ADMIN_TOKEN",
        "MODEL_VERSION",
        "PORT",
        "HOST",
        "MODEL_DIR",
        "CORS_ORIGINS",
        "MAX_BATCH_ROWS",
        "LOG_LEVEL",
        "ENVIRONMENT",
        "EXPLAIN_WARMUP",
        "REASONS_TOP_K",
    ):
        monkeypatch.delenv(name, raising=False)


def test_settings_defaults_are_safe() -> None:
    settings = Settings()
    assert settings.admin_token is None
    assert settings.cors_origins == []
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.model_version == "v1.0"
    assert settings.max_batch_rows == 10_000
    assert settings.model_dir == PROJECT_ROOT / "model"


def test_settings_read_operator_names_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", LONG_TOKEN)
    monkeypatch.setenv("MODEL_VERSION", "v3.1")
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("MAX_BATCH_ROWS", "500")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == LONG_TOKEN
    assert settings.model_version == "v3.1"
    assert settings.port == 9123
    assert settings.max_batch_rows == 500
    assert settings.log_level == "DEBUG"


def test_settings_stale_explain_warmup_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # EXPLAIN_WARMUP had a job while reason codes imported XGBoost; an operator may still set it.
    for value in ("true", "false", "not-a-boolean"):
        monkeypatch.setenv("EXPLAIN_WARMUP", value)
        settings = Settings()
        assert "explain_warmup" not in settings.model_dump()
        assert settings.reasons_top_k == 3


def test_settings_token_is_not_shown_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", LONG_TOKEN)
    assert LONG_TOKEN not in repr(Settings())
    assert LONG_TOKEN not in str(Settings().model_dump())


@pytest.mark.parametrize("token", ["changeme", "CHANGEME", "secret", "short-token"])
def test_settings_placeholder_token_refused_outside_dev(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", token)
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):
        Settings()
    monkeypatch.setenv("ENVIRONMENT", "dev")
    assert Settings().admin_token is not None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://a.example,https://b.example", ["https://a.example", "https://b.example"]),
        ('["https://a.example"]', ["https://a.example"]),
        ("*", ["*"]),
        ("", []),
    ],
)
def test_settings_cors_origins_parse(monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
    monkeypatch.setenv("CORS_ORIGINS", raw)
    assert Settings().cors_origins == expected


def test_settings_relative_model_dir_resolves_against_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DIR", "elsewhere/model")
    assert Settings().model_dir == PROJECT_ROOT / "elsewhere" / "model"
    assert Settings(model_dir=Path("/abs/model")).model_dir == Path("/abs/model")


def test_settings_batch_limit_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BATCH_ROWS", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_get_settings_is_cached() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()


def test_settings_every_field_is_documented() -> None:
    doc = (PROJECT_ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"`{field.validation_alias}`" in doc, f"{field.validation_alias} is not in docs/service.md"
