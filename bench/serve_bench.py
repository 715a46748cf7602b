"""Benchmark of the scoring service against a bare FastAPI endpoint, on 127.0.0.1.

Measures, side by side in one run:
- single-row POST /predict throughput and latency percentiles at 16 connections (wrk), service vs
  bench/serve_baseline.py (same request/response models, no scoring), one uvicorn worker each;
- POST /predict/batch rows per second on 10,000-row batches;
- cold start: process start to first /predict answered, service vs baseline.

Usage: ``uv run --all-extras python -m bench.serve_bench [--duration 10] [--rounds 3]``.
Needs Debian's ``wrk``. Never part of pass/fail; results go to docs/service.md by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.artifacts import BOOSTER, META_FILE, REFERENCE, Artifact, DatasetInfo, ModelMeta
from service.features import FEATURE_NAMES, LABEL

TRANSACTION = {
    "amount": 150.0,
    "hour": 14,
    "merchant_category": 2,
    "distance_from_home": 5.0,
    "num_transactions_last_24h": 3,
}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def build_model_dir(root: Path, trees: int, depth: int) -> Path:
    """A model directory like the pipeline promotes: ``trees`` rounds of depth ``depth``."""
    import xgboost as xgb

    rng = np.random.default_rng(7)
    n = 50_000
    fraud = rng.random(n) < 0.02
    x = np.column_stack(
        [
            np.where(fraud, rng.lognormal(6, 1, n), rng.lognormal(3.8, 1, n)),
            np.where(fraud, rng.integers(0, 6, n), rng.integers(0, 24, n)),
            np.where(fraud, rng.integers(5, 10, n), rng.integers(0, 10, n)),
            np.where(fraud, rng.exponential(300, n), rng.exponential(15, n)),
            np.where(fraud, rng.poisson(9, n), rng.poisson(3, n)),
        ]
    ).astype(np.float32)
    y = np.where(rng.random(n) < 0.01, ~fraud, fraud).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": depth, "eta": 0.05, "subsample": 0.9, "seed": 7},
        xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES)),
        trees,
    )
    model = root / "model"
    folder = model / "versions" / "v1"
    folder.mkdir(parents=True)
    booster.save_model(str(folder / "booster.ubj"))
    (folder / "reference.bin").write_bytes(x[:1000].tobytes())
    artifacts = {}
    for role, name in ((BOOSTER, "booster.ubj"), (REFERENCE, "reference.bin")):
        payload = (folder / name).read_bytes()
        artifacts[role] = Artifact(
            path=f"versions/v1/{name}", sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload)
        )
    meta = ModelMeta(
        version="v1",
        trained_at=datetime.now(UTC).isoformat(),
        features=list(FEATURE_NAMES),
        label=LABEL,
        threshold=0.5,
        threshold_rule={"rule": "fixed"},
        metrics={},
        data=DatasetInfo(rows=n, fraud_rate=float(y.mean()), md5="bench", source="bench"),
        params={"n_estimators": trees, "max_depth": depth},
        libraries={"xgboost": xgb.__version__},
        artifacts=artifacts,
    )
    (folder / META_FILE).write_text(meta.to_json())
    shutil.copy(folder / META_FILE, model / META_FILE)
    return model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(app: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def first_answer(port: int, process: subprocess.Popen[bytes], started: float, timeout: float = 120) -> float:
    """Seconds from ``started`` to the first 200 from POST /predict."""
    body = json.dumps(TRANSACTION).encode()
    with httpx.Client(timeout=5) as client:
        while time.perf_counter() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError("server exited")
            try:
                response = client.post(
                    f"http://127.0.0.1:{port}/predict",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                if response.status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.005)
    raise TimeoutError("no answer")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    port: int, path: str, body_file: Path, seconds: int, connections: int, pid: int | None = None
) -> dict[str, float]:
    script = body_file.with_suffix(".lua")
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    script.write_text(WRK_SCRIPT.format(body=body_file))
    output = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu_after = cpu_seconds(pid) if pid is not None else 0.0
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    percentiles = {}
    for label in ("50%", "90%", "99%"):
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", output)
        assert match is not None, output
        value, unit = float(match.group(1)), match.group(2)
        percentiles[label] = value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return {
        "cpu_us_per_request": (cpu_after - cpu_before) / requests * 1e6 if pid is not None else 0.0,
        "rps": rps,
        "p50_ms": percentiles["50%"],
        "p90_ms": percentiles["90%"],
        "p99_ms": percentiles["99%"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="Seconds per wrk run.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of service and baseline.")
    parser.add_argument("--trees", type=int, default=300, help="Boosting rounds of the bench model.")
    parser.add_argument("--depth", type=int, default=4, help="max_depth of the bench model.")
    parser.add_argument("--cold-starts", type=int, default=5, help="Cold starts measured per app.")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get update && apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    results: dict[str, Any] = {"trees": args.trees, "depth": args.depth, "load_before": os.getloadavg()}
    try:
        model = build_model_dir(work, args.trees, args.depth)
        env = {**os.environ, "MODEL_DIR": str(model), "LOG_LEVEL": "WARNING"}
        env.pop("ADMIN_TOKEN", None)
        single = work / "single.json"
        single.write_text(json.dumps(TRANSACTION))
        rng = np.random.default_rng(1)
        rows = [
            {**TRANSACTION, "amount": float(a), "hour": int(h), "distance_from_home": float(d)}
            for a, h, d in zip(
                rng.lognormal(4, 1, 10_000),
                rng.integers(0, 24, 10_000),
                rng.exponential(20, 10_000),
                strict=True,
            )
        ]
        batch = work / "batch.json"
        batch.write_text(json.dumps({"transactions": rows}))

        apps = {"service": "service.main:app", "baseline": "bench.serve_baseline:app"}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in apps}
        servers = {}
        for name, target in apps.items():
            port = free_port()
            process = start(target, port, env)
            first_answer(port, process, time.perf_counter())
            servers[name] = (port, process)
        try:
            # Warm up: imports, the explainer thread, JIT-free but cache-warm.
            with httpx.Client(timeout=120) as client:
                port = servers["service"][0]
                client.post(f"http://127.0.0.1:{port}/predict?explain=true", json=TRANSACTION)
                client.post(
                    f"http://127.0.0.1:{port}/predict/batch",
                    content=batch.read_bytes(),
                    headers={"content-type": "application/json"},
                )
            for name in apps:
                wrk(servers[name][0], "/predict", single, 3, 16)
            for round_index in range(args.rounds):
                # Alternate the order so a drift in machine load does not favour one side.
                order = list(apps) if round_index % 2 == 0 else list(reversed(apps))
                for name in order:
                    port, process = servers[name]
                    runs[name].append(wrk(port, "/predict", single, args.duration, 16, process.pid))
            batch_run = wrk(servers["service"][0], "/predict/batch", batch, args.duration, 2)
        finally:
            for _, process in servers.values():
                stop(process)

        for name in apps:
            results[name] = {key: statistics.median(r[key] for r in runs[name]) for key in runs[name][0]}
            results[name]["runs"] = runs[name]
        # Ratios per round (service and baseline measured back to back), then their median: robust
        # to the load of a shared machine drifting between rounds.
        pairs = list(zip(runs["service"], runs["baseline"], strict=True))
        results["throughput_ratio"] = statistics.median(s["rps"] / b["rps"] for s, b in pairs)
        results["p99_ratio"] = statistics.median(s["p99_ms"] / b["p99_ms"] for s, b in pairs)
        # Server CPU per request: less sensitive to other processes than requests per second.
        results["cpu_ratio"] = statistics.median(
            s["cpu_us_per_request"] / b["cpu_us_per_request"] for s, b in pairs
        )
        results["batch"] = {**batch_run, "rows_per_s": batch_run["rps"] * 10_000}

        cold: dict[str, list[float]] = {"service": [], "service_no_warmup": [], "baseline": []}
        for _ in range(args.cold_starts):
            for name, target, extra in (
                ("service", apps["service"], {}),
                ("service_no_warmup", apps["service"], {"EXPLAIN_WARMUP": "false"}),
                ("baseline", apps["baseline"], {}),
            ):
                port = free_port()
                started = time.perf_counter()
                process = start(target, port, {**env, **extra})
                try:
                    cold[name].append(first_answer(port, process, started))
                finally:
                    stop(process)
        results["cold_start_s"] = {name: statistics.median(values) for name, values in cold.items()}
        results["cold_start_runs_s"] = cold
        results["cold_start_ratio"] = statistics.median(
            s / b for s, b in zip(cold["service"], cold["baseline"], strict=True)
        )
        results["cold_start_ratio_no_warmup"] = statistics.median(
            s / b for s, b in zip(cold["service_no_warmup"], cold["baseline"], strict=True)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
