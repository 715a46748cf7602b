"""Run a job of a workflow file on this machine, step by step, the way GitHub Actions would.

The point is that a test executes the workflow's own ``run:`` lines, read from the YAML, rather than
a copy of them. What GitHub provides is stood in for:

- ``uses:`` steps call a handler the test passes (``actions/checkout`` clones the test's bare
  ``origin``); actions without a handler must be known to be inert here (setup-uv, upload-artifact);
- the environment manager: ``uv run --locked --extra pipeline CMD`` runs ``CMD`` with this test's
  interpreter and console scripts (the same locked packages), and ``uv sync ...`` is already done;
- ``${{ expr }}`` is looked up in a flat context (``secrets.X``, ``inputs.X``, ``github.X``,
  ``env.X``); a missing name is the empty string, as on GitHub (a scheduled run has no inputs);
- ``if:`` supports no condition (success so far), ``always()`` and
  ``steps.<id>.outputs.<name> == '<value>'``; anything else fails the test, so the workflow stays simple;
- ``$GITHUB_OUTPUT`` and ``$GITHUB_STEP_SUMMARY`` are real files.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

BIN = Path(sys.executable).parent
UV_RUN = "uv run --locked --extra pipeline "
UV_SYNC = "uv sync --locked --extra pipeline"
INERT_ACTIONS = ("astral-sh/setup-uv@", "actions/upload-artifact@")
"""Actions whose effect the test environment already has (uv and its environment) or that only
upload files (the test checks the files instead)."""

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
STEP_OUTPUT_CONDITION = re.compile(r"^steps\.([\w-]+)\.outputs\.([\w-]+) == '([^']*)'$")

UsesHandler = Callable[[dict[str, str], Path], None]


def load_workflow(path: Path) -> dict[str, Any]:
    document: dict[Any, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in document:
        document["on"] = document.pop(True)
    return document


@dataclass
class StepResult:
    name: str
    id: str | None
    status: str
    """``success``, ``failure`` or ``skipped``."""
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class JobRun:
    steps: list[StepResult]
    summary: str

    def step(self, key: str) -> StepResult:
        for step in self.steps:
            if key in (step.id, step.name):
                return step
        raise KeyError(key)

    @property
    def log(self) -> str:
        """Everything the job printed, as GitHub's log would hold it."""
        return "\n".join(f"{s.stdout}\n{s.stderr}" for s in self.steps)

    @property
    def succeeded(self) -> bool:
        return all(step.status != "failure" for step in self.steps)


def _substitute(text: str, context: Mapping[str, str]) -> str:
    return EXPRESSION.sub(lambda match: context.get(match.group(1), ""), text)


def _should_run(condition: str | None, failed: bool, outputs: Mapping[str, Mapping[str, str]]) -> bool:
    if condition is None:
        return not failed
    condition = condition.strip()
    if condition == "always()":
        return True
    match = STEP_OUTPUT_CONDITION.match(condition)
    if match is None:
        raise AssertionError(f"unsupported `if:` in the workflow: {condition!r}")
    step_id, name, value = match.groups()
    return not failed and outputs.get(step_id, {}).get(name) == value


def command_for(line: str) -> list[str]:
    """The command a ``run:`` line executes here, with this interpreter standing in for ``uv run``."""
    if not line.startswith(UV_RUN):
        raise AssertionError(f"run: line does not start with {UV_RUN!r}: {line!r}")
    words = shlex.split(line[len(UV_RUN) :])
    program = sys.executable if words[0] == "python" else str(BIN / words[0])
    return [program, *words[1:]]


def run_job(
    workflow: Path,
    job: str,
    workdir: Path,
    context: Mapping[str, str],
    env: Mapping[str, str],
    uses: Mapping[str, UsesHandler] | None = None,
    before: Mapping[str, Callable[[], None]] | None = None,
    only: set[str] | None = None,
    outputs: Mapping[str, Mapping[str, str]] | None = None,
    timeout: float = 600,
) -> JobRun:
    """Run ``job`` of ``workflow`` in ``workdir``.

    Args:
        workflow: the workflow file.
        job: the job's key.
        workdir: the job's working directory (``actions/checkout`` fills it).
        context: values of ``${{ ... }}`` expressions.
        env: the runner's environment (secrets must come only through ``context``).
        uses: handlers of ``uses:`` steps, keyed by the action name before ``@``.
        before: callbacks run just before the step with that id (to break something mid-job).
        only: run only the steps with these ids (the others are recorded as skipped).
        outputs: step outputs to start from, for a run of ``only`` some steps.
        timeout: seconds one step may take.
    """
    definition = load_workflow(workflow)["jobs"][job]
    job_env = {k: _substitute(str(v), context) for k, v in (definition.get("env") or {}).items()}
    lookup = {**context, **{f"env.{k}": v for k, v in job_env.items()}}
    step_outputs: dict[str, dict[str, str]] = {k: dict(v) for k, v in (outputs or {}).items()}
    summary_file = workdir.parent / f"{workdir.name}-step-summary.md"
    summary_file.write_text("", encoding="utf-8")
    results: list[StepResult] = []
    failed = False
    for number, step in enumerate(definition["steps"]):
        step_id = step.get("id")
        name = step.get("name") or step.get("uses") or step.get("run", "")
        if only is not None and step_id not in only:
            results.append(StepResult(name, step_id, "skipped"))
            continue
        if not _should_run(step.get("if"), failed, step_outputs):
            results.append(StepResult(name, step_id, "skipped"))
            continue
        if "uses" in step:
            action = str(step["uses"]).split("@", 1)[0]
            with_ = {k: _substitute(str(v), lookup) for k, v in (step.get("with") or {}).items()}
            if uses is not None and action in uses:
                uses[action](with_, workdir)
            elif not str(step["uses"]).startswith(INERT_ACTIONS):
                raise AssertionError(f"no stand-in for {step['uses']}")
            results.append(StepResult(name, step_id, "success"))
            continue
        line = str(step["run"]).strip()
        if "\n" in line:
            raise AssertionError(f"run: must be one line: {line!r}")
        if line == UV_SYNC:
            results.append(StepResult(name, step_id, "success"))
            continue
        if before is not None and step_id in before:
            before[step_id]()
        output_file = workdir.parent / f"{workdir.name}-output-{number}"
        output_file.write_text("", encoding="utf-8")
        step_env = {k: _substitute(str(v), lookup) for k, v in (step.get("env") or {}).items()}
        command = command_for(line)
        started = time.monotonic()
        done = subprocess.run(
            command,
            cwd=workdir,
            env={
                **env,
                **job_env,
                **step_env,
                "GITHUB_OUTPUT": str(output_file),
                "GITHUB_STEP_SUMMARY": str(summary_file),
            },
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        produced = dict(
            entry.split("=", 1)
            for entry in output_file.read_text(encoding="utf-8").splitlines()
            if "=" in entry
        )
        if step_id:
            step_outputs[step_id] = produced
        status = "success" if done.returncode == 0 else "failure"
        failed = failed or status == "failure"
        results.append(
            StepResult(
                name,
                step_id,
                status,
                done.returncode,
                done.stdout,
                done.stderr,
                produced,
                command,
                time.monotonic() - started,
            )
        )
    return JobRun(results, summary_file.read_text(encoding="utf-8"))


def runner_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This machine's environment without any variable a real secret could hide in."""
    from pipeline.delivery import SECRET_ENV

    base = {k: v for k, v in os.environ.items() if k not in SECRET_ENV and not k.startswith("PIPELINE_")}
    return {**base, **extra}
