"""CPU per ``POST /predict`` inside the app, without the network (docs/benchmarks.md).

    uv run --locked --all-extras python -m bench.app_cpu [--requests 20000] [--repeats 7] [--log-sink pipe]

Drives the ASGI app directly, one request after another on one event loop, as one keep-alive
connection would, and reads the process's CPU time around each batch of requests. What it leaves
out is what every app pays alike: uvicorn's HTTP parsing, the socket and the load generator. So it
isolates what the app itself costs a request, with far less noise than requests per second under
``wrk`` on a shared machine, and it can be pointed at an earlier commit's code to measure a fix
before and after (``PYTHONPATH=<worktree of that commit>``: the code under test is imported from
there, this file from here).

Two apps: the service (``service.main:create_app``, as deployed: ``LOG_LEVEL=INFO``, started through
its lifespan as uvicorn starts it, so its logging is set up from its own settings) serving
``--model-dir`` (the committed ``model/`` by default), and the framework floor
(``bench/serve_baseline.py``). The service's log lines go to ``/dev/null``, or with ``--log-sink
pipe`` into a pipe that another process (``cat``) reads, as a platform's log collection reads stdout:
then each ``write`` costs what it costs in production. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

from bench.serve_bench import TRANSACTION

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps(TRANSACTION).encode()  # the body bench.serve_bench sends to every app

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def _scope(path: str) -> Message:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
    }


async def _one(app: ASGIApp, path: str) -> int:
    status = 0
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(path), receive, send)
    return status


async def _measure(app: ASGIApp, requests: int, repeats: int, log_sink: TextIO) -> list[float]:
    lifespan = await _start(app)  # the service configures its logging here, from its settings
    _point_logs_at(log_sink)
    for _ in range(500):  # warm-up: the model loads on the first request
        if (status := await _one(app, "/predict")) != 200:
            raise SystemExit(f"warm-up request answered {status}, not 200")
    per_request_us = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(requests):
            await _one(app, "/predict")
        per_request_us.append((time.process_time() - start) / requests * 1e6)
    lifespan.cancel()
    return per_request_us


async def _start(app: ASGIApp) -> asyncio.Task[None]:
    """Run the app's lifespan startup, as uvicorn does before the first request."""
    messages: asyncio.Queue[Message] = asyncio.Queue()
    messages.put_nowait({"type": "lifespan.startup"})
    started = asyncio.get_running_loop().create_future()

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set_result(None)
        elif message["type"] == "lifespan.startup.failed":
            started.set_exception(SystemExit(f"the app failed to start: {message.get('message')}"))

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, messages.get, send))  # waits for a shutdown never sent
    await started
    return task


def _log_sink(kind: str) -> TextIO:
    """Where the service's log lines go: ``/dev/null``, or a pipe read by another process (``cat``),
    as Docker's, Render's and Lambda's log collection read a service's stdout."""
    if kind == "devnull":
        return open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    return open(reader.stdin.fileno(), "w", closefd=False)  # noqa: SIM115 - lives as long as the process


def _point_logs_at(sink: TextIO) -> None:
    for handler in logging.getLogger("service").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sink)


def _service_app(model_dir: Path) -> ASGIApp:
    os.environ["MODEL_DIR"] = str(model_dir)
    os.environ["LOG_LEVEL"] = "INFO"
    os.environ.pop("ADMIN_TOKEN", None)
    from service.main import create_app

    app: ASGIApp = create_app()
    return app


def _floor_app() -> ASGIApp:
    from bench.serve_baseline import app

    floor: ASGIApp = app
    return floor


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--app", choices=["service", "floor"], default="service")
    parser.add_argument("--requests", type=int, default=20_000, help="Requests per measured batch.")
    parser.add_argument("--repeats", type=int, default=7, help="Measured batches; the median is reported.")
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "model")
    parser.add_argument(
        "--log-sink",
        choices=["devnull", "pipe"],
        default="devnull",
        help="Where the service's log lines go: /dev/null, or a pipe read by another process (as deployed).",
    )
    args = parser.parse_args()
    app = _service_app(args.model_dir) if args.app == "service" else _floor_app()
    runs = asyncio.run(_measure(app, args.requests, args.repeats, _log_sink(args.log_sink)))
    import service

    print(
        json.dumps(
            {
                "app": args.app,
                "code": str(Path(service.__file__).resolve().parent.parent),
                "requests": args.requests,
                "log_sink": args.log_sink,
                "cpu_us_per_request": round(statistics.median(runs), 1),
                "runs": [round(r, 1) for r in runs],
                "python": sys.version.split()[0],
                "load_1min": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
