"""Delivery: the steps that take a promoted model to production, one function per workflow step.

The workflows in ``.github/workflows/`` call these through ``python -m pipeline <command>``, one
command per ``run:`` step, so a test runs exactly what CI runs (see ``docs/deploy.md``):

- ``dvc-remote``: point the DVC remote at the real storage from a secret, in ``.dvc/config.local``;
- ``retrain``: the scheduled pipeline run, its options taken from the workflow's inputs;
- ``publish``: ``dvc add data``, ``dvc push``, then commit ``model/`` + ``data.dvc``, tag, push;
- ``deploy``: call the Render deploy hook, with bounded retries and backoff;
- ``wait-deployed``: poll the app's ``/health`` until it serves the expected version;
- ``summary``: append the run's ``report.md`` to the job summary;
- ``keepalive``: re-enable the scheduled workflow so that GitHub never disables it.

Secrets (the deploy hook URL, the app URL, tokens, the DVC remote URL) never appear in what these
functions log, return or raise: every message goes through ``Redactor``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.outcomes import ExitCode
from service.artifacts import ModelMeta, read_meta

log = logging.getLogger(__name__)

SECRET_ENV = (
    "RENDER_DEPLOY_HOOK",
    "RENDER_APP_URL",
    "ADMIN_TOKEN",
    "DVC_REMOTE_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
)
"""Environment variables whose values are secrets: redacted from every message."""

DVC_FILE = "data.dvc"
DELIVERY_FAILED = ExitCode.DELIVERY_FAILED
"""Exit code of a failed delivery step (``pipeline.outcomes.ExitCode``)."""
TAG_PREFIX = "model-"
SCENARIO_NONE = "none"


class DeliveryError(Exception):
    """A delivery step failed. The message is safe to print: it never holds a secret."""


class DeliveryParams(BaseSettings):
    """Tunables of the delivery steps; each is an environment variable ``DELIVERY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DELIVERY_", frozen=True, extra="ignore")

    deploy_branch: str = Field(
        "prod", description="The branch Render deploys; the retrain job commits the new model to it."
    )
    git_remote: str = Field("origin", description="The git remote that receives the model commit and tag.")
    hook_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description=(
            "Calls of the deploy hook before giving up. A retry after a timeout may start a second "
            "deploy of the same commit, which is harmless; a missed deploy is not."
        ),
    )
    hook_timeout_s: float = Field(
        20.0, gt=0, description="Seconds to wait for one hook answer; the hook only queues a deploy."
    )
    hook_backoff_s: float = Field(
        5.0, ge=0, description="Wait before the 2nd call, doubled each retry: 5+10+20+40 s over 5 calls."
    )
    health_timeout_s: float = Field(
        1200.0,
        gt=0,
        description=(
            "Seconds to wait for /health to serve the new version: a free-plan Docker build and "
            "deploy takes 5-15 minutes, plus a cold start after 15 idle minutes."
        ),
    )
    health_interval_s: float = Field(15.0, gt=0, description="Seconds between two /health polls.")
    health_request_timeout_s: float = Field(
        30.0, gt=0, description="Seconds one /health call may take (a cold start answers slowly)."
    )


class Redactor:
    """Replaces every secret value (and its URL-decoded and query-only forms) with ``***``."""

    def __init__(self, secrets: Sequence[str]) -> None:
        values: set[str] = set()
        for secret in secrets:
            if len(secret) < 4:
                continue
            values.add(secret)
            values.add(urllib.parse.unquote(secret))
            parsed = urllib.parse.urlsplit(secret)
            # A URL's key, path or credentials alone are as secret as the whole URL.
            for part in (parsed.query, parsed.path, parsed.password or "", parsed.username or ""):
                if len(part) >= 8:
                    values.add(part)
        self._values = sorted(values, key=len, reverse=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Redactor:
        return cls([env[name] for name in SECRET_ENV if env.get(name)])

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, "***")
        return text


