"""GET /model and POST /reload-model: metadata, auth, verification, atomic swap."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.main import create_app


def test_model_returns_meta(client: TestClient) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == "v1"
    assert body["trained_at"].startswith("2026-01-01")
    assert body["threshold"] == 0.5
    assert body["metrics"]["test"]["roc_auc"] == 0.97
    assert body["data_md5"] == "0123456789abcdef0123456789abcdef.dir"
    assert [f["name"] for f in body["features"]] == [
        "amount",
        "hour",
        "merchant_category",
        "distance_from_home",
        "num_transactions_last_24h",
    ]
    assert body["features"][0]["exclusive_minimum"] is True


def test_model_without_model_is_503(empty_client: TestClient) -> None:
    assert empty_client.get("/model").status_code == 503


def test_reload_success_swaps_version(
    client: TestClient, model_dir: Path, booster_v2: Any, factories: Any
) -> None:
    before = client.post("/predict", json=factories.valid()).json()
    factories.write_version(model_dir, "v2", booster_v2, threshold=0.4)
    response = client.post("/reload-model", headers=factories.auth())
    assert response.status_code == 200
    assert response.json() == {"status": "reloaded", "old_version": "v1", "new_version": "v2"}
    after = client.post("/predict", json=factories.valid()).json()
    assert after["model_version"] == "v2"
    assert after["threshold"] == 0.4
    assert after["fraud_probability"] != before["fraud_probability"]
    assert client.get("/health").json()["model_version"] == "v2"


def test_reload_from_no_model_loads_first_model(
    tmp_path: Path, make_client: Callable[..., TestClient], booster_v1: Any, factories: Any
) -> None:
    directory = tmp_path / "model"
    client = make_client(directory)
    assert client.get("/ready").status_code == 503
    factories.write_version(directory, "v1", booster_v1)
    response = client.post("/reload-model", headers=factories.auth())
    assert response.status_code == 200
    assert response.json() == {"status": "reloaded", "old_version": None, "new_version": "v1"}
    assert client.get("/ready").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
)
def test_reload_bad_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/reload-model", headers=headers)
    assert response.status_code == 401
    assert "Bearer" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_reload_token_prefix_is_not_enough(client: TestClient, factories: Any) -> None:
    response = client.post("/reload-model", headers=factories.auth(factories.admin_token[:-1]))
    assert response.status_code == 401


def test_reload_no_token_configured_is_disabled(
    model_dir: Path, make_client: Callable[..., TestClient], factories: Any
) -> None:
    client = make_client(model_dir, admin_token=None)
    response = client.post("/reload-model", headers=factories.auth())
    assert response.status_code == 403
    assert "disabled" in response.json()["detail"]
    assert "ADMIN_TOKEN" in response.json()["detail"]


def _assert_refused_and_v1_serves(client: TestClient, factories: Any, reason: str) -> None:
    response = client.post("/reload-model", headers=factories.auth())
    assert response.status_code == 409
    body = response.json()
    assert body["serving_version"] == "v1"
    assert reason in body["detail"]
    prediction = client.post("/predict", json=factories.valid())
    assert prediction.status_code == 200
    assert prediction.json()["model_version"] == "v1"
    assert client.get("/ready").status_code == 200


def test_reload_corrupt_file_keeps_old_model(
    client: TestClient, model_dir: Path, booster_v2: Any, factories: Any
) -> None:
    assert client.get("/ready").status_code == 200
    factories.write_version(model_dir, "v2", booster_v2)
    booster = model_dir / "versions" / "v2" / "booster.ubj"
    payload = bytearray(booster.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    booster.write_bytes(bytes(payload))
    _assert_refused_and_v1_serves(client, factories, "sha256")


def test_reload_unparseable_booster_with_matching_hash_keeps_old_model(
    client: TestClient, model_dir: Path, booster_v2: Any, factories: Any
) -> None:
    import hashlib

    assert client.get("/ready").status_code == 200
    factories.write_version(model_dir, "v2", booster_v2)
    garbage = b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner"
    (model_dir / "versions" / "v2" / "booster.ubj").write_bytes(garbage)

    def fix_hash(raw: dict[str, Any]) -> None:
        raw["artifacts"]["booster"]["sha256"] = hashlib.sha256(garbage).hexdigest()
        raw["artifacts"]["booster"]["bytes"] = len(garbage)

    factories.rewrite_meta(model_dir, fix_hash)
    _assert_refused_and_v1_serves(client, factories, "cannot be served")


def test_reload_hash_mismatch_keeps_old_model(
    client: TestClient, model_dir: Path, booster_v2: Any, factories: Any
) -> None:
    assert client.get("/ready").status_code == 200
    factories.write_version(model_dir, "v2", booster_v2)
    factories.rewrite_meta(model_dir, lambda raw: raw["artifacts"]["reference"].update(sha256="0" * 64))
    _assert_refused_and_v1_serves(client, factories, "sha256")


def test_reload_feature_mismatch_keeps_old_model(
    client: TestClient, model_dir: Path, booster_v2: Any, factories: Any
) -> None:
    assert client.get("/ready").status_code == 200
    features = ["amount", "hour", "merchant_category", "distance_from_home", "card_age_days"]
    factories.write_version(model_dir, "v2", booster_v2, features=features)
    _assert_refused_and_v1_serves(client, factories, "card_age_days")


def test_reload_missing_model_keeps_old_model(client: TestClient, model_dir: Path, factories: Any) -> None:
    assert client.get("/ready").status_code == 200
    (model_dir / "meta.json").unlink()
    _assert_refused_and_v1_serves(client, factories, "does not exist")


def test_reload_missing_artifact_keeps_old_model(
    client: TestClient, model_dir: Path, booster_v2: Any, factories: Any
) -> None:
    assert client.get("/ready").status_code == 200
    factories.write_version(model_dir, "v2", booster_v2)
    (model_dir / "versions" / "v2" / "reference.parquet").unlink()
    _assert_refused_and_v1_serves(client, factories, "missing")


def test_reload_failure_is_counted_in_metrics(client: TestClient, model_dir: Path, factories: Any) -> None:
    assert client.get("/ready").status_code == 200
    (model_dir / "meta.json").unlink()
    client.post("/reload-model", headers=factories.auth())
    assert 'fraud_model_reloads_total{result="failure"} 1.0' in client.get("/metrics").text


# -- reload under load, on a real server -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def live_server(
    model_dir: Path, booster_v2: Any, make_settings: Callable[..., Any], factories: Any
) -> Iterator[str]:
    """uvicorn on 127.0.0.1 in a thread, serving v1, with v2 written beside it; stopped afterwards."""
    factories.write_version(model_dir, "v2", booster_v2, promote=False)
    app = create_app(make_settings(model_dir))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        assert not thread.is_alive()


def test_reload_under_concurrent_predictions_never_fails(
    live_server: str, model_dir: Path, factories: Any
) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as admin:
        assert admin.get("/ready").json()["model_version"] == "v1"
    stop = threading.Event()
    versions: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def hammer(payload: dict[str, Any]) -> None:
        with httpx.Client(base_url=live_server, timeout=30) as http:
            for _ in range(5000):  # bounded, in case stop is never set
                if stop.is_set():
                    return
                response = http.post("/predict", json=payload)
                with lock:
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                    elif response.json()["is_fraud"] and not response.json()["reasons"]:
                        failures.append(f"flagged without reasons: {response.text}")
                    else:
                        versions[response.json()["model_version"]] += 1

    workers = [
        threading.Thread(target=hammer, args=(payload,))
        for payload in (factories.valid(), factories.fraud(), factories.valid(), factories.fraud())
    ]
    for worker in workers:
        worker.start()
    expected = []
    with httpx.Client(base_url=live_server, timeout=30) as admin:
        for swap in range(6):
            time.sleep(0.15)
            target = "v2" if swap % 2 == 0 else "v1"
            factories.promote_version(model_dir, target)
            response = admin.post("/reload-model", headers=factories.auth())
            assert response.status_code == 200, response.text
            expected.append((response.json()["old_version"], response.json()["new_version"]))
        time.sleep(0.15)
    stop.set()
    for worker in workers:
        worker.join(timeout=60)
    assert expected == [("v1", "v2"), ("v2", "v1")] * 3
    assert failures == []
    assert set(versions) == {"v1", "v2"}
    assert sum(versions.values()) > 100


def test_reload_directory_replaced_wholesale_is_verified(
    client: TestClient, model_dir: Path, tmp_path: Path, booster_v2: Any, factories: Any
) -> None:
    assert client.get("/ready").status_code == 200
    other = tmp_path / "other"
    factories.write_version(other, "v2", booster_v2)
    shutil.copytree(other / "versions" / "v2", model_dir / "versions" / "v2")
    factories.promote_version(model_dir, "v2")
    response = client.post("/reload-model", headers=factories.auth())
    assert response.status_code == 200
    assert response.json()["new_version"] == "v2"
