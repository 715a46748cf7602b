"""AWS Lambda entry point, ``service.lambda_handler:handler``: the same ASGI app behind Mangum.

Works with API Gateway REST APIs (v1 events), HTTP APIs (v2, including named stages) and Lambda
Function URLs. The model loads on the first request of a container and stays loaded.
"""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from service.main import app
from service.observability import configure_logging, flush_logs

_adapter: Mangum | None = None


def _strip_stage(event: dict[str, Any]) -> dict[str, Any]:
    """HTTP API v2 events of a named stage carry it in the path (``/prod/predict``); the app has none."""
    if event.get("version") != "2.0":
        return event
    context = event.get("requestContext", {})
    stage = context.get("stage")
    http = context.get("http", {})
    path = http.get("path", "")
    if not stage or stage == "$default" or not isinstance(path, str):
        return event
    prefix = f"/{stage}"
    if path != prefix and not path.startswith(prefix + "/"):
        return event
    stripped = path[len(prefix) :] or "/"
    return {
        **event,
        "rawPath": stripped,
        "requestContext": {**context, "http": {**http, "path": stripped}},
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answer one Lambda invocation."""
    global _adapter
    if _adapter is None:
        settings = app.state.settings
        configure_logging(settings.log_level, settings.log_flush_interval)
        # lifespan="off": nothing to start per invocation; the model loads once per container.
        _adapter = Mangum(app, lifespan="off")
    try:
        response: dict[str, Any] = _adapter(_strip_stage(event), context)
    finally:
        # The invocation's lines go out in one write before the runtime freezes the process.
        flush_logs()
    return response