def _tool(name: str) -> str:
    """A console script installed beside this interpreter (dvc), else one on PATH (git)."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DeliveryError(f"{name} is not installed")
    return found


def run_tool(
    args: Sequence[str], cwd: Path, redact: Redactor, what: str, env: Mapping[str, str] | None = None
) -> str:
    """Run ``git``/``dvc`` and return its stdout; on failure raise a redacted DeliveryError."""
    command = [_tool(args[0]), *args[1:]]
    done = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else dict(env),
    )
    if done.returncode != 0:
        detail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise DeliveryError(redact(f"{what} failed ({' '.join(args[:2])} exit {done.returncode}): {detail}"))
    return done.stdout


# --- retrain ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainInputs:
    """The retrain workflow's inputs; a scheduled run has none and gets the defaults."""

    force: bool = False
    rows: int | None = None
    scenario: str = SCENARIO_NONE
    dry_run: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetrainInputs:
        """Read ``RETRAIN_FORCE``, ``RETRAIN_ROWS``, ``RETRAIN_SCENARIO``, ``RETRAIN_DRY_RUN``.

        Args:
            env: the environment; unset or empty variables take their defaults.

        Returns:
            The parsed inputs. Raises ValueError on a value that is not a boolean or a row count.
        """
        rows_text = env.get("RETRAIN_ROWS", "").strip()
        if rows_text and not rows_text.isdigit():
            raise ValueError(f"RETRAIN_ROWS must be a whole number of rows, got {rows_text!r}")
        return cls(
            force=_flag(env, "RETRAIN_FORCE"),
            rows=int(rows_text) if rows_text else None,
            scenario=env.get("RETRAIN_SCENARIO", "").strip() or SCENARIO_NONE,
            dry_run=_flag(env, "RETRAIN_DRY_RUN"),
        )


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise ValueError(f"{name} must be true or false, got {value!r}")


def ci_run_id(env: Mapping[str, str]) -> str | None:
    """The report folder of a GitHub Actions run (``gh-<run id>-<attempt>``), None outside Actions."""
    run_id = env.get("GITHUB_RUN_ID")
    if not run_id:
        return None
    return f"gh-{run_id}-{env.get('GITHUB_RUN_ATTEMPT', '1')}"


def write_outputs(values: Mapping[str, str], env: Mapping[str, str]) -> None:
    """Append ``key=value`` lines to ``$GITHUB_OUTPUT`` (a no-op outside GitHub Actions)."""
    path = env.get("GITHUB_OUTPUT")
    if not path:
        return
    with Path(path).open("a", encoding="utf-8") as handle:
        for key, value in values.items():
            if "\n" in value:
                raise ValueError(f"output {key} must be one line")
            handle.write(f"{key}={value}\n")


# --- publish ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    version: str
    commit: str
    tag: str
    data_md5: str
    branch: str
    remote: str


def commit_message(meta: ModelMeta, run_id: str | None) -> str:
    """The model commit's message: the version and its holdout metrics on the first line."""
    holdout = meta.metrics.get("holdout", {})
    subject = (
        f"Promote model {meta.version}: holdout ROC-AUC {float(holdout.get('roc_auc', float('nan'))):.4f}, "
        f"PR-AUC {float(holdout.get('pr_auc', float('nan'))):.4f}"
    )
    body = [
        f"Trained at {meta.trained_at} on {meta.data.rows} rows "
        f"(fraud rate {meta.data.fraud_rate:.4f}), data {meta.data.md5}.",
        f"Threshold {meta.threshold:.4f} ({meta.threshold_rule.get('rule', '?')}); "
        f"precision {float(holdout.get('precision', float('nan'))):.4f}, "
        f"recall {float(holdout.get('recall', float('nan'))):.4f} on the holdout.",
    ]
    if run_id:
        body.append(f"Pipeline run: {run_id}.")
    body.append(f"Reproduce: python -m pipeline reproduce {meta.version}")
    return subject + "\n\n" + "\n".join(body) + "\n"


