"""Lint and type checks run as part of the test suite, so the README's one test command covers them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCES = [name for name in ("service", "pipeline", "tests", "bench") if (PROJECT / name).is_dir()]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", *SOURCES],
        ["ruff", "format", "--check", *SOURCES],
        ["mypy"],
        # Medium severity and above, as ci.yml runs it; each exception is a justified `# nosec BXXX # why`.
        ["bandit", "-r", "service", "pipeline", "-q", "--severity-level", "medium"],
    ],
    ids=["ruff-check", "ruff-format", "mypy", "bandit"],
)
def test_code_quality(command: list[str]) -> None:
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
