"""Serving and cold-start benchmark of the scoring service, on 127.0.0.1 (docs/benchmarks.md).

One command runs everything and prints Markdown tables:

    uv run --locked --all-extras python -m bench.serve_bench

Side by side in one run, each app on one uvicorn worker, load from Debian's ``wrk``:

- single-row ``POST /predict`` at 16 and 64 connections: the service; the framework floor
  (bench/serve_baseline.py: the same request and response models, no scoring); the naive baseline
  (bench/serve_naive.py: a sync endpoint calling ``XGBClassifier.predict_proba`` on a joblib-loaded
  model per request, as the original did). Rounds are interleaved and the order rotates each round;
  ratios are taken within a round, then their median over the rounds is reported;
- ``POST /predict/batch`` with 1, 100, 1,000 and 10,000 rows: rows per second end to end;
- reason codes (numpy TreeSHAP, service/explain.py): ``/predict?explain=true`` against plain
  ``/predict`` on the same transaction, and a transaction the model flags, on one connection;
- cold start, process start to the first ``/predict`` answered: under uvicorn, and through the Lambda
  handler invoked in a fresh Python process with an API Gateway HTTP API (v2) event; service, floor
  and naive baseline, starts interleaved and paired;
- the ``serve`` extra's install size in a fresh venv (bench/install_size.py), and the service's and
  the floor's cold starts from that serve-only venv (the naive baseline needs scikit-learn, which it
  lacks).

Needs Debian's ``wrk`` and ``uv``. Never part of pass/fail. The figures go to docs/benchmarks.md by
hand; the JSON goes to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from bench import install_size
from bench.serve_naive import MODEL_ENV as NAIVE_MODEL_ENV
from service.artifacts import BOOSTER, META_FILE, REFERENCE, Artifact, DatasetInfo, ModelMeta
from service.features import FEATURE_NAMES, LABEL

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"

TRANSACTION = {
    "amount": 150.0,
    "hour": 14,
    "merchant_category": 2,
    "distance_from_home": 5.0,
    "num_transactions_last_24h": 3,
}
"""An everyday transaction: not flagged, so no reason codes unless ?explain=true."""
FLAGGED = {
    "amount": 2400.0,
    "hour": 3,
    "merchant_category": 8,
    "distance_from_home": 800.0,
    "num_transactions_last_24h": 12,
}
"""A transaction the bench model flags: its answer carries reason codes."""

APPS = {"service": "service.main:app", "floor": "bench.serve_baseline:app", "naive": "bench.serve_naive:app"}
LAMBDA_TARGETS = {
    "service": "service.lambda_handler:handler",
    "floor": "bench.serve_baseline:app",
    "naive": "bench.serve_naive:app",
}
BATCH_SIZES = (1, 100, 1_000, 10_000)

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""

# Run by `python -c` in a fresh process: import the handler (or wrap a bare app in Mangum, as
# service.lambda_handler does, lifespan off), answer one event, print the response, exit at once.
# The service logs to stdout, as on Lambda (CloudWatch reads it), so the child marks its answer.
RESPONSE_MARK = "LAMBDA-RESPONSE "
LAMBDA_CHILD = f"""
import importlib, json, os, sys, types
RESPONSE_MARK = {RESPONSE_MARK!r}
module_name, attribute = sys.argv[1].split(":")
target = getattr(importlib.import_module(module_name), attribute)
if attribute == "app":
    from mangum import Mangum
    target = Mangum(target, lifespan="off")
context = types.SimpleNamespace(
    function_name="bench", aws_request_id="bench", memory_limit_in_mb=1024,
    get_remaining_time_in_millis=lambda: 30000,
)
response = target(json.loads(sys.argv[2]), context)
sys.stdout.write(RESPONSE_MARK + json.dumps(response) + "\\n")
sys.stdout.flush()
os._exit(0)
"""


def api_gateway_v2_event(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event of the ``$default`` stage, as API Gateway sends it."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "host": "abc123.execute-api.eu-west-1.amazonaws.com",
            "user-agent": "curl/8.0",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "03/Dec/2026:16:00:00 +0000",
            "timeEpoch": 1796313600000,
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def synthetic_data(n: int = 50_000) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int_]]:
    """Rows shaped like the simulator's: 2% fraud, 1% label noise."""
    rng = np.random.default_rng(7)
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
    return x, y


