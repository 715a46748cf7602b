"""The retrain workflow, executed: retrain.yml's own steps run against a bare git origin, a local DVC
remote, a deploy-hook receiver and the real service, all on this machine (see actions.py, conftest.py)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.dataset import DATASET_FILE
from pipeline.delivery import DELIVERY_FAILED
from tests.delivery.actions import JobRun, run_job, runner_env
from tests.delivery.conftest import (
    DEPLOY_BRANCH,
    WORKFLOWS,
    HookReceiver,
    Origin,
    RenderStandIn,
    checkout_from,
    dvc,
    get_json,
    git,
)

RETRAIN = WORKFLOWS / "retrain.yml"
ROWS = "50000"
"""The default size. Deterministic: amount_inflation at 50 000 rows drifts and promotes v2 (with the
trainer's logloss early stopping, at 30 000 rows the candidate falls 0.024 ROC-AUC below v1 on its
holdout and is rejected)."""


AWS_KEY_ID = "AKIA" + secrets.token_hex(8).upper()
AWS_SECRET = secrets.token_urlsafe(30)


def context(origin: Origin, hook_url: str, app_url: str, **inputs: str) -> dict[str, str]:
    values = {
        "secrets.DVC_REMOTE_URL": str(origin.dvc_remote),
        # The local DVC remote needs no credentials; these stand in for the real ones, to be grepped for.
        "secrets.AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "secrets.AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "secrets.RENDER_DEPLOY_HOOK": hook_url,
        "secrets.RENDER_APP_URL": app_url,
        "github.run_id": "4242",
        "github.run_attempt": "1",
        "inputs.force": "false",
        "inputs.rows": ROWS,
        "inputs.scenario": "amount_inflation",
        "inputs.dry_run": "false",
    }
    values.update({f"inputs.{name}": value for name, value in inputs.items()})
    return values


FAST = {
    # The defaults wait minutes for Render; the stand-ins answer in milliseconds.
    "DELIVERY_HEALTH_TIMEOUT_S": "60",
    "DELIVERY_HEALTH_INTERVAL_S": "0.5",
    "DELIVERY_HOOK_BACKOFF_S": "0.2",
    "DELIVERY_HOOK_TIMEOUT_S": "1",
    "DELIVERY_HOOK_ATTEMPTS": "3",
    "GITHUB_RUN_ID": "4242",
    "GITHUB_RUN_ATTEMPT": "1",
}


def retrain_job(
    tmp_path: Path,
    origin: Origin,
    values: dict[str, str],
    env: dict[str, str] | None = None,
    **kwargs: object,
) -> tuple[JobRun, Path]:
    workdir = tmp_path / "runner"
    job = run_job(
        RETRAIN,
        "retrain",
        workdir,
        values,
        runner_env({**FAST, **(env or {})}),
        uses={"actions/checkout": checkout_from(origin)},
        **kwargs,  # type: ignore[arg-type]
    )
    return job, workdir


def describe(job: JobRun) -> str:
    return "\n".join(
        f"--- {s.name} [{s.status}, exit {s.returncode}]\n{s.stdout}\n{s.stderr}" for s in job.steps
    )


def remote_refs(origin: Origin) -> dict[str, str]:
    lines = git("ls-remote", str(origin.bare), cwd=origin.bare).splitlines()
    return {ref: sha for sha, ref in (line.split("\t") for line in lines)}


def assert_no_secret_in_outputs(
    secrets_by_name: dict[str, str], job: JobRun, workdir: Path, origin: Origin, app_log: Path
) -> None:
    """Grep every output of the job for every secret: each step's stdout and stderr, the job summary,
    the step outputs, every file of the reports (the uploaded artifact), what was pushed to origin
    (commit messages, tags and the files of every commit) and the app's log."""
    outputs = {"job log": job.log, "job summary": job.summary, "app log": app_log.read_text()}
    for path in sorted(workdir.parent.glob(f"{workdir.name}-output-*")):
        outputs[path.name] = path.read_text()
    for path in sorted((workdir / "reports").rglob("*")):
        if path.is_file():
            outputs[str(path.relative_to(workdir))] = path.read_bytes().decode("utf-8", "replace")
    outputs["origin history"] = git("log", "--all", "--patch", "--format=%H%n%B", cwd=origin.bare)
    outputs["origin tags"] = git(
        "for-each-ref", "--format=%(refname) %(contents)", "refs/tags", cwd=origin.bare
    )
    leaks = [
        f"{name} in {where}"
        for name, value in secrets_by_name.items()
        for where, text in outputs.items()
        if value in text
    ]
    assert leaks == []
    assert len(outputs) >= 6 and all(outputs[key] for key in ("job log", "job summary", "origin history"))


