"""service.main: CORS, request ids, OpenAPI docs, and what importing the service costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.routes import predict


def test_app_cors_closed_by_default(client: TestClient) -> None:
    response = client.options(
        "/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_app_cors_allows_only_configured_origins(
    model_dir: Path, make_client: Callable[..., TestClient], factories: Any
) -> None:
    client = make_client(model_dir, cors_origins=["https://app.example"])
    allowed = client.post("/predict", json=factories.valid(), headers={"Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = client.post("/predict", json=factories.valid(), headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_app_cors_star_only_when_set(model_dir: Path, make_client: Callable[..., TestClient]) -> None:
    client = make_client(model_dir, cors_origins=["*"])
    response = client.get("/health", headers={"Origin": "https://anyone.example"})
    assert response.headers["access-control-allow-origin"] == "*"


def test_app_request_id_generated_and_echoed(client: TestClient) -> None:
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    # A header that could inject into logs is replaced, not echoed.
    assert client.get("/health", headers={"X-Request-ID": "bad id\t"}).headers["x-request-id"] != "bad id\t"


def test_app_unknown_route_is_404_json(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_app_openapi_documents_examples_descriptions_and_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    transaction = schema["components"]["schemas"]["Transaction"]
    assert transaction["properties"]["amount"]["exclusiveMinimum"] == 0
    assert transaction["properties"]["hour"]["maximum"] == 23
    assert "EUR" in transaction["properties"]["amount"]["description"]
    assert transaction["examples"][0]["amount"] == 150.0
    predict = schema["paths"]["/predict"]["post"]
    assert {"200", "422", "503"} <= set(predict["responses"])
    assert {"200", "413", "422", "503"} <= set(schema["paths"]["/predict/batch"]["post"]["responses"])
    assert {"200", "401", "403", "409"} <= set(schema["paths"]["/reload-model"]["post"]["responses"])
    for path in ("/health", "/ready", "/model", "/metrics", "/predict", "/predict/batch", "/reload-model"):
        operation = next(iter(schema["paths"][path].values()))
        assert operation.get("description") or operation.get("summary"), path
    assert client.get("/docs").status_code == 200


def test_app_predict_is_the_first_route_of_the_app_router_itself(client: TestClient) -> None:
    # Matched first, and not behind an included-router node, which would resolve each request twice
    # (service.api.routing).
    assert client.app.router.routes[0] is predict.direct_router.routes[0]  # type: ignore[attr-defined]


IMPORT_PROBE = """
import json, sys
from service.config import Settings
from service.main import create_app
from fastapi.testclient import TestClient
app = create_app(Settings(model_dir=sys.argv[1]))
with TestClient(app) as client:
    plain = client.post("/predict", json=json.loads(sys.argv[2]))
    assert plain.status_code == 200 and plain.json()["reasons"] is None, plain.text
    flagged = client.post("/predict", json=json.loads(sys.argv[3]))
    assert flagged.status_code == 200, flagged.text
    assert flagged.json()["is_fraud"] and flagged.json()["reasons"], flagged.text
    batch = client.post("/predict/batch?explain=true", json={"transactions": [json.loads(sys.argv[2])] * 3})
    assert batch.status_code == 200, batch.text
    assert all(p["reasons"] is not None for p in batch.json()["predictions"]), batch.text
heavy = ("pandas", "sklearn", "scipy", "xgboost", "pyarrow", "matplotlib")
heavy = sorted(m for m in heavy if m in sys.modules)
print("HEAVY " + json.dumps(heavy))
"""


def run_probe(probe: str, mark: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``probe`` in a fresh interpreter; the JSON it printed after ``mark``."""
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    # The service's own log lines share stdout; they may be written after the probe's line.
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(mark + " ")]
    return json.loads(line.removeprefix(mark + " "))


def test_app_import_scoring_and_reasons_are_light(model_dir: Path, factories: Any) -> None:
    # Reason codes included: a flagged /predict and ?explain=true import nothing heavy either.
    transactions = json.dumps(factories.valid()), json.dumps(factories.fraud())
    assert run_probe(IMPORT_PROBE, "HEAVY", str(model_dir), *transactions) == []


def test_app_lambda_handler_import_is_light() -> None:
    probe = (
        "import json, sys; import service.lambda_handler; "
        "print(json.dumps(sorted(m for m in ('pandas','sklearn','scipy','xgboost') if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout.strip()) == []


TELEMETRY_PROBE = """
import json, sys
from opentelemetry import trace
from fastapi.testclient import TestClient

spans = []

class Tracer(trace.NoOpTracer):
    def start_span(self, name, *args, **kwargs):
        spans.append(name)
        return super().start_span(name, *args, **kwargs)

class Provider(trace.TracerProvider):
    def get_tracer(self, *args, **kwargs):
        return Tracer()

trace.set_tracer_provider(Provider())  # as an OpenTelemetry SDK set up by the operator would
from service.config import Settings
from service.main import create_app
app = create_app(Settings(model_dir=sys.argv[1]))
with TestClient(app) as client:
    assert client.post("/predict", json=json.loads(sys.argv[2])).status_code == 200
print("SPANS " + json.dumps(spans))
"""


@pytest.mark.parametrize(("setting", "spans"), [(None, []), ("false", []), ("true", ["POST"])])
def test_app_fastapi_telemetry_only_when_set(
    model_dir: Path, factories: Any, setting: str | None, spans: list[str]
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "FASTAPI_TELEMETRY"}
    if setting is not None:
        env["FASTAPI_TELEMETRY"] = setting
    assert (
        run_probe(TELEMETRY_PROBE, "SPANS", str(model_dir), json.dumps(factories.valid()), env=env) == spans
    )


@pytest.mark.slow
@pytest.mark.parametrize("stale_warmup", [None, "true"])
def test_app_python_dash_m_service_serves_on_port(
    model_dir: Path, factories: Any, stale_warmup: str | None
) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "MODEL_DIR": str(model_dir)}
    env.pop("ADMIN_TOKEN", None)
    env.pop("EXPLAIN_WARMUP", None)
    if stale_warmup is not None:
        # A variable of earlier releases, still set by an operator: ignored, never a failed start.
        env["EXPLAIN_WARMUP"] = stale_warmup
    process = subprocess.Popen(
        [sys.executable, "-m", "service"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/predict", json=factories.valid(), timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["model_version"] == "v1"
        flagged = httpx.post(f"http://127.0.0.1:{port}/predict", json=factories.fraud(), timeout=5)
        assert flagged.status_code == 200 and flagged.json()["reasons"]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "service.access"]
    assert access and access[-1]["route"] == "/predict" and access[-1]["status"] == 200
