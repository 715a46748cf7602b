"""Faults on the delivery path, each through the same ``python -m pipeline`` command the workflow runs:
the DVC push fails, the git push is rejected because someone pushed first, the deploy hook answers 500
or times out, the app never serves the new version. Each leaves a consistent state and says what
happened and what to do; no secret reaches the output."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline import registry
from pipeline.dataset import commit_dataset, stage_dataset
from pipeline.delivery import DELIVERY_FAILED, commit_message, dvc_file_md5
from service.artifacts import read_meta
from tests.delivery.actions import runner_env
from tests.delivery.conftest import (
    DEPLOY_BRANCH,
    HookReceiver,
    Origin,
    Recorder,
    configure_identity,
    dvc,
    git,
)
from tests.pipeline.conftest import make_frame, meta_fields


def remote_refs(origin: Origin) -> dict[str, str]:
    lines = git("ls-remote", str(origin.bare), cwd=origin.bare).splitlines()
    return {ref: sha for sha, ref in (line.split("\t") for line in lines)}


def pipeline_command(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` in ``cwd``, as a workflow step runs it (with ``cwd``'s own code)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=runner_env(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def runner(origin: Origin, tmp_path: Path) -> Path:
    """A checkout of ``prod`` in which the pipeline has just promoted v2 (without training: a new data
    snapshot and a registry entry recording its md5, which is all ``publish`` reads)."""
    work = tmp_path / "runner"
    git("clone", "--quiet", "--branch", DEPLOY_BRANCH, str(origin.bare), str(work), cwd=tmp_path)
    configure_identity(work)
    dvc("remote", "modify", "--local", "storage", "url", str(origin.dvc_remote), cwd=work)
    md5 = stage_dataset(make_frame(rows=600, seed=5), work / "data")
    commit_dataset(work / "data")
    data = {"rows": 600, "fraud_rate": 0.02, "md5": md5, "source": "test"}
    files = {"booster": ("booster.ubj", b"{booster v2}"), "reference": ("reference.parquet", b"v2")}
    with registry.locked(work / "model"):
        assert registry.promote(work / "model", meta_fields(data=data), files, 10).version == "v2"
    return work


def publish_env(origin: Origin) -> dict[str, str]:
    return {"DVC_REMOTE_URL": str(origin.dvc_remote)}


def test_publish_when_dvc_push_fails_commits_nothing_and_succeeds_once_the_remote_is_back(
    runner: Path, origin: Origin, tmp_path: Path
) -> None:
    before = remote_refs(origin)
    away = tmp_path / "dvc-remote-away"
    shutil.move(origin.dvc_remote, away)
    origin.dvc_remote.write_text("not a directory\n")  # the storage is unreachable

    done = pipeline_command(["publish"], runner, publish_env(origin))
    assert done.returncode == DELIVERY_FAILED, done.stdout + done.stderr
    assert "delivery failed: dvc push failed" in done.stderr
    assert "nothing was committed, tagged or deployed" in done.stderr
    assert "What to do: check the DVC remote (DVC_REMOTE_URL and its credentials)" in done.stderr
    assert str(origin.dvc_remote) not in done.stdout + done.stderr, "the remote URL is a secret"
    # Consistent: origin unchanged, nothing committed or tagged here, model/ still holds v2 with its data.
    assert remote_refs(origin) == before
    assert git("rev-parse", "HEAD", cwd=runner).strip() == origin.seed_commit
    assert git("tag", "--list", cwd=runner).strip() == ""
    assert dvc_file_md5(runner / "data.dvc") == read_meta(runner / "model").data.md5

    origin.dvc_remote.unlink()
    shutil.move(away, origin.dvc_remote)
    done = pipeline_command(["publish"], runner, publish_env(origin))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "published v2" in done.stdout
    assert "refs/tags/model-v2" in remote_refs(origin)


def test_publish_rejected_because_someone_pushed_first_undoes_its_commit_and_says_what_to_do(
    runner: Path, origin: Origin, tmp_path: Path
) -> None:
    other = tmp_path / "colleague"
    git("clone", "--quiet", "--branch", DEPLOY_BRANCH, str(origin.bare), str(other), cwd=tmp_path)
    configure_identity(other)
    (other / "NOTES.md").write_text("pushed while the retrain job ran\n")
    git("add", "NOTES.md", cwd=other)
    git("commit", "--quiet", "--message", "A colleague's commit", cwd=other)
    git("push", "--quiet", "origin", DEPLOY_BRANCH, cwd=other)
    theirs = git("rev-parse", "HEAD", cwd=other).strip()

    done = pipeline_command(["publish"], runner, publish_env(origin))
    assert done.returncode == DELIVERY_FAILED, done.stdout + done.stderr
    assert f"pushing v2 to origin/{DEPLOY_BRANCH} failed" in done.stderr
    assert "(someone pushed first). Nothing was pushed or deployed" in done.stderr
    assert "the local commit and tag model-v2 were undone" in done.stderr
    assert "What to do: re-run the retrain workflow" in done.stderr
    assert str(origin.dvc_remote) not in done.stdout + done.stderr
    # origin has only the colleague's commit; this checkout is back where publish started.
    assert remote_refs(origin) == {"HEAD": theirs, f"refs/heads/{DEPLOY_BRANCH}": theirs}
    assert git("rev-parse", "HEAD", cwd=runner).strip() == origin.seed_commit
    assert git("tag", "--list", cwd=runner).strip() == ""
    assert read_meta(runner / "model").version == "v2"
    assert "model/meta.json" in git("status", "--porcelain", cwd=runner)

    # Following the message's advice publishes v2 on top of the colleague's commit.
    git("pull", "--quiet", "--ff-only", "origin", DEPLOY_BRANCH, cwd=runner)
    done = pipeline_command(["publish"], runner, publish_env(origin))
    assert done.returncode == 0, done.stdout + done.stderr
    refs = remote_refs(origin)
    assert git("rev-parse", f"{refs[f'refs/heads/{DEPLOY_BRANCH}']}~1", cwd=runner).strip() == theirs
    assert git("rev-parse", "model-v2^{commit}", cwd=runner).strip() == refs[f"refs/heads/{DEPLOY_BRANCH}"]


HOOK_FAST = {"DELIVERY_HOOK_ATTEMPTS": "3", "DELIVERY_HOOK_BACKOFF_S": "0", "DELIVERY_HOOK_TIMEOUT_S": "0.5"}


@pytest.mark.parametrize(
    ("script", "failures"),
    [(["500"], "HTTP 500; HTTP 500; HTTP 500"), (["hang"], "timed out; timed out; timed out")],
    ids=["answers-500", "times-out"],
)
def test_deploy_when_the_hook_fails_says_nothing_was_deployed_and_never_shows_the_hook(
    tmp_path: Path, hook_receiver: Callable[..., HookReceiver], script: list[str], failures: str
) -> None:
    hook = hook_receiver(script, hang_s=1.5)
    done = pipeline_command(["deploy"], tmp_path, {"RENDER_DEPLOY_HOOK": hook.url, **HOOK_FAST})
    assert done.returncode == DELIVERY_FAILED, done.stdout + done.stderr
    assert f"the deploy hook (RENDER_DEPLOY_HOOK) failed after 3 call(s): {failures}." in done.stderr
    assert "Nothing was deployed; the model commit and tag are pushed" in done.stderr
    assert "What to do: run `python -m pipeline deploy` again later" in done.stderr
    assert [call.method for call in hook.calls] == ["POST"] * 3
    for secret in (hook.url, hook.key, hook.secret_path, hook.url.split("?")[0]):
        assert secret not in done.stdout + done.stderr


@pytest.mark.parametrize("app", ["serves-the-old-version", "down"])
def test_wait_deployed_when_the_app_never_serves_the_new_version_fails_in_bounded_time(
    tmp_path: Path, recorder: Callable[..., Recorder], app: str
) -> None:
    if app == "down":
        url, last = "http://127.0.0.1:9/srv-secret-app-path", "Connection refused"
    else:
        server = recorder(
            lambda method, path: (200, {"status": "ok", "model_loaded": True, "model_version": "v1"})
        )
        url, last = f"{server.url}/srv-secret-app-path", "serving v1 (model_loaded=True)"
    env = {"RENDER_APP_URL": url, "DELIVERY_HEALTH_TIMEOUT_S": "2", "DELIVERY_HEALTH_INTERVAL_S": "0.5"}
    done = pipeline_command(["wait-deployed", "--version", "v2"], tmp_path, env)
    assert done.returncode == DELIVERY_FAILED, done.stdout + done.stderr
    assert f"/health did not serve v2 within 2 s (last answer: {last})" in done.stderr
    assert "the app still serves what it served before. What to do: check the service's deploy log" in (
        done.stderr
    )
    assert url not in done.stdout + done.stderr and "srv-secret-app-path" not in done.stdout + done.stderr


PUBLISH_KILLS = int(os.environ.get("RELIABILITY_PUBLISH_KILLS", "6"))
"""SIGKILLed ``publish`` runs; raise it for a longer soak."""


def dvc_object(remote: Path, md5: str) -> Path:
    digest = md5.removesuffix(".dir")
    return remote / "files" / "md5" / digest[:2] / (digest[2:] + (".dir" if md5.endswith(".dir") else ""))


def copy_of(runner: Path, origin: Origin, into: Path) -> tuple[Path, Origin]:
    """A copy of the checkout pointed at copies of both remotes: one publish attempt each."""
    shutil.copytree(runner, into / "runner", symlinks=True)
    copied = Origin(into / "origin.git", into / "dvc-remote", origin.seed_commit)
    shutil.copytree(origin.bare, copied.bare)
    shutil.copytree(origin.dvc_remote, copied.dvc_remote)
    git("remote", "set-url", "origin", str(copied.bare), cwd=into / "runner")
    dvc("remote", "modify", "--local", "storage", "url", str(copied.dvc_remote), cwd=into / "runner")
    return into / "runner", copied


def assert_all_or_nothing(origin: Origin, before: dict[str, str], md5: str) -> bool:
    """origin has the commit and the tag together, with its data in the DVC remote, or neither."""
    refs = remote_refs(origin)
    if "refs/tags/model-v2" not in refs:
        assert refs == before
        return False
    tagged = git("rev-parse", "model-v2^{commit}", cwd=origin.bare).strip()
    assert refs[f"refs/heads/{DEPLOY_BRANCH}"] == tagged
    assert git("rev-list", "--count", f"{origin.seed_commit}..{tagged}", cwd=origin.bare).strip() == "1"
    assert md5 in git("show", f"{tagged}:data.dvc", cwd=origin.bare)
    assert dvc_object(origin.dvc_remote, md5).is_file(), "a pushed model's data is in the DVC remote"
    return True


@pytest.mark.slow
def test_publish_killed_at_random_points_pushes_all_or_nothing_and_a_rerun_publishes(
    runner: Path, origin: Origin, tmp_path: Path
) -> None:
    md5 = read_meta(runner / "model").data.md5
    before = remote_refs(origin)
    work, copied = copy_of(runner, origin, tmp_path / "timing")
    started = time.monotonic()
    assert pipeline_command(["publish"], work, publish_env(copied)).returncode == 0
    duration = time.monotonic() - started

    rng = random.Random(20261203)
    outcomes = []
    for attempt in range(PUBLISH_KILLS):
        work, copied = copy_of(runner, origin, tmp_path / f"attempt-{attempt}")
        # Its own process group: the kill takes git and dvc down with it, as losing the runner would.
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "publish"],
            cwd=work,
            env=runner_env(publish_env(copied)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        delay = rng.uniform(0, duration)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)
        status = process.wait(timeout=60)
        pushed = assert_all_or_nothing(copied, before, md5)
        ending = "completed" if status == 0 else "killed"
        outcomes.append(f"{delay:.1f} s: {ending}, {'all' if pushed else 'nothing'} pushed")
        # Publishing again from what the kill left finishes the job, or finds it done.
        done = pipeline_command(["publish"], work, publish_env(copied))
        assert done.returncode == 0, f"after a kill at {delay:.1f} s: {done.stdout}{done.stderr}"
        assert assert_all_or_nothing(copied, before, md5)
    print(f"\n{PUBLISH_KILLS} publish kills, publish {duration:.1f} s: {outcomes}")


@pytest.mark.parametrize("left", ["committed", "committed and tagged"])
def test_publish_resumes_a_publish_killed_between_its_commit_and_its_push(
    runner: Path, origin: Origin, left: str
) -> None:
    # What a kill leaves after `git commit` (and `git tag`) but before `git push`; dvc push came first.
    meta = read_meta(runner / "model")
    message = commit_message(meta, None)
    dvc("add", "--quiet", "data", cwd=runner)
    dvc("push", "--quiet", cwd=runner)
    git("add", "--all", "--", "model", "data.dvc", cwd=runner)
    git("commit", "--quiet", "--message", message, cwd=runner)
    if left == "committed and tagged":
        git("tag", "--annotate", "model-v2", "--message", message, cwd=runner)
    before = remote_refs(origin)

    done = pipeline_command(["publish"], runner, publish_env(origin))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming an interrupted publish of v2" in done.stderr
    assert remote_refs(origin) != before
    assert assert_all_or_nothing(origin, before, meta.data.md5)
