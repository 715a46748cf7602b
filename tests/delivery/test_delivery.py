"""The delivery functions on their own, against loopback stand-ins: inputs, redaction, the deploy
hook's retry policy, the bounded /health wait, the keepalive call and the commit message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.delivery import (
    DeliveryError,
    DeliveryParams,
    Redactor,
    RetrainInputs,
    call_deploy_hook,
    ci_run_id,
    commit_message,
    dvc_file_md5,
    keepalive,
    wait_for_version,
    write_outputs,
)
from service.artifacts import read_meta
from tests.delivery.conftest import PROJECT, HookReceiver, Recorder

FAST = DeliveryParams(
    hook_attempts=3, hook_timeout_s=1, hook_backoff_s=0, health_timeout_s=2, health_interval_s=0.2
)


def test_retrain_inputs_of_a_scheduled_run_are_the_defaults() -> None:
    empty = {"RETRAIN_FORCE": "", "RETRAIN_ROWS": "", "RETRAIN_SCENARIO": "", "RETRAIN_DRY_RUN": ""}
    assert RetrainInputs.from_env(empty) == RetrainInputs.from_env({}) == RetrainInputs()


def test_retrain_inputs_of_a_manual_run_are_parsed_and_bad_ones_refused() -> None:
    env = {"RETRAIN_FORCE": "true", "RETRAIN_ROWS": "20000", "RETRAIN_SCENARIO": "volume_spike"}
    assert RetrainInputs.from_env({**env, "RETRAIN_DRY_RUN": "true"}) == RetrainInputs(
        force=True, rows=20_000, scenario="volume_spike", dry_run=True
    )
    with pytest.raises(ValueError, match="RETRAIN_ROWS"):
        RetrainInputs.from_env({"RETRAIN_ROWS": "20k"})
    with pytest.raises(ValueError, match="RETRAIN_FORCE"):
        RetrainInputs.from_env({"RETRAIN_FORCE": "maybe"})


def test_ci_run_id_names_the_report_after_the_actions_run(tmp_path: Path) -> None:
    assert ci_run_id({"GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "2"}) == "gh-77-2"
    assert ci_run_id({}) is None
    outputs = tmp_path / "out"
    write_outputs({"decision": "promoted", "publish": "true"}, {"GITHUB_OUTPUT": str(outputs)})
    assert outputs.read_text() == "decision=promoted\npublish=true\n"


def test_redactor_hides_a_url_its_key_and_its_path() -> None:
    url = "https://api.render.com/deploy/srv-d0abc123xyz?key=Zm9vYmFyYmF6cXV4"
    redact = Redactor.from_env({"RENDER_DEPLOY_HOOK": url, "HOME": "/root"})
    text = f"call to {url} failed; key=Zm9vYmFyYmF6cXV4; path /deploy/srv-d0abc123xyz; home /root"
    assert redact(text) == "call to *** failed; ***; path ***; home /root"


def test_deploy_hook_retries_a_server_error_then_succeeds(hook_receiver: Callable[..., HookReceiver]) -> None:
    hook = hook_receiver(["500", "ok"])
    waits: list[float] = []
    assert (
        call_deploy_hook(hook.url, FAST.model_copy(update={"hook_backoff_s": 5}), Redactor([]), waits.append)
        == 2
    )
    assert [call.method for call in hook.calls] == ["POST", "POST"]
    assert waits == [5]


def test_deploy_hook_backs_off_exponentially_and_stops_after_the_last_attempt(
    hook_receiver: Callable[..., HookReceiver],
) -> None:
    hook = hook_receiver(["500"])
    waits: list[float] = []
    params = FAST.model_copy(update={"hook_attempts": 4, "hook_backoff_s": 5})
    with pytest.raises(
        DeliveryError, match=r"failed after 4 call\(s\): HTTP 500; HTTP 500; HTTP 500; HTTP 500"
    ):
        call_deploy_hook(hook.url, params, Redactor([hook.url]), waits.append)
    assert waits == [5, 10, 20]
    assert len(hook.calls) == 4


def test_deploy_hook_does_not_retry_a_refusal(recorder: Callable[..., Recorder]) -> None:
    server = recorder(lambda method, path: (404, {"message": "not found"}))
    with pytest.raises(DeliveryError, match=r"failed after 1 call\(s\): HTTP 404") as raised:
        call_deploy_hook(f"{server.url}/deploy/srv-secret123?key=abcdefgh12", FAST, Redactor.from_env({}))
    assert len(server.requests) == 1
    assert "srv-secret123" not in str(raised.value)


def test_deploy_hook_must_be_set() -> None:
    with pytest.raises(DeliveryError, match="RENDER_DEPLOY_HOOK is not set"):
        call_deploy_hook("", FAST, Redactor([]))


def test_wait_for_version_returns_once_the_new_version_is_served(recorder: Callable[..., Recorder]) -> None:
    answers = iter(["v1", "v1", "v2"])
    server = recorder(
        lambda method, path: (200, {"status": "ok", "model_loaded": True, "model_version": next(answers)})
    )
    assert wait_for_version(server.url, "v2", FAST, Redactor([])) < FAST.health_timeout_s
    assert [path for _, path, _ in server.requests] == ["/health"] * 3


def test_wait_for_version_fails_within_its_bound_without_naming_the_url(
    recorder: Callable[..., Recorder],
) -> None:
    server = recorder(
        lambda method, path: (200, {"status": "ok", "model_loaded": True, "model_version": "v1"})
    )
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    params = FAST.model_copy(update={"health_timeout_s": 60, "health_interval_s": 15})
    with pytest.raises(DeliveryError) as raised:
        wait_for_version(server.url, "v2", params, Redactor([server.url]), clock=lambda: now[0], sleep=sleep)
    message = str(raised.value)
    assert message.startswith(
        "/health did not serve v2 within 60 s (last answer: serving v1 (model_loaded=True)). "
    )
    assert "What to do:" in message and server.url not in message
    assert len(server.requests) == 5  # at 0, 15, 30, 45 and 60 s


def test_keepalive_enables_the_workflow_through_the_github_api(recorder: Callable[..., Recorder]) -> None:
    server = recorder(lambda method, path: (204, {}))
    token = "ghs_" + "x" * 36
    assert keepalive(server.url, "acme/fraud-retrain", "retrain.yml", token, Redactor([token])) == 204
    ((method, path, headers),) = server.requests
    assert (method, path) == ("PUT", "/repos/acme/fraud-retrain/actions/workflows/retrain.yml/enable")
    assert headers["Authorization"] == f"Bearer {token}"


def test_commit_message_gives_the_version_and_its_metrics() -> None:
    meta = read_meta(PROJECT / "model")
    message = commit_message(meta, "gh-1-1")
    holdout = meta.metrics["holdout"]
    assert message.splitlines()[0] == (
        f"Promote model {meta.version}: holdout ROC-AUC {holdout['roc_auc']:.4f}, "
        f"PR-AUC {holdout['pr_auc']:.4f}"
    )
    assert meta.data.md5 in message and f"python -m pipeline reproduce {meta.version}" in message


def test_committed_data_dvc_records_the_md5_the_committed_model_was_trained_on() -> None:
    assert dvc_file_md5(PROJECT / "data.dvc") == read_meta(PROJECT / "model").data.md5


@pytest.mark.parametrize(
    ("decision", "dry_run", "publish"),
    [("promoted", "false", "true"), ("promoted", "true", "false"), ("skipped_no_drift", "", "false")],
)
def test_retrain_command_publishes_only_a_promotion_outside_a_dry_run(
    decision: str,
    dry_run: str,
    publish: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline import cli, run
    from pipeline.config import Settings

    seen: list[run.RunOptions] = []

    def fake_run(settings: Settings, options: run.RunOptions, run_id: str | None = None) -> run.RunResult:
        seen.append(options)
        chosen = run.Decision(decision)
        version = "v9" if chosen is run.Decision.PROMOTED else None
        return run.RunResult(str(run_id), chosen, 0, (), version, tmp_path / str(run_id), {})

    monkeypatch.setattr(run, "run_pipeline", fake_run)
    outputs = tmp_path / "outputs"
    for name, value in {
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_RUN_ID": "11",
        "GITHUB_RUN_ATTEMPT": "3",
        "RETRAIN_FORCE": "true",
        "RETRAIN_ROWS": "1234",
        "RETRAIN_SCENARIO": "new_fraud_pattern",
        "RETRAIN_DRY_RUN": dry_run,
    }.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["retrain"], Settings(model_dir=tmp_path / "m", reports_dir=tmp_path)) == 0
    (options,) = seen
    assert (options.force, options.rows, options.scenario) == (True, 1234, "new_fraud_pattern")
    assert outputs.read_text().splitlines() == [
        f"decision={decision}",
        f"version={'v9' if decision == 'promoted' else ''}",
        "run_id=gh-11-3",
        f"publish={publish}",
    ]
    assert ("dry run: the promoted model stays on this runner" in capsys.readouterr().out) == (
        decision == "promoted" and dry_run == "true"
    )