def dvc_object(remote: Path, md5: str) -> Path:
    digest = md5.removesuffix(".dir")
    suffix = ".dir" if md5.endswith(".dir") else ""
    return remote / "files" / "md5" / digest[:2] / (digest[2:] + suffix)


@pytest.mark.slow
def test_retrain_workflow_promotes_publishes_deploys_and_the_tag_reproduces(
    tmp_path: Path,
    origin: Origin,
    hook_receiver: Callable[..., HookReceiver],
    render_app: Callable[[Origin], RenderStandIn],
) -> None:
    render = render_app(origin)
    assert get_json(f"{render.app.url}/health")[1]["model_version"] == "v1"
    hook = hook_receiver(["ok"], on_deploy=render.deploy)

    started = time.monotonic()
    # Render's hook only queues a deploy; the stand-in deploys before answering (git pull + reload),
    # which on a loaded machine can take longer than FAST's 1 s: a timeout would retry it.
    slow_hook = {"DELIVERY_HOOK_TIMEOUT_S": "60"}
    job, workdir = retrain_job(tmp_path, origin, context(origin, hook.url, render.app.url), slow_hook)
    seconds = time.monotonic() - started
    assert job.succeeded, describe(job)
    assert [s.status for s in job.steps].count("skipped") == 0, describe(job)
    retrain = job.step("retrain")
    assert retrain.outputs == {
        "decision": "promoted",
        "version": "v2",
        "run_id": "gh-4242-1",
        "publish": "true",
    }

    # The commit and the tag reached origin, with model/ and data.dvc.
    refs = remote_refs(origin)
    tagged = git("rev-parse", "refs/tags/model-v2^{commit}", cwd=workdir).strip()
    assert refs[f"refs/heads/{DEPLOY_BRANCH}"] == tagged != origin.seed_commit
    assert refs["refs/tags/model-v2"] != tagged, "the tag is annotated"
    changed = git("diff", "--name-only", origin.seed_commit, tagged, cwd=workdir).split()
    assert "data.dvc" in changed and "model/meta.json" in changed
    assert all(path == "data.dvc" or path.startswith("model/") for path in changed), changed
    meta = json.loads(git("show", f"{tagged}:model/meta.json", cwd=workdir))
    assert meta["version"] == "v2"
    assert meta["data"]["md5"] in git("show", f"{tagged}:data.dvc", cwd=workdir)
    message = git("log", "-1", "--format=%B", tagged, cwd=workdir)
    assert message.startswith("Promote model v2: holdout ROC-AUC 0.") and "PR-AUC" in message

    # CI's remote lives in the git-ignored .dvc/config.local; nothing about it is committed.
    assert git("status", "--porcelain", "--ignored=no", "--", ".dvc", cwd=workdir) == ""
    assert str(origin.dvc_remote) in (workdir / ".dvc" / "config.local").read_text()
    assert str(origin.dvc_remote) not in git("show", f"{tagged}:.dvc/config", cwd=workdir)

    # The DVC remote holds the data: the directory listing and the file it names.
    listing = dvc_object(origin.dvc_remote, meta["data"]["md5"])
    assert listing.is_file()
    (entry,) = json.loads(listing.read_text())
    assert dvc_object(origin.dvc_remote, entry["md5"]).is_file()

    # The hook got exactly one POST, and the app then served the new version.
    assert [call.method for call in hook.calls] == ["POST"]
    assert render.deploys == 1
    health = get_json(f"{render.app.url}/health")[1]
    assert (health["status"], health["model_loaded"], health["model_version"]) == ("ok", True, "v2")
    assert "the app serves v2" in job.step("wait").stdout

    # The report reached the job summary; no secret reached any output of the job.
    assert "promoted" in job.summary
    assert (workdir / "reports" / "gh-4242-1" / "report.json").is_file()
    assert_no_secret_in_outputs(
        {
            "RENDER_DEPLOY_HOOK": hook.url,
            "its key": hook.key,
            "its path": hook.secret_path,
            "RENDER_APP_URL's admin token (ADMIN_TOKEN)": render.admin_token,
            "DVC_REMOTE_URL": str(origin.dvc_remote),
            "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        },
        job,
        workdir,
        origin,
        render.app.log,
    )

    # A fresh clone of origin at the tag, plus dvc pull, gives back the data byte for byte...
    fresh = tmp_path / "fresh"
    git("clone", "--quiet", str(origin.bare), str(fresh), cwd=tmp_path)
    git("checkout", "--quiet", "model-v2", cwd=fresh)
    dvc("remote", "modify", "--local", "storage", "url", str(origin.dvc_remote), cwd=fresh)
    dvc("pull", "--quiet", cwd=fresh)
    assert (fresh / "data" / DATASET_FILE).read_bytes() == (workdir / "data" / DATASET_FILE).read_bytes()
    # ...and reproducing retrains a byte-identical model from it.
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "reproduce", "v2"],
        cwd=fresh,
        env=runner_env({}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "byte-identical" in done.stdout
    print(
        f"retrain job: {seconds:.1f} s; " + ", ".join(f"{s.id or s.name}: {s.seconds:.1f}" for s in job.steps)
    )


@pytest.mark.slow
def test_retrain_workflow_commits_nothing_when_dvc_push_fails(
    tmp_path: Path, origin: Origin, hook_receiver: Callable[..., HookReceiver]
) -> None:
    hook = hook_receiver(["ok"])

    def break_the_remote() -> None:
        # The storage becomes unreachable after the pull: a file stands where its folder was.
        shutil.move(origin.dvc_remote, tmp_path / "dvc-remote-away")
        origin.dvc_remote.write_text("not a directory\n")

    job, workdir = retrain_job(
        tmp_path,
        origin,
        context(origin, hook.url, "http://127.0.0.1:9"),
        before={"publish": break_the_remote},
    )
    assert job.step("retrain").outputs["publish"] == "true", describe(job)
    publish = job.step("publish")
    assert publish.status == "failure" and publish.returncode == DELIVERY_FAILED, describe(job)
    assert "dvc push failed" in publish.stderr
    assert "nothing was committed, tagged or deployed" in publish.stderr
    assert str(origin.dvc_remote) not in publish.stdout + publish.stderr, "the remote URL is a secret"
    assert job.step("deploy").status == "skipped"
    assert job.step("wait").status == "skipped"
    assert job.step("summary").status == "success"

    assert remote_refs(origin) == {
        "HEAD": origin.seed_commit,
        f"refs/heads/{DEPLOY_BRANCH}": origin.seed_commit,
    }
    assert git("rev-parse", "HEAD", cwd=workdir).strip() == origin.seed_commit
    assert git("tag", "--list", cwd=workdir).strip() == ""
    assert hook.calls == []


def test_retrain_deploy_step_gives_up_after_bounded_retries_without_leaking_the_hook(
    tmp_path: Path, hook_receiver: Callable[..., HookReceiver]
) -> None:
    hook = hook_receiver(["500", "hang", "hang"], hang_s=3.0)
    workdir = tmp_path / "runner"
    workdir.mkdir()
    started = time.monotonic()
    job = run_job(
        RETRAIN,
        "retrain",
        workdir,
        {"secrets.RENDER_DEPLOY_HOOK": hook.url, "secrets.RENDER_APP_URL": "http://127.0.0.1:9"},
        runner_env(FAST),
        only={"deploy"},
        outputs={"retrain": {"publish": "true"}},
    )
    seconds = time.monotonic() - started
    deploy = job.step("deploy")
    assert deploy.status == "failure" and deploy.returncode == DELIVERY_FAILED
    assert len(hook.calls) == 3 and {c.method for c in hook.calls} == {"POST"}
    assert "the deploy hook (RENDER_DEPLOY_HOOK) failed after 3 call(s): HTTP 500; timed out; timed out" in (
        deploy.stderr
    )
    # 3 calls: 1 s timeout twice, 0.2 + 0.4 s of backoff, plus the interpreter's start.
    assert seconds < 15
    for secret in (hook.url, hook.key, hook.secret_path, hook.url.split("?")[0]):
        assert secret not in job.log
