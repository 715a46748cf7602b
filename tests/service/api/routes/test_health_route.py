"""GET /health (liveness, original shape) and GET /ready (readiness)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def test_health_with_model_reports_version(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model_loaded": True, "model_version": "v1"}


def test_health_without_model_still_200(empty_client: TestClient) -> None:
    response = empty_client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model_loaded": False, "model_version": "none"}


def test_ready_with_model_is_200(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "model_version": "v1"}


def test_ready_without_model_is_503(empty_client: TestClient) -> None:
    response = empty_client.get("/ready")
    assert response.status_code == 503
    assert "not ready" in response.json()["detail"]


def test_ready_corrupt_model_is_503_and_health_200(client: TestClient, model_dir: Any) -> None:
    (model_dir / "versions" / "v1" / "booster.ubj").write_bytes(b"garbage")
    assert client.get("/ready").status_code == 503
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["model_loaded"] is False