def build_model_dir(
    root: Path, x: npt.NDArray[np.float32], y: npt.NDArray[np.int_], trees: int, depth: int
) -> Path:
    """A model directory like the pipeline promotes: ``trees`` rounds of depth ``depth``."""
    import xgboost as xgb

    # One thread: on a loaded 2-core machine OpenMP threads contend and training takes 30x longer.
    # The thread count is not saved with the model.
    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.05, "subsample": 0.9, "seed": 7}
    booster = xgb.train(
        {**params, "nthread": 1},
        xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES), nthread=1),
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
        data=DatasetInfo(rows=len(y), fraud_rate=float(y.mean()), md5="bench", source="bench"),
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


_log_readers: dict[int, subprocess.Popen[bytes]] = {}


def start(app: str, port: int, env: dict[str, str], python: str = sys.executable) -> subprocess.Popen[bytes]:
    """One uvicorn worker serving ``app``. Its stdout (the service's JSON log lines) goes into a pipe
    that another process reads, as Docker's, Render's and Lambda's log collection read it."""
    command = [python, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    try:
        process = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=reader.stdin, stderr=subprocess.DEVNULL
        )
    finally:
        reader.stdin.close()  # the server holds the write end now; cat ends when the server does
    _log_readers[process.pid] = reader
    return process


def first_answer(port: int, process: subprocess.Popen[bytes], started: float, timeout: float = 120) -> float:
    """Seconds from ``started`` to the first 200 from POST /predict."""
    body = json.dumps(TRANSACTION).encode()
    with httpx.Client(timeout=30) as client:
        while time.perf_counter() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
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
    reader = _log_readers.pop(process.pid, None)
    if reader is not None:
        reader.wait(timeout=20)


def lambda_cold_start(target: str, env: dict[str, str], python: str, log: Path) -> float:
    """Seconds from spawning a fresh Python process to the handler's response to one /predict event."""
    event = json.dumps(api_gateway_v2_event("/predict", TRANSACTION))
    with log.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            [python, "-c", LAMBDA_CHILD, target, event],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert process.stdout is not None
        for raw in process.stdout:
            if raw.startswith(RESPONSE_MARK.encode()):
                line = raw[len(RESPONSE_MARK) :]
                break
        else:
            line = b""
        elapsed = time.perf_counter() - started
        process.wait(timeout=60)
    if not line:
        raise RuntimeError(f"{target}: no response; stderr:\n{log.read_text()[-2000:]}")
    response = json.loads(line)
    if response.get("statusCode") != 200:
        raise RuntimeError(f"{target}: {response}")
    return elapsed


def save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    port: int, path: str, body_file: Path, seconds: int, connections: int, pid: int | None = None
) -> dict[str, float]:
    """One wrk run: requests/s, latency percentiles in ms, and the server's CPU per request."""
    script = body_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT.format(body=body_file))
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script)]
    output = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout
    cpu_after = cpu_seconds(pid) if pid is not None else 0.0
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    percentiles = {}
    for label in ("50%", "90%", "99%"):
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", output)
        assert match is not None, output
        value, unit = float(match.group(1)), match.group(2)
        percentiles[label] = value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50_ms": percentiles["50%"],
        "p90_ms": percentiles["90%"],
        "p99_ms": percentiles["99%"],
        "cpu_us_per_request": (cpu_after - cpu_before) / requests * 1e6 if pid is not None else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def rotated(names: Sequence[str], shift: int) -> list[str]:
    """``names`` starting at ``shift``: each app goes first in turn, so a load drift favours none."""
    shift %= len(names)
    return [*names[shift:], *names[:shift]]


def progress(message: str) -> None:
    """A progress line on stderr, with the time and the load: stdout carries only the tables."""
    print(f"{datetime.now(UTC):%H:%M:%S} {message} (load {load1()})", file=sys.stderr, flush=True)


def load1() -> float:
    """The 1-minute load average, as ``uptime`` prints it."""
    return round(os.getloadavg()[0], 2)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def paired(a: Iterable[float], b: Iterable[float], how: Callable[[float, float], float]) -> float:
    """Median over rounds of ``how(a, b)`` taken within each round."""
    return statistics.median(how(x, y) for x, y in zip(a, b, strict=True))


