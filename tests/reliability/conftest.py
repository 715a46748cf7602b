"""Shared helpers of the fault tests: small, fast pipeline runs and a check that a registry, its
history and its data snapshot are one complete, consistent version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from pipeline import registry
from pipeline.dataset import PENDING_FILE, dvc_dir_md5, reconcile_dataset
from service.artifacts import HISTORY_FILE, META_FILE, VERSIONS_DIR, ModelMeta, parse_meta, read_meta, verify

PROJECT = Path(__file__).resolve().parents[2]

SMALL_RUN_ENV = {
    # Small runs whose gates always pass, so every uninterrupted run reaches promotion: a few
    # thousand rows with 10% fraud, 60 boosting rounds, and quality gates that accept any candidate
    # (the gates themselves are tested in tests/pipeline/).
    "PIPELINE_EXTRACT__FRAUD_RATE": "0.1",
    "PIPELINE_TRAIN__N_ESTIMATORS": "60",
    "PIPELINE_EVALUATE__MIN_ROC_AUC": "0.5",
    "PIPELINE_EVALUATE__MAX_REGRESSION": "1",
    "PIPELINE_DRIFT__REFERENCE_ROWS": "1000",
}
SMALL_ROWS = 3_000


def pipeline_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run whose model, data and reports live under ``root``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return {
        **base,
        **SMALL_RUN_ENV,
        "PIPELINE_MODEL_DIR": str(root / "model"),
        "PIPELINE_DATA_DIR": str(root / "data"),
        "PIPELINE_REPORTS_DIR": str(root / "reports"),
        **extra,
    }


def run_argv(seed: int, *extra: str) -> list[str]:
    return ["run", "--rows", str(SMALL_ROWS), "--seed", str(seed), "--force", *extra]


def cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Started:
    pid: int
    t: float
    """Unix time of the fork."""
    log: Path


class PreloadedCli:
    """``python -m pipeline`` with its imports done once (``cli_server.py``): one forked child per run."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.cli_server"],
            cwd=PROJECT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._read() == {"ready": True}

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout

    def _read(self) -> dict[str, object]:
        line = self._pipes()[1].readline()
        assert line, f"the CLI server exited with {self.process.poll()}"
        reply: dict[str, object] = json.loads(line)
        return reply

    def _send(self, request: dict[str, object]) -> dict[str, object]:
        stdin, _ = self._pipes()
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        return self._read()

    def start(self, argv: list[str], log: Path) -> Started:
        reply = self._send({"run": argv, "log": str(log)})
        return Started(int(str(reply["pid"])), float(str(reply["t"])), log)

    def wait(self, started: Started) -> int:
        return int(str(self._send({"wait": started.pid})["status"]))

    def close(self) -> None:
        stdin, _ = self._pipes()
        stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def preloaded_cli() -> Iterator[type[PreloadedCli]]:
    started: list[PreloadedCli] = []

    class Tracked(PreloadedCli):
        def __init__(self, env: dict[str, str]) -> None:
            super().__init__(env)
            started.append(self)

    yield Tracked
    for server in started:
        server.close()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root/model`` and ``root/data`` (lock file aside), for byte-identity checks."""
    files: dict[str, bytes] = {}
    for folder in ("model", "data"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and path.name != registry.LOCK_FILE:
                files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def served_version(root: Path) -> str | None:
    """What a reader of ``model/`` (the service) sees right now, verified; None before any promotion."""
    model_dir = root / "model"
    if not (model_dir / META_FILE).exists():
        return None
    meta = read_meta(model_dir)
    verify(model_dir, meta)
    return meta.version


def check_consistent(root: Path, scratch: Path) -> ModelMeta:
    """Recover a copy of ``root``'s registry and data the way the next run starts, and check that it
    is one complete version: meta.json verifies, the history ends at it, every kept version is
    complete, no leftovers remain, and data/ hashes to the md5 meta.json records (what ``dvc add``
    writes into data.dvc).

    The copy keeps ``root`` as the interrupted run left it, so the next run recovers it for real.
    """
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for folder in ("model", "data"):
        if (root / folder).exists():
            shutil.copytree(root / folder, scratch / folder)
    model_dir, data_dir = scratch / "model", scratch / "data"
    with registry.locked(model_dir):
        registry.recover(model_dir)
        meta = read_meta(model_dir)
        reconcile_dataset(data_dir, meta.data.md5)
    verify(model_dir, meta)
    entries = registry.history(model_dir)
    assert entries and entries[-1].version == meta.version, (meta.version, entries[-3:])
    for line in (model_dir / HISTORY_FILE).read_text(encoding="utf-8").splitlines():
        json.loads(line)
    kept = sorted((model_dir / VERSIONS_DIR).iterdir())
    assert [p.name for p in kept if p.name.startswith(".")] == []
    assert meta.version in {p.name for p in kept}
    for version_dir in kept:
        version_meta = parse_meta((version_dir / META_FILE).read_text(encoding="utf-8"), str(version_dir))
        verify(model_dir, version_meta)
    assert [p.name for p in model_dir.iterdir() if p.name.endswith(".tmp")] == []
    assert not (data_dir / PENDING_FILE).exists()
    assert dvc_dir_md5(data_dir) == meta.data.md5
    return meta
