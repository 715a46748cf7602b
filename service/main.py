"""The ASGI app, ``service.main:app``: wiring only. Routes live in ``service.api.routes``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig

from service.api.errors import install_error_handlers
from service.api.routes import health, metrics, model, predict, ui
from service.api.routing import register_directly
from service.config import Settings, get_settings
from service.metrics import ServiceMetrics
from service.model_store import ModelStore
from service.observability import RequestObservability, configure_logging
from service.schemas import BatchRequest, Transaction

DESCRIPTION = """
Scores card transactions for fraud with the model the pipeline promoted into `model/`.

`POST /predict` and `GET /health` keep the original API's shapes; everything else is additive.
Flagged predictions carry reason codes: exact TreeSHAP contributions in log-odds, the values of
XGBoost's `pred_contribs`.
"""

# FastAPI's native OpenTelemetry instrumentation, off unless FASTAPI_TELEMETRY is set. Left on, it
# asks the global providers whether any is configured on every request: about 8 us of CPU per
# POST /predict in-process with none configured (docs/benchmarks.md, "What each serving fix gave").
TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Logging only: the model loads on first need (see ModelStore), because Mangum runs the
    # lifespan on every Lambda invocation.
    settings: Settings = app.state.settings
    configure_logging(settings.log_level, settings.log_flush_interval)
    yield


def _document_hand_read_bodies(app: FastAPI) -> None:
    """Register the request models of the routes that read their own bodies (see routes/predict.py).

    Their operations refer to ``#/components/schemas/<model>``, which FastAPI only fills in for
    models it validates itself.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Transaction, BatchRequest):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; tests pass their own Settings, which then also back SettingsDep."""
    resolved = settings if settings is not None else get_settings()
    app = FastAPI(
        title="Fraud scoring service",
        version="2.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=None if resolved.fastapi_telemetry else TELEMETRY_OFF,
    )
    app.state.settings = resolved
    app.state.metrics = ServiceMetrics()
    app.state.model_store = ModelStore(resolved, app.state.metrics)
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: resolved
    install_error_handlers(app)
    # /predict first: a request is matched against the routes in order, on the hot path too.
    register_directly(app, predict.direct_router)
    for module in (predict, health, model, metrics, ui):
        app.include_router(module.router)
    if resolved.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=resolved.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(
        RequestObservability, metrics=app.state.metrics, max_body_bytes=resolved.max_body_bytes
    )
    _document_hand_read_bodies(app)
    return app


app = create_app()
