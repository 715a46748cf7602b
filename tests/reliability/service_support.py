"""Helpers of the service's reliability and security tests: model directories built with the service
tests' own factories (``tests/service/conftest.py``), in-process clients, and the real service
(``python -m service``) run as a subprocess on 127.0.0.1 with its JSON log lines kept in a file."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import xgboost as xgb
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from tests.service.conftest import (
    ADMIN_TOKEN,
    FRAUD_TRANSACTION,
    VALID_TRANSACTION,
    auth,
    promote_version,
    rewrite_meta,
    train_booster,
    write_version,
)

PROJECT = Path(__file__).resolve().parents[2]

__all__ = [
    "ADMIN_TOKEN",
    "FRAUD_TRANSACTION",
    "VALID_TRANSACTION",
    "auth",
    "promote_version",
    "rewrite_meta",
    "write_version",
]


@functools.cache
def booster(name: str) -> xgb.Booster:
    """The service tests' boosters (``booster_v1``, ``booster_v2`` there) plus two more, trained once."""
    recipes = {
        "v1": {"seed": 11, "rounds": 30, "depth": 3},
        "v2": {"seed": 23, "rounds": 60, "depth": 4},
        "v3": {"seed": 31, "rounds": 40, "depth": 3},
        "v4": {"seed": 47, "rounds": 50, "depth": 4},
    }
    return train_booster(**recipes[name])


def model_dir_with(root: Path, *versions: str) -> Path:
    """``root/model`` holding ``versions`` (first one promoted), in the contract's layout."""
    directory = root / "model"
    for index, version in enumerate(versions):
        write_version(directory, version, booster(version), promote=index == 0)
    return directory


def settings(model_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "prod",
        "model_dir": model_dir,
        "admin_token": ADMIN_TOKEN,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def client_of(model_dir: Path, **overrides: Any) -> Iterator[TestClient]:
    """An in-process client of the app; server exceptions become 500s, as a real server answers."""
    with TestClient(create_app(settings(model_dir, **overrides)), raise_server_exceptions=False) as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class LiveService:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        """The service's JSON log lines so far (other output, e.g. uvicorn's, is skipped)."""
        lines = []
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:  # a line being written as we read
                    continue
        return lines


@contextmanager
def live_service(model_dir: Path, log_path: Path, **env: str | None) -> Iterator[LiveService]:
    """``python -m service`` (one uvicorn worker) on 127.0.0.1 and a free port; stopped afterwards.

    ``env`` sets (or, with None, removes) environment variables of the service process.
    """
    port = free_port()
    environ = {
        **os.environ,
        "ENVIRONMENT": "prod",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MODEL_DIR": str(model_dir),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "LOG_LEVEL": "INFO",
    }
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=PROJECT, env=environ, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                # /health answers whether or not a model loads; it is the liveness probe.
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the service did not start (exit {process.poll()}):\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        yield LiveService(url=url, port=port, process=process, log_path=log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