def dvc_file_md5(path: Path) -> str:
    """The md5 a ``.dvc`` file records for its single output (``outs: - md5: <hex>.dir``)."""
    match = re.search(r"^\s*-?\s*md5:\s*([0-9a-f]{32}(?:\.dir)?)\s*$", path.read_text(encoding="utf-8"), re.M)
    if match is None:
        raise DeliveryError(f"{path.name} records no output md5")
    return match.group(1)


def publish(
    root: Path,
    model_dir: Path,
    data_dir: Path,
    params: DeliveryParams,
    redact: Redactor,
    run_id: str | None = None,
) -> Published:
    """Version the promoted model's data and push the model, in the only safe order.

    ``dvc add`` + ``dvc push`` first: if the data cannot be stored, nothing is committed, since a
    model whose data is not in the remote cannot be reproduced. Then one commit of ``model/`` and
    ``data.dvc``, an annotated tag ``model-vN``, and one atomic push of both.

    Args:
        root: the git and DVC repository.
        model_dir: the registry holding the promoted model.
        data_dir: the DVC-tracked snapshot the model was trained on.
        params: branch and remote names.
        redact: hides secrets in error messages.
        run_id: the pipeline run, named in the commit message.

    Returns:
        What was pushed. Raises DeliveryError, with nothing committed, when a step fails.
    """
    meta = read_meta(model_dir)
    tag = f"{TAG_PREFIX}{meta.version}"
    existing = run_tool(["git", "tag", "--list", tag], root, redact, "listing tags").strip()
    head = run_tool(["git", "log", "-1", "--format=%s"], root, redact, "reading HEAD").strip()
    # An earlier publish of this version that was killed after its commit: finish it, don't refuse.
    resuming = head.startswith(f"Promote model {meta.version}:")
    if existing and not resuming:
        raise DeliveryError(f"tag {tag} already exists: {meta.version} was published before")
    if not (data_dir / "transactions.parquet").exists():
        raise DeliveryError(f"{data_dir} holds no snapshot: nothing to version with DVC")

    run_tool(["dvc", "add", "--quiet", str(data_dir.relative_to(root))], root, redact, "dvc add")
    recorded = dvc_file_md5(root / DVC_FILE)
    if recorded != meta.data.md5:
        raise DeliveryError(
            f"{DVC_FILE} records {recorded} but {meta.version} was trained on {meta.data.md5}: "
            "data/ is not the promoted model's snapshot; nothing was committed"
        )
    try:
        run_tool(["dvc", "push", "--quiet"], root, redact, "dvc push")
    except DeliveryError as exc:
        raise DeliveryError(
            f"{exc}\nnothing was committed, tagged or deployed: {meta.version}'s data is not in the DVC "
            "remote, so the model could not be reproduced. What to do: check the DVC remote "
            "(DVC_REMOTE_URL and its credentials), then run `python -m pipeline publish` again, or "
            "re-run the retrain workflow"
        ) from exc

    model_path = str(model_dir.relative_to(root))
    message = commit_message(meta, run_id)
    if resuming:
        log.warning("resuming an interrupted publish of %s: its commit exists, pushing it", meta.version)
    else:
        run_tool(["git", "add", "--all", "--", model_path, DVC_FILE], root, redact, "git add")
        run_tool(["git", "commit", "--quiet", "--message", message], root, redact, "git commit")
    if not existing:
        run_tool(["git", "tag", "--annotate", tag, "--message", message], root, redact, "git tag")
    commit = run_tool(["git", "rev-parse", "HEAD"], root, redact, "git rev-parse").strip()
    target = f"{params.git_remote}/{params.deploy_branch}"
    try:
        run_tool(
            [
                "git",
                "push",
                "--atomic",
                "--quiet",
                params.git_remote,
                f"HEAD:refs/heads/{params.deploy_branch}",
                f"refs/tags/{tag}",
            ],
            root,
            redact,
            f"pushing {meta.version} to {target}",
        )
    except DeliveryError as exc:
        # The push is atomic, so the remote is unchanged. Undo the local commit and tag too, so
        # that this checkout is back where publish started and publish can simply run again.
        run_tool(["git", "tag", "--delete", tag], root, redact, "deleting the unpushed tag")
        run_tool(["git", "reset", "--quiet", "HEAD~1"], root, redact, "undoing the unpushed commit")
        rejected = any(word in str(exc) for word in ("rejected", "fetch first", "non-fast-forward"))
        if rejected:
            advice = (
                f"{target} has commits this checkout does not have (someone pushed first). Nothing "
                f"was pushed or deployed; the local commit and tag {tag} were undone and model/ still "
                f"holds {meta.version}, uncommitted. What to do: re-run the retrain workflow, which "
                f"starts from the new {params.deploy_branch}; by hand: `git pull --ff-only "
                f"{params.git_remote} {params.deploy_branch}`, then `python -m pipeline publish`"
            )
        else:
            advice = (
                f"Nothing was pushed or deployed (the push is atomic); the local commit and tag {tag} "
                f"were undone and model/ still holds {meta.version}, uncommitted. What to do: check "
                f"that this job may push to {target}, then run `python -m pipeline publish` again"
            )
        raise DeliveryError(f"{exc}\n{advice}") from exc
    return Published(meta.version, commit, tag, recorded, params.deploy_branch, params.git_remote)