def machine() -> dict[str, Any]:
    memory = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    versions = {}
    for name in ("fastapi", "starlette", "uvicorn", "h11", "pydantic", "mangum", "numpy", "xgboost-cpu"):
        versions[name] = importlib.metadata.version(name)
    versions["scikit-learn (naive only)"] = importlib.metadata.version("scikit-learn")
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0]
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(int(memory.group(1)) / 1e6, 1) if memory else None,
        "cpu": cpu.group(1).strip() if cpu else platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.strip(),
        "packages": versions,
    }


def write_bodies(work: Path) -> dict[str, Path]:
    bodies = {"single": work / "single.json", "flagged": work / "flagged.json"}
    bodies["single"].write_text(json.dumps(TRANSACTION))
    bodies["flagged"].write_text(json.dumps(FLAGGED))
    rng = np.random.default_rng(1)
    n = max(BATCH_SIZES)
    rows = [
        {**TRANSACTION, "amount": float(a), "hour": int(h), "distance_from_home": float(d)}
        for a, h, d in zip(
            rng.lognormal(4, 1, n), rng.integers(0, 24, n), rng.exponential(20, n), strict=True
        )
    ]
    for size in BATCH_SIZES:
        bodies[f"batch{size}"] = work / f"batch{size}.json"
        bodies[f"batch{size}"].write_text(json.dumps({"transactions": rows[:size]}))
    return bodies


def check_answers(port: int, bodies: dict[str, Path]) -> None:
    """The service answers as the bench assumes: reasons only when asked for or flagged, batches whole."""
    url = f"http://127.0.0.1:{port}"
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=120) as client:
        explained = client.post(f"{url}/predict?explain=true", json=TRANSACTION).json()
        plain = client.post(f"{url}/predict", json=TRANSACTION).json()
        flagged = client.post(f"{url}/predict", json=FLAGGED).json()
        for size in BATCH_SIZES:
            response = client.post(
                f"{url}/predict/batch", content=bodies[f"batch{size}"].read_bytes(), headers=headers
            )
            response.raise_for_status()
            assert len(response.json()["predictions"]) == size
    # ?explain=true on an everyday transaction: reasons computed, and empty (none pushes towards fraud).
    if explained.get("reasons") is None or plain["is_fraud"] or plain.get("reasons") is not None:
        raise RuntimeError(f"unexpected answers: explain={explained} plain={plain}")
    if not flagged["is_fraud"] or not flagged.get("reasons"):
        raise RuntimeError(
            f"the FLAGGED transaction is not flagged with reasons by the bench model: {flagged}"
        )


