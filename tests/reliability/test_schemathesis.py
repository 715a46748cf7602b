"""Property-based tests generated from the OpenAPI schema, against the real service on 127.0.0.1.

``schemathesis run --checks all`` sends at least 1,000 generated requests to each scoring operation
(valid ones, and invalid ones: wrong types, missing fields, random bytes, odd headers), and to
``/reload-model`` with and without the admin token. Every check must pass: no 5xx, every status
code documented, every body matching its documented schema and content type, invalid data refused,
valid data accepted, auth not ignorable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.service_support import ADMIN_TOKEN, PROJECT, LiveService, live_service, model_dir_with

EXAMPLES = 1000
SEED = 20261203
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
ARTIFACTS = PROJECT / "test-artifacts" / "reliability"
"""Where each run's summary (time, cases per operation) is written, for docs/reliability.md."""


def _run(service: LiveService, report_dir: Path, *options: str) -> tuple[dict[str, Any], Counter[str]]:
    """One ``schemathesis run``; returns its JSON report and the test cases generated per operation."""
    report_dir.mkdir(parents=True)
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{service.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--no-color",
        "--request-timeout",
        "60",
        "--report",
        "json,ndjson",
        "--report-dir",
        str(report_dir),
        "--report-json-path",
        str(report_dir / "report.json"),
        "--report-ndjson-path",
        str(report_dir / "events.ndjson"),
        *options,
    ]
    # cwd: schemathesis keeps its hypothesis database under the working directory.
    result = subprocess.run(
        command, cwd=report_dir, capture_output=True, text=True, timeout=1800, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    report: dict[str, Any] = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    cases: Counter[str] = Counter()
    for line in (report_dir / "events.ndjson").read_text(encoding="utf-8").splitlines():
        event = json.loads(line) if line.strip() else {}
        finished = event.get("ScenarioFinished")
        if finished and "recorder" in finished:
            cases[finished["recorder"]["label"]] += len(finished["recorder"].get("cases") or {})
    summary = {
        "options": [option for option in options if ADMIN_TOKEN not in option],
        "running_time_s": round(report["running_time"], 1),
        "test_cases": report["test_cases"],
        "cases_per_operation": dict(cases),
        "failures": len(report["failures"]),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"schemathesis-{report_dir.name}.json").write_text(
        json.dumps(summary, indent=2) + "\n", encoding="utf-8"
    )
    return report, cases


def _assert_clean(report: dict[str, Any]) -> None:
    assert report["exit_code"] == 0
    assert report["complete"] is True
    assert report["failures"] == []
    assert report["errors"] == []
    assert report["test_cases"]["with_failures"] == 0
    assert report["test_cases"]["errored"] == 0


def _assert_no_server_errors_logged(service: LiveService) -> None:
    lines = service.log_lines()
    access = [line for line in lines if line.get("logger") == "service.access"]
    assert access, "the service logged no requests"
    assert [line for line in access if line["status"] >= 500] == []
    assert [line for line in lines if line.get("level") == "ERROR" or "exc" in line] == []


@pytest.mark.slow
def test_schemathesis_all_operations_with_admin_token(tmp_path: Path) -> None:
    model_dir = model_dir_with(tmp_path, "v1")
    # A high reload limit: here every generated /reload-model call is meant to reach the handler.
    with live_service(model_dir, tmp_path / "service.log", RELOAD_RATE_LIMIT="1000000") as service:
        report, cases = _run(
            service, tmp_path / "with-token", "--header", f"Authorization: Bearer {ADMIN_TOKEN}"
        )
        _assert_no_server_errors_logged(service)
    _assert_clean(report)
    assert report["operations"]["tested"] == report["operations"]["total"] == 7
    assert cases["POST /predict"] >= EXAMPLES
    assert cases["POST /predict/batch"] >= EXAMPLES
    # The operations without inputs have only a handful of distinct requests to generate.
    assert set(cases) == {
        "POST /predict",
        "POST /predict/batch",
        "POST /reload-model",
        "GET /health",
        "GET /ready",
        "GET /model",
        "GET /metrics",
    }


@pytest.mark.slow
def test_schemathesis_reload_model_without_admin_token(tmp_path: Path) -> None:
    model_dir = model_dir_with(tmp_path, "v1")
    with live_service(model_dir, tmp_path / "service.log", RELOAD_RATE_LIMIT="1000000") as service:
        # No token: schemathesis generates the Authorization header itself, so every request is a
        # wrong, malformed or missing credential and must get a documented 401.
        report, cases = _run(service, tmp_path / "without-token", "--include-path", "/reload-model")
        _assert_no_server_errors_logged(service)
        # POST only: the unsupported-method check also sends GET, PUT, ... (answered 405).
        statuses = Counter(
            line["status"]
            for line in service.log_lines()
            if line.get("route") == "/reload-model" and line.get("method") == "POST"
        )
    _assert_clean(report)
    assert report["warnings"]["missing_auth"] == ["POST /reload-model"]
    assert cases["POST /reload-model"] >= EXAMPLES
    assert set(statuses) == {401}
    assert statuses[401] >= EXAMPLES