# --- deploy hook and health -----------------------------------------------------------------------


def _require_http(url: str, name: str) -> None:
    """Refuse any scheme but http(s): urllib would also open ``file:`` and custom schemes."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DeliveryError(f"{name} is not an http(s) URL")


def _describe_failure(exc: BaseException) -> str:
    """A short reason for a failed HTTP call that never includes the URL."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return "timed out"
        if isinstance(reason, OSError):
            return reason.strerror or type(reason).__name__
        return type(reason).__name__
    return type(exc).__name__


def call_deploy_hook(
    url: str,
    params: DeliveryParams,
    redact: Redactor,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """POST to a Render deploy hook, retrying 5xx, 429, timeouts and refused connections.

    Args:
        url: the deploy hook URL (a secret: it deploys without any other credential).
        params: attempts, per-call timeout and backoff.
        redact: hides the URL from error messages.
        sleep: waits between attempts (tests pass a fake).

    Returns:
        The number of calls made. Raises DeliveryError after the last failed attempt, or at once
        on an answer that a retry cannot fix (another 4xx).
    """
    if not url:
        raise DeliveryError("RENDER_DEPLOY_HOOK is not set: add the service's deploy hook as a secret")
    _require_http(url, "RENDER_DEPLOY_HOOK")
    failures: list[str] = []
    for attempt in range(1, params.hook_attempts + 1):
        request = urllib.request.Request(url, data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=params.hook_timeout_s) as response:  # nosec B310 # http(s) only: _require_http()
                response.read()
            log.info("deploy hook accepted the deploy (attempt %d)", attempt)
            return attempt
        except urllib.error.HTTPError as exc:
            failures.append(_describe_failure(exc))
            if exc.code < 500 and exc.code != 429:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            failures.append(_describe_failure(exc))
        if attempt < params.hook_attempts:
            delay = params.hook_backoff_s * 2 ** (attempt - 1)
            log.warning("deploy hook call %d failed (%s); retrying in %.1f s", attempt, failures[-1], delay)
            sleep(delay)
    raise DeliveryError(
        redact(
            f"the deploy hook (RENDER_DEPLOY_HOOK) failed after {len(failures)} call(s): "
            f"{'; '.join(failures)}. Nothing was deployed; the model commit and tag are pushed and the "
            "app still serves the previous version. What to do: run `python -m pipeline deploy` "
            "again later, or deploy the branch by hand on Render"
        )
    )


def fetch_health(base_url: str, timeout: float) -> dict[str, Any]:
    """GET ``<base_url>/health`` and return its JSON body."""
    _require_http(base_url, "RENDER_APP_URL")
    with urllib.request.urlopen(base_url.rstrip("/") + "/health", timeout=timeout) as response:  # nosec B310 # http(s) only: _require_http()
        body: dict[str, Any] = json.loads(response.read())
    return body


def wait_for_version(
    base_url: str,
    version: str,
    params: DeliveryParams,
    redact: Redactor,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Poll ``/health`` until it reports ``model_version == version``, within a bounded time.

    Args:
        base_url: the app's URL (a secret in CI only because it is stored as one).
        version: the version that must be served, e.g. ``v7``.
        params: total timeout, poll interval and per-call timeout.
        redact: hides the URL from messages.
        clock, sleep: time sources (tests pass fakes).

    Returns:
        Seconds waited. Raises DeliveryError when the time runs out.
    """
    if not base_url:
        raise DeliveryError("RENDER_APP_URL is not set: add the app's public URL as a secret")
    started = clock()
    last = "no answer yet"
    while True:
        try:
            health = fetch_health(base_url, params.health_request_timeout_s)
            served = str(health.get("model_version"))
            if served == version:
                return clock() - started
            last = f"serving {served} (model_loaded={health.get('model_loaded')})"
        except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
            last = _describe_failure(exc)
        elapsed = clock() - started
        if elapsed + params.health_interval_s > params.health_timeout_s:
            raise DeliveryError(
                redact(
                    f"/health did not serve {version} within {params.health_timeout_s:.0f} s "
                    f"(last answer: {last}). The model commit and tag are pushed and the app still "
                    "serves what it served before. What to do: check the service's deploy log on "
                    "Render; once the deploy is live, `python -m pipeline wait-deployed` confirms it"
                )
            )
        log.info("waiting for %s: %s", version, last)
        sleep(params.health_interval_s)


# --- DVC remote, job summary, keepalive -----------------------------------------------------------


def configure_dvc_remote(root: Path, url: str, redact: Redactor, remote: str | None = None) -> str:
    """Point the default DVC remote at ``url`` in ``.dvc/config.local`` (git-ignored).

    Credentials are not written: DVC's remotes read them from the environment
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` for S3).

    Returns:
        The remote's name.
    """
    if not url:
        raise DeliveryError("DVC_REMOTE_URL is not set: add the DVC storage URL as a secret")
    name = remote or run_tool(["dvc", "config", "core.remote"], root, redact, "reading core.remote").strip()
    if not name:
        raise DeliveryError(".dvc/config names no default remote (core.remote)")
    run_tool(["dvc", "remote", "modify", "--local", name, "url", url], root, redact, "dvc remote modify")
    return name


def latest_report(reports_dir: Path, run_id: str | None) -> Path | None:
    """The report folder of ``run_id``, or the most recent one."""
    if run_id:
        folder = reports_dir / run_id
        return folder if folder.is_dir() else None
    folders = sorted((p for p in reports_dir.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return folders[-1] if folders else None


def append_summary(report_dir: Path | None, summary_file: Path, redact: Redactor) -> str:
    """Append a run's ``report.md`` (or a note that there is none) to the job summary file."""
    if report_dir is None or not (report_dir / "report.md").exists():
        text = "## Pipeline run\n\nNo report was written: the run failed before its first step.\n"
    else:
        text = (report_dir / "report.md").read_text(encoding="utf-8")
    with summary_file.open("a", encoding="utf-8") as handle:
        handle.write(redact(text) + "\n")
    return text


def keepalive(api_url: str, repository: str, workflow: str, token: str, redact: Redactor) -> int:
    """Re-enable a workflow through the GitHub REST API; returns the HTTP status (204).

    GitHub disables scheduled workflows of public repositories after 60 days without activity;
    enabling an enabled workflow is accepted and counts as activity on it.
    """
    if not token:
        raise DeliveryError("GITHUB_TOKEN is not set")
    if not repository or "/" not in repository:
        raise DeliveryError("GITHUB_REPOSITORY must be owner/name")
    _require_http(api_url, "GITHUB_API_URL")
    url = f"{api_url.rstrip('/')}/repos/{repository}/actions/workflows/{workflow}/enable"
    request = urllib.request.Request(
        url,
        method="PUT",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # nosec B310 # http(s) only: _require_http()
            return int(response.status)
    except (urllib.error.URLError, TimeoutError) as exc:
        raise DeliveryError(redact(f"enabling {workflow} failed: {_describe_failure(exc)}")) from exc