def measure_serving(env: dict[str, str], bodies: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """Throughput and latency: single rows vs floor vs naive, batches, and reason codes."""
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    single: dict[int, dict[str, list[dict[str, float]]]] = {
        c: {name: [] for name in APPS} for c in args.connections
    }
    batch: dict[int, list[dict[str, float]]] = {size: [] for size in BATCH_SIZES}
    explain_variants = {
        "plain": ("/predict", bodies["single"]),
        "explain=true": ("/predict?explain=true", bodies["single"]),
        "flagged": ("/predict", bodies["flagged"]),
    }
    explain: dict[str, list[dict[str, float]]] = {name: [] for name in explain_variants}
    loads: list[float] = []
    try:
        for name, target in APPS.items():
            port = free_port()
            process = start(target, port, env)
            first_answer(port, process, time.perf_counter())
            servers[name] = (port, process)
        service_port, service_process = servers["service"]
        check_answers(service_port, bodies)
        for port, _ in servers.values():  # warm caches and the naive's thread pool
            for connections in args.connections:
                wrk(port, "/predict", bodies["single"], 2, connections)
        for round_index in range(args.rounds):
            loads.append(load1())
            for connections in args.connections:
                for name in rotated(list(APPS), round_index):
                    port, process = servers[name]
                    run = wrk(port, "/predict", bodies["single"], args.duration, connections, process.pid)
                    single[connections][name].append(run)
            for size in rotated(BATCH_SIZES, round_index):
                run = wrk(
                    service_port,
                    "/predict/batch",
                    bodies[f"batch{size}"],
                    args.duration,
                    args.batch_connections,
                    service_process.pid,
                )
                batch[size].append({**run, "rows_per_s": run["rps"] * size})
            for variant in rotated(list(explain_variants), round_index):
                path, body = explain_variants[variant]
                explain[variant].append(wrk(service_port, path, body, args.duration, 1, service_process.pid))
            progress(f"serving round {round_index + 1}/{args.rounds} done")
        loads.append(load1())
    finally:
        for _, process in servers.values():
            stop(process)

    results: dict[str, Any] = {"load1_per_round": loads, "single": {}, "batch": {}, "explain": {}}
    for connections, by_app in single.items():
        section: dict[str, Any] = {name: {**medians(runs), "runs": runs} for name, runs in by_app.items()}
        service, floor, naive = by_app["service"], by_app["floor"], by_app["naive"]
        rps = [r["rps"] for r in service]
        section["throughput_vs_floor"] = paired(rps, [r["rps"] for r in floor], lambda a, b: a / b)
        section["p99_vs_floor"] = paired(
            [r["p99_ms"] for r in service], [r["p99_ms"] for r in floor], lambda a, b: a / b
        )
        section["throughput_vs_naive"] = paired(rps, [r["rps"] for r in naive], lambda a, b: a / b)
        section["cpu_vs_floor"] = paired(
            [r["cpu_us_per_request"] for r in service],
            [r["cpu_us_per_request"] for r in floor],
            lambda a, b: a / b,
        )
        # The naive's thread pool and OpenMP threads get more of a loaded machine's CPU than the
        # single-threaded service, so its throughput flatters it; CPU per request does not.
        section["naive_cpu_vs_service"] = paired(
            [r["cpu_us_per_request"] for r in naive],
            [r["cpu_us_per_request"] for r in service],
            lambda a, b: a / b,
        )
        results["single"][str(connections)] = section
    for size, runs in batch.items():
        results["batch"][str(size)] = {**medians(runs), "runs": runs}
    for variant, runs in explain.items():
        results["explain"][variant] = {**medians(runs), "runs": runs}
    for variant in ("explain=true", "flagged"):
        results["explain"][f"{variant} - plain"] = {
            key: paired(
                [r[key] for r in explain[variant]], [r[key] for r in explain["plain"]], lambda a, b: a - b
            )
            for key in ("p50_ms", "p99_ms", "cpu_us_per_request")
        }
    return results


def measure_cold_starts(
    env: dict[str, str], work: Path, count: int, serve_python: str | None
) -> dict[str, Any]:
    """Process start to first /predict answered, interleaved and paired across apps."""
    variants: dict[str, Callable[[], float]] = {}

    def uvicorn_start(target: str, extra: dict[str, str], python: str) -> Callable[[], float]:
        def run() -> float:
            port = free_port()
            started = time.perf_counter()
            process = start(target, port, {**env, **extra}, python)
            try:
                return first_answer(port, process, started)
            finally:
                stop(process)

        return run

    def lambda_start(target: str, python: str) -> Callable[[], float]:
        return lambda: lambda_cold_start(target, env, python, work / "lambda-stderr.log")

    pythons = {"dev env": sys.executable}
    if serve_python is not None:
        pythons["serve venv"] = serve_python
    for where, python in pythons.items():
        for name, target in APPS.items():
            if name == "naive" and where == "serve venv":
                continue  # needs scikit-learn and joblib, which the serve extra leaves out
            variants[f"uvicorn | {where} | {name}"] = uvicorn_start(target, {}, python)
        for name, target in LAMBDA_TARGETS.items():
            if name == "naive" and where == "serve venv":
                continue
            variants[f"lambda | {where} | {name}"] = lambda_start(target, python)
    for run in variants.values():  # one discarded start each: page cache and bytecode warm
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    loads = []
    for index in range(count):
        loads.append(load1())
        for name in rotated(list(variants), index):
            times[name].append(variants[name]())
    loads.append(load1())
    results: dict[str, Any] = {
        "load1_per_round": loads,
        "runs_s": times,
        "median_s": {},
        "vs_floor": {},
        "vs_naive": {},
    }
    for name, values in times.items():
        results["median_s"][name] = statistics.median(values)
        runtime, where, app = name.split(" | ")
        floor = times[f"{runtime} | {where} | floor"]
        results["vs_floor"][name] = paired(values, floor, lambda a, b: a / b)
        naive = times.get(f"{runtime} | {where} | naive")
        if naive is not None:
            results["vs_naive"][name] = paired(values, naive, lambda a, b: a / b)
    return results


def measure_install(work: Path) -> tuple[dict[str, Any], str]:
    venv = work / "serve-venv"
    installed = install_size.build(venv, sys.executable)
    sizes = install_size.measure(venv)
    return {"installed": installed, **sizes}, str(venv / "bin" / "python")


def _status(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(results: dict[str, Any]) -> tuple[str, str]:
    """The Markdown of docs/benchmarks.md: its "Serving" part, and its "Cold start and install size" part."""
    m = results["machine"]
    serving = results["serving"]
    loads = serving["load1_per_round"]
    lines = [
        f"Run {results['started_at']} to {results['finished_at']} UTC; {m['cores']} cores ({m['cpu']}), "
        f"{m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}, {m['wrk']}; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f". Bench model: {results['trees']} trees of depth {results['depth']}. "
        f"{results['rounds']} interleaved rounds of {results['duration']} s per wrk run.",
        "",
        f"Load average (1 min) at the start of each serving round: {', '.join(map(str, loads))}",
        "",
        "| connections | app | req/s | p50 ms | p90 ms | p99 ms | server CPU us/req |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for connections, section in serving["single"].items():
        for name in APPS:
            r = section[name]
            lines.append(
                f"| {connections} | {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['cpu_us_per_request']:,.0f} |"
            )
    lines += [
        "",
        "| connections | /predict ÷ floor, req/s (target ≥ 0.8) | p99 ÷ floor (target ≤ 2) "
        "| /predict ÷ naive, req/s (target ≥ 3) | server CPU/req ÷ floor's | naive's CPU/req ÷ service's |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for connections, s in serving["single"].items():
        lines.append(
            f"| {connections} | {s['throughput_vs_floor']:.2f} ({_status(s['throughput_vs_floor'] >= 0.8)}) "
            f"| {s['p99_vs_floor']:.2f} ({_status(s['p99_vs_floor'] <= 2)}) "
            f"| {s['throughput_vs_naive']:.2f} ({_status(s['throughput_vs_naive'] >= 3)}) "
            f"| {s['cpu_vs_floor']:.2f} | {s['naive_cpu_vs_service']:.2f} |"
        )
    lines += [
        "",
        f"`/predict/batch`, {results['batch_connections']} connections:",
        "",
        "| rows per batch | batches/s | rows/s | p50 ms | p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, r in serving["batch"].items():
        lines.append(
            f"| {int(size):,} | {r['rps']:,.1f} | {r['rows_per_s']:,.0f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} |"
        )
    top = serving["batch"][str(max(BATCH_SIZES))]["rows_per_s"]
    lines += [
        "",
        f"Target ≥ 100,000 rows/s at 10,000 rows: {top:,.0f} ({_status(top >= 100_000)}).",
        "",
        "Reason codes, one connection:",
        "",
        "| request | req/s | p50 ms | p99 ms | server CPU us/req |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant in ("plain", "explain=true", "flagged"):
        r = serving["explain"][variant]
        lines.append(
            f"| {variant} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['cpu_us_per_request']:,.0f} |"
        )
    for variant in ("explain=true - plain", "flagged - plain"):
        r = serving["explain"][variant]
        lines.append(
            f"| cost: {variant} (paired) | | {r['p50_ms']:+.2f} | {r['p99_ms']:+.2f} "
            f"| {r['cpu_us_per_request']:+,.0f} |"
        )
    serving_part = "\n".join(lines)
    cold = results["cold_start"]
    lines = [
        f"Run {results['started_at']} to {results['finished_at']} UTC: the same run and machine as "
        "the serving figures.",
        "",
        f"Cold start, {results['cold_starts']} interleaved starts each; load average at the start of "
        f"each round: {', '.join(map(str, cold['load1_per_round']))}",
        "",
        "| runtime | environment | app | median s | ÷ floor (paired; target ≤ 1.5 for the service) "
        "| ÷ naive (paired) |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for name, value in cold["median_s"].items():
        runtime, where, app = name.split(" | ")
        ratio = cold["vs_floor"][name]
        mark = f" ({_status(ratio <= 1.5)})" if app.startswith("service") else ""
        naive = cold["vs_naive"].get(name)
        versus_naive = "n/a (no scikit-learn)" if naive is None else f"{naive:.2f}"
        lines.append(f"| {runtime} | {where} | {app} | {value:.2f} | {ratio:.2f}{mark} | {versus_naive} |")
    install = results.get("install")
    if install is not None:
        site, venv = install["site_packages"], install["venv"]
        total, bytecode, tests = site["total"], site["bytecode"], site["tests"]
        lines += [
            "",
            f"Install size of the serve extra in a fresh venv ({len(install['installed'])} distributions, "
            "locked versions, bytecode compiled as in the Docker image); MB = 10^6 bytes, `du`:",
            "",
            "| what | MB |",
            "| --- | ---: |",
            f"| whole venv (target < 250) | {venv['disk'] / 1e6:.1f} ({_status(venv['disk'] < 250e6)}) |",
            f"| site-packages without `__pycache__` | {(total['disk'] - bytecode['disk']) / 1e6:.1f} |",
            f"| site-packages without packages' test suites | {(total['disk'] - tests['disk']) / 1e6:.1f} |",
        ]
        for name, tally in list(install["distributions"].items())[:5]:
            lines.append(f"| {name} | {tally['total']['disk'] / 1e6:.1f} |")
    return serving_part, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="Seconds per wrk run.")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds of every serving run.")
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[16, 64], help="wrk connections, single-row runs."
    )
    parser.add_argument("--batch-connections", type=int, default=2, help="wrk connections, batch runs.")
    parser.add_argument("--trees", type=int, default=300, help="Boosting rounds of the bench model.")
    parser.add_argument("--depth", type=int, default=4, help="max_depth of the bench model.")
    parser.add_argument("--cold-starts", type=int, default=5, help="Cold starts measured per variant.")
    parser.add_argument("--skip-install", action="store_true", help="No serve-only venv: no install size.")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="Where to write the JSON (default: bench/results/serve-<UTC>.json).",
    )
    args = parser.parse_args()
    for tool in ("wrk", "uv"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (wrk: apt-get install -y wrk)")
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "trees": args.trees,
        "depth": args.depth,
        "rounds": args.rounds,
        "duration": args.duration,
        "batch_connections": args.batch_connections,
        "cold_starts": args.cold_starts,
    }
    path = args.json or RESULTS_DIR / f"serve-{started.strftime('%Y%m%dT%H%M')}.json"
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        from bench.serve_naive import save_model

        progress("training the bench models")
        x, y = synthetic_data()
        model = build_model_dir(work, x, y, args.trees, args.depth)
        naive_model = work / "naive.joblib"
        save_model(x, y, args.trees, args.depth, naive_model)
        env = {
            **os.environ,
            "MODEL_DIR": str(model),
            NAIVE_MODEL_ENV: str(naive_model),
            # The service runs as deployed: LOG_LEVEL=INFO, one JSON access line per request, on
            # stdout into a pipe another process reads (start()), LOG_FLUSH_INTERVAL at its
            # default. uvicorn's own access log is off in every app, as in the Dockerfile.
            "LOG_LEVEL": "INFO",
        }
        env.pop("ADMIN_TOKEN", None)
        bodies = write_bodies(work)
        serve_python = None
        if not args.skip_install:
            progress("building the serve-only venv")
            results["install"], serve_python = measure_install(work)
        progress("serving")
        results["serving"] = measure_serving(env, bodies, args)
        save(results, path)  # kept even if the cold starts fail
        progress("cold starts")
        results["cold_start"] = measure_cold_starts(env, work, args.cold_starts, serve_python)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["finished_at"] = datetime.now(UTC).strftime("%H:%M")
    save(results, path)
    serving_part, cold_part = report(results)
    print(f"## Serving\n\n{serving_part}\n\n## Cold start and install size\n\n{cold_part}")
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
