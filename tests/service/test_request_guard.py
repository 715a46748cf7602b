"""The per-request guard in service.observability: body size cap, content type, security headers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

LIMIT = 4096


@pytest.fixture
def capped(model_dir: Path, make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(model_dir, max_body_bytes=LIMIT)


def _batch_body(rows: int, factories: Any) -> bytes:
    return json.dumps({"transactions": [factories.valid()] * rows}).encode()


def _chunks(body: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _assert_too_large(response: Any) -> None:
    assert response.status_code == 413
    assert response.json() == {"detail": f"the request body is larger than {LIMIT} bytes (MAX_BODY_BYTES)"}
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("route", ["/predict", "/predict/batch", "/reload-model"])
def test_guard_declared_length_over_cap_is_413_before_the_route(
    capped: TestClient, factories: Any, route: str
) -> None:
    body = _batch_body(60, factories)
    assert len(body) > LIMIT
    response = capped.post(route, content=body, headers={"content-type": "application/json"})
    _assert_too_large(response)


def test_guard_body_at_the_cap_is_read(capped: TestClient, factories: Any) -> None:
    body = _batch_body(1, factories)
    padded = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(padded) == LIMIT
    response = capped.post("/predict/batch", content=padded, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_guard_chunked_body_over_cap_is_413(capped: TestClient, factories: Any) -> None:
    body = _batch_body(60, factories)
    response = capped.post(
        "/predict/batch", content=_chunks(body), headers={"content-type": "application/json"}
    )
    _assert_too_large(response)


def test_guard_chunked_body_within_cap_is_scored(capped: TestClient, factories: Any) -> None:
    body = _batch_body(3, factories)
    response = capped.post(
        "/predict/batch", content=_chunks(body, 50), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 3


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
def test_guard_body_not_declared_json_is_415(
    client: TestClient, factories: Any, route: str, content_type: str
) -> None:
    response = client.post(
        route, content=json.dumps(factories.valid()), headers={"content-type": content_type}
    )
    assert response.status_code == 415
    assert content_type in response.json()["detail"]
    assert "application/json" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/vnd.api+json", None]
)
def test_guard_json_content_types_and_none_are_read(
    client: TestClient, factories: Any, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post("/predict", content=json.dumps(factories.valid()), headers=headers)
    assert response.status_code == 200
    assert response.json()["model_version"] == "v1"


@pytest.mark.parametrize(
    ("method", "route", "status"),
    [("GET", "/health", 200), ("POST", "/predict", 200), ("GET", "/nowhere", 404), ("POST", "/predict", 422)],
)
def test_guard_security_headers_on_every_response(
    client: TestClient, factories: Any, method: str, route: str, status: int
) -> None:
    body = factories.valid() if status == 200 else {"amount": -1}
    response = client.request(method, route, json=body if method == "POST" else None)
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"]
