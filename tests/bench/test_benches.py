"""The benchmarks' documented commands, run small: they never decide pass or fail on figures, but they
must run on a clean clone and measure what docs/benchmarks.md says they measure."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench.serve_bench import FLAGGED, TRANSACTION, synthetic_data
from service.config import PROJECT_ROOT
from service.features import FEATURE_NAMES

pytestmark = pytest.mark.slow

STEPS = ["extract", "validate", "drift", "train", "evaluate", "promote"]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _openapi_predict(app: Any) -> tuple[Any, dict[str, Any]]:
    """The request body and 200 response schemas of POST /predict, and every model they reference."""
    schema = TestClient(app).get("/openapi.json").json()
    operation = schema["paths"]["/predict"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    return (body, answer), schema["components"]["schemas"]


def test_floor_and_naive_apps_speak_the_services_request_and_response_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import serve_baseline, serve_naive
    from service.main import create_app

    x, y = synthetic_data(2000)
    model = tmp_path / "naive.joblib"
    serve_naive.save_model(x, y, 5, 3, model)
    naive_model = joblib.load(model)
    monkeypatch.setattr(serve_naive, "_model", naive_model)

    service_paths, service_models = _openapi_predict(create_app())
    for app in (serve_baseline.app, serve_naive.app):
        paths, models = _openapi_predict(app)
        assert paths == service_paths
        for name in ("Transaction", "Prediction"):
            assert models[name] == service_models[name]
        client = TestClient(app)
        for body in (TRANSACTION, FLAGGED):
            answer = client.post("/predict", json=body)
            assert answer.status_code == 200
            assert set(answer.json()) == {
                "is_fraud",
                "fraud_probability",
                "model_version",
                "threshold",
                "reasons",
            }
        bad = client.post("/predict", json={**TRANSACTION, "amount": -1})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "amount"]
    # The naive app really scores: its probability is the wrapper's own.
    naive = TestClient(serve_naive.app).post("/predict", json=FLAGGED).json()
    row = np.array([[float(FLAGGED[name]) for name in FEATURE_NAMES]], dtype=np.float32)
    assert naive["fraud_probability"] == pytest.approx(float(naive_model.predict_proba(row)[0, 1]))


def test_pipeline_bench_runs_both_pipelines_side_by_side_and_plots(tmp_path: Path) -> None:
    out, plot = tmp_path / "pipeline.json", tmp_path / "scale.png"
    done = _run(
        [
            "bench.pipeline_bench",
            "--rows",
            "10000",
            "--repeats",
            "1",
            "--original-rows",
            "10000",
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--plot",
            str(plot),
        ],
        timeout=600,
    )
    assert "pipeline / original at 10,000 rows" in done.stdout
    results = json.loads(out.read_text())
    kinds = {entry["kind"]: entry for entry in results["entries"]}
    assert set(kinds) == {"pipeline", "original"}
    for entry in kinds.values():
        summary = entry["summary"]
        assert entry["rows"] == 10_000
        assert summary["decision"] == ["promoted"]
        assert list(summary["steps"]) == STEPS
        assert 0 < summary["run_seconds"] < summary["process_seconds"]
        assert summary["run_peak_rss_mb"] > 100
        assert 0.5 < summary["roc_auc"] <= 1
    assert 0 < results["ratios"]["10000"]["run_seconds"] < 10
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_serve_bench_measures_every_app_batch_size_and_cold_start(tmp_path: Path) -> None:
    assert shutil.which("wrk") is not None, "the serving bench needs Debian's wrk: apt-get install wrk"
    out = tmp_path / "serve.json"
    done = _run(
        [
            "bench.serve_bench",
            "--duration",
            "1",
            "--rounds",
            "1",
            "--connections",
            "16",
            "--trees",
            "30",
            "--cold-starts",
            "1",
            "--skip-install",
            "--json",
            str(out),
        ],
        timeout=900,
    )
    assert "## Serving" in done.stdout and "## Cold start and install size" in done.stdout
    results = json.loads(out.read_text())
    single = results["serving"]["single"]["16"]
    for app in ("service", "floor", "naive"):
        assert single[app]["rps"] > 0
        assert single[app]["socket_errors"] == 0
        assert 0 < single[app]["p50_ms"] <= single[app]["p99_ms"]
        assert single[app]["cpu_us_per_request"] > 0
    assert single["throughput_vs_floor"] == pytest.approx(single["service"]["rps"] / single["floor"]["rps"])
    batch = results["serving"]["batch"]
    assert sorted(batch, key=int) == ["1", "100", "1000", "10000"]
    for size, figures in batch.items():
        assert figures["rows_per_s"] == pytest.approx(figures["rps"] * int(size))
    explain = results["serving"]["explain"]
    assert {"plain", "explain=true", "flagged", "explain=true - plain", "flagged - plain"} <= set(explain)
    medians = results["cold_start"]["median_s"]
    for runtime in ("uvicorn", "lambda"):
        for app in ("service", "floor", "naive"):
            assert medians[f"{runtime} | dev env | {app}"] > 0
        assert results["cold_start"]["vs_floor"][f"{runtime} | dev env | floor"] == 1.0
