"""The Lambda handler fed real API Gateway and Function URL events; same answers as the ASGI app."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.lambda_handler as lambda_module
from service.main import create_app


class Context:
    function_name = "fraud-scoring"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    memory_limit_in_mb = 512

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def rest_v1_event(
    method: str, path: str, body: str | None = None, query: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Host": "abc123.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {
            "Content-Type": ["application/json"],
            "Host": ["abc123.execute-api.eu-west-1.amazonaws.com"],
        },
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.0"},
            "accountId": "123456789012",
            "apiId": "abc123",
        },
        "body": body,
        "isBase64Encoded": False,
    }


def http_v2_event(
    method: str,
    path: str,
    body: str | None = None,
    stage: str = "prod",
    query: str = "",
    base64_body: bool = False,
) -> dict[str, Any]:
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    payload = body
    if body is not None and base64_body:
        payload = base64.b64encode(body.encode()).decode()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default" if stage == "$default" else "ANY /{proxy+}",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": {
            "content-type": "application/json",
            "host": "abc123.execute-api.eu-west-1.amazonaws.com",
            "user-agent": "curl/8.0",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default" if stage == "$default" else "ANY /{proxy+}",
            "stage": stage,
            "time": "03/Dec/2026:16:00:00 +0000",
            "timeEpoch": 1796313600000,
        },
        "isBase64Encoded": base64_body,
    }
    if payload is not None:
        event["body"] = payload
    return event


def function_url_event(method: str, path: str, body: str | None = None, query: str = "") -> dict[str, Any]:
    event = http_v2_event(method, path, body, stage="$default", query=query)
    event["headers"]["host"] = "abcdefghijklmnop.lambda-url.eu-west-1.on.aws"
    event["requestContext"]["domainName"] = "abcdefghijklmnop.lambda-url.eu-west-1.on.aws"
    event["requestContext"]["domainPrefix"] = "abcdefghijklmnop"
    return event


EVENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "rest_v1": lambda method, path, body=None: rest_v1_event(method, path, body),
    "http_v2_named_stage": lambda method, path, body=None: http_v2_event(method, path, body, stage="prod"),
    "http_v2_base64_body": lambda method, path, body=None: http_v2_event(
        method, path, body, base64_body=True
    ),
    "function_url": lambda method, path, body=None: function_url_event(method, path, body),
}


@pytest.fixture
def lambda_app(
    model_dir: Path, make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The handler wired to an app serving the test model; a TestClient of an identical app for comparison."""
    monkeypatch.setattr(lambda_module, "app", create_app(make_settings(model_dir)))
    monkeypatch.setattr(lambda_module, "_adapter", None)
    with TestClient(create_app(make_settings(model_dir)), raise_server_exceptions=False) as asgi:
        yield asgi


def invoke(event: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    response = lambda_module.handler(event, Context())
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    return response["statusCode"], json.loads(body), headers


@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_lambda_health_matches_asgi(lambda_app: TestClient, kind: str) -> None:
    status, body, headers = invoke(EVENTS[kind]("GET", "/health"))
    assert status == 200
    assert body == {"status": "ok", "model_loaded": True, "model_version": "v1"}
    assert body == lambda_app.get("/health").json()
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"]


@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_lambda_predict_matches_asgi(lambda_app: TestClient, factories: Any, kind: str) -> None:
    for transaction in (factories.valid(), factories.fraud()):
        status, body, _ = invoke(EVENTS[kind]("POST", "/predict", json.dumps(transaction)))
        assert status == 200
        assert body == lambda_app.post("/predict", json=transaction).json()
        assert body["model_version"] == "v1"


@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_lambda_invalid_input_is_422_like_asgi(lambda_app: TestClient, factories: Any, kind: str) -> None:
    bad = {**factories.valid(), "hour": 24}
    status, body, _ = invoke(EVENTS[kind]("POST", "/predict", json.dumps(bad)))
    assert status == 422
    assert body == lambda_app.post("/predict", json=bad).json()
    assert body["detail"][0]["loc"] == ["body", "hour"]


@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_lambda_batch_matches_asgi(lambda_app: TestClient, factories: Any, kind: str) -> None:
    batch = {"transactions": [factories.valid(), factories.fraud()]}
    status, body, _ = invoke(EVENTS[kind]("POST", "/predict/batch", json.dumps(batch)))
    assert status == 200
    assert body == lambda_app.post("/predict/batch", json=batch).json()


def test_lambda_query_string_reaches_app(lambda_app: TestClient, factories: Any) -> None:
    event = rest_v1_event("POST", "/predict", json.dumps(factories.valid()), query={"explain": "true"})
    status, body, _ = invoke(event)
    assert status == 200 and isinstance(body["reasons"], list)
    event = http_v2_event("POST", "/predict", json.dumps(factories.valid()), query="explain=true")
    assert invoke(event)[1]["reasons"] == body["reasons"]


def test_lambda_model_loads_once_per_container(lambda_app: TestClient, factories: Any) -> None:
    store = lambda_module.app.state.model_store
    invoke(http_v2_event("GET", "/health"))
    first = store.current()
    for _ in range(3):
        invoke(function_url_event("POST", "/predict", json.dumps(factories.valid())))
    assert store.current() is first


def test_lambda_stage_strip_leaves_other_paths_alone() -> None:
    event = http_v2_event("GET", "/health", stage="prod")
    event["requestContext"]["http"]["path"] = "/production/health"
    assert lambda_module._strip_stage(event)["requestContext"]["http"]["path"] == "/production/health"


INVOCATION_PROBE = """
import json, os, sys
from service.lambda_handler import handler
from tests.service.test_lambda_handler import Context, http_v2_event
response = handler(http_v2_event("POST", "/predict", sys.argv[1]), Context())
sys.stdout.write("STATUS " + str(response["statusCode"]) + "\\n")
sys.stdout.flush()
os._exit(0)  # as a frozen and reaped container: no exit handlers, nothing flushed after this
"""


def test_lambda_invocation_writes_its_log_lines_before_returning(model_dir: Path, factories: Any) -> None:
    env = {
        **os.environ,
        "MODEL_DIR": str(model_dir),
        "LOG_FLUSH_INTERVAL": "10",  # the background flush would come far too late
        "LOG_LEVEL": "INFO",
    }
    env.pop("ADMIN_TOKEN", None)
    result = subprocess.run(
        [sys.executable, "-c", INVOCATION_PROBE, json.dumps(factories.valid())],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines = result.stdout.splitlines()
    assert lines[-1] == "STATUS 200"
    access = [json.loads(line) for line in lines[:-1] if '"service.access"' in line]
    assert [(line["route"], line["status"]) for line in access] == [("/predict", 200)]
