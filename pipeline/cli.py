"""``python -m pipeline``: a thin command line over the pipeline's steps.

Exit codes (also in the README): 0 success (``promoted`` or ``skipped_no_drift`` for ``run``),
1 internal error, 2 bad arguments or unreadable input, 3 ``invalid_data``, 4 ``rejected_quality``,
5 another run holds the lock, 6 promotion or rollback failed (the previous model still serves),
7 a delivery step failed (dvc push, git push, deploy hook, /health wait; see docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pipeline.config import SCENARIOS, Settings, get_settings
from pipeline.outcomes import ExitCode

log = logging.getLogger("pipeline")


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        default="simulator",
        help="'simulator' (default), a .csv/.parquet file, or a SQLAlchemy URL such as sqlite:///tx.db",
    )
    parser.add_argument("--rows", type=int, help="simulator: rows to generate (default from params.toml)")
    parser.add_argument("--seed", type=int, help="simulator: seed; the same seed gives the same data")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="none",
        help="simulator: the change to simulate (default: none)",
    )
    parser.add_argument(
        "--until",
        type=datetime.fromisoformat,
        help="SQL source: end of the time window, ISO 8601 (default: now); its length is in params.toml",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="write simulated transactions to a CSV or Parquet file")
    generate.add_argument("--rows", type=int, help="rows to generate (default from params.toml)")
    generate.add_argument("--seed", type=int, help="seed; the same seed gives the same rows")
    generate.add_argument("--scenario", choices=SCENARIOS, default="none", help="the change to simulate")
    generate.add_argument("--fraud-rate", type=float, help="share of fraud, 0.005 to 0.15 (default 0.02)")
    generate.add_argument(
        "--out", type=Path, required=True, help="output file; .csv or .parquet picks the format"
    )

    extract = commands.add_parser(
        "extract", help="read transactions from any source into a CSV or Parquet file"
    )
    _add_source_options(extract)
    extract.add_argument(
        "--out", type=Path, required=True, help="output file; .csv or .parquet picks the format"
    )

    validate = commands.add_parser("validate", help="run the data quality gate on a file")
    validate.add_argument("path", type=Path, help="CSV or Parquet file of transactions")
    validate.add_argument("--json", action="store_true", help="print the result as JSON")

    drift = commands.add_parser(
        "drift", help="compare two files with the drift gate (exit 0 whatever the verdict)"
    )
    drift.add_argument("reference", type=Path, help="reference CSV or Parquet file")
    drift.add_argument("current", type=Path, help="current CSV or Parquet file")
    drift.add_argument("--json", action="store_true", help="print the full result as JSON")

    run = commands.add_parser("run", help="extract -> validate -> drift gate -> train -> evaluate -> promote")
    _add_source_options(run)
    run.add_argument("--force", action="store_true", help="retrain even when nothing drifted")
    run.add_argument("--run-id", help="name of the report folder under reports/ (default: UTC start time)")

    commands.add_parser("bootstrap", help="train and promote a first model if model/ holds none")
    commands.add_parser(
        "serve",
        help="the main job: bootstrap if model/ holds no promoted model, then serve the API",
    )
    commands.add_parser("history", help="list promoted versions, oldest first")

    rollback = commands.add_parser("rollback", help="serve an earlier version again (atomic)")
    rollback.add_argument("version", help="a version kept under model/versions/, e.g. v3")

    # Delivery: one command per workflow step (docs/deploy.md); tunables are DELIVERY_* variables.
    reproduce = commands.add_parser(
        "reproduce", help="retrain a tagged version from its DVC data and check the model is byte-identical"
    )
    reproduce.add_argument("version", help="a version with a git tag model-<version>, e.g. v3")
    reproduce.add_argument(
        "--workdir", type=Path, help="scratch folder for the clone (default: a temp folder)"
    )
    commands.add_parser(
        "retrain",
        help="the scheduled run: options from RETRAIN_FORCE/ROWS/SCENARIO/DRY_RUN, outputs to $GITHUB_OUTPUT",
    )
    commands.add_parser(
        "publish", help="dvc add + dvc push data/, then commit model/ + data.dvc, tag model-vN and push"
    )
    commands.add_parser("deploy", help="call $RENDER_DEPLOY_HOOK with bounded retries and backoff")
    wait = commands.add_parser(
        "wait-deployed", help="poll $RENDER_APP_URL/health until it serves model/meta.json's version"
    )
    wait.add_argument("--version", help="the version to wait for (default: model/meta.json's)")
    commands.add_parser(
        "dvc-remote", help="point the default DVC remote at $DVC_REMOTE_URL (.dvc/config.local)"
    )
    summary = commands.add_parser("summary", help="append a run's report.md to $GITHUB_STEP_SUMMARY")
    summary.add_argument("--run-id", help="the run's report folder (default: this CI run's, else the latest)")
    keepalive = commands.add_parser(
        "keepalive", help="re-enable a scheduled workflow via the GitHub API so it is never auto-disabled"
    )
    keepalive.add_argument(
        "--workflow", default="retrain.yml", help="workflow file name (default: retrain.yml)"
    )
    return parser


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.extract import simulate, write_table

    update = {"rows": args.rows, "seed": args.seed, "fraud_rate": args.fraud_rate}
    params = settings.extract.model_validate(
        {**settings.extract.model_dump(), **{k: v for k, v in update.items() if v is not None}}
    )
    frame = simulate(params, args.scenario)
    write_table(frame, args.out)
    print(f"wrote {len(frame)} rows ({int(frame['label'].sum())} fraud) to {args.out}")
    return ExitCode.OK


def cmd_extract(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.extract import extract, parse_source, write_table

    update = {k: v for k, v in (("rows", args.rows), ("seed", args.seed)) if v is not None}
    result = extract(
        parse_source(args.source), settings.extract.model_copy(update=update), args.scenario, args.until
    )
    write_table(result.frame, args.out)
    print(f"wrote {result.rows} rows from {result.source} to {args.out}")
    return ExitCode.OK


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.extract import read_table
    from pipeline.validate import validate

    result = validate(read_table(args.path), settings.validation)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return ExitCode.OK if result.ok else ExitCode.INVALID_DATA


def cmd_drift(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.drift import detect_drift
    from pipeline.extract import read_table

    report = detect_drift(read_table(args.reference), read_table(args.current), settings.drift)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for feature in report.features:
            verdict = "DRIFT" if feature.drifted else "ok"
            print(
                f"{feature.name:28} {feature.test:10} p_adj={feature.p_value_adjusted:.3g} "
                f"psi={feature.effect_size:.4f} {verdict}"
            )
        print(f"drift: {str(report.drift).lower()}")
    return ExitCode.OK


def _print_run(result: object) -> None:
    from pipeline.run import RunResult

    assert isinstance(result, RunResult)
    print(f"decision: {result.decision.value}")
    for reason in result.reasons:
        print(f"  - {reason}")
    if result.version:
        print(f"version: {result.version}")
    print(f"report: {result.report_dir / 'report.md'}")


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.extract import parse_source
    from pipeline.run import RunOptions, run_pipeline

    options = RunOptions(
        source=parse_source(args.source),
        scenario=args.scenario,
        force=args.force,
        rows=args.rows,
        seed=args.seed,
        until=args.until,
    )
    result = run_pipeline(settings, options, args.run_id)
    _print_run(result)
    return result.exit_code


def cmd_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import registry
    from pipeline.extract import Source
    from pipeline.run import RunOptions, run_pipeline

    served = registry.current(settings.model_dir)
    if served is not None:
        print(f"model/ already serves {served.version}; nothing to train")
        return ExitCode.OK
    result = run_pipeline(settings, RunOptions(source=Source("simulator")))
    _print_run(result)
    return result.exit_code


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import os

    code = cmd_bootstrap(args, settings)
    if code != ExitCode.OK:
        return code
    sys.stdout.flush()
    # Replace this process with the service, pointed at the same model directory.
    os.execve(
        sys.executable,
        [sys.executable, "-m", "service"],
        {**os.environ, "MODEL_DIR": str(settings.model_dir)},
    )


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import registry

    entries = registry.history(settings.model_dir)
    served = registry.current(settings.model_dir)
    if not entries:
        print("no versions promoted yet")
        return ExitCode.OK
    print(f"{'version':8} {'event':10} {'at':21} {'roc_auc':>8} {'pr_auc':>8}  data md5")
    for entry in entries:
        marker = " *" if served and entry is entries[-1] and entry.version == served.version else ""
        roc = f"{entry.roc_auc:.4f}" if entry.roc_auc is not None else "-"
        pr = f"{entry.pr_auc:.4f}" if entry.pr_auc is not None else "-"
        print(f"{entry.version:8} {entry.event:10} {entry.at:21} {roc:>8} {pr:>8}  {entry.data_md5}{marker}")
    return ExitCode.OK


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import registry

    with registry.locked(settings.model_dir):
        meta = registry.rollback(settings.model_dir, args.version, settings.registry.keep_versions)
    print(f"now serving {meta.version} (trained {meta.trained_at})")
    return ExitCode.OK


def cmd_reproduce(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from pipeline.config import PROJECT_ROOT
    from pipeline.delivery import Redactor
    from pipeline.reproduce import reproduce

    result = reproduce(PROJECT_ROOT, args.version, settings, Redactor.from_env(os.environ), args.workdir)
    verdict = "byte-identical" if result.identical else "DIFFERENT"
    print(
        f"{result.version} at {result.commit[:12]}: data {result.data_md5} ({result.rows} rows) pulled; "
        f"retrained booster ({result.booster_bytes} bytes recorded) is {verdict}"
    )
    if not result.identical:
        print(f"recorded libraries: {result.libraries_recorded}", file=sys.stderr)
        return ExitCode.INTERNAL
    return ExitCode.OK


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from pipeline.delivery import RetrainInputs, ci_run_id, write_outputs
    from pipeline.extract import Source
    from pipeline.outcomes import Decision
    from pipeline.run import RunOptions, run_pipeline

    inputs = RetrainInputs.from_env(os.environ)
    options = RunOptions(
        source=Source("simulator"), scenario=inputs.scenario, force=inputs.force, rows=inputs.rows
    )
    result = run_pipeline(settings, options, ci_run_id(os.environ))
    _print_run(result)
    publish = result.decision is Decision.PROMOTED and not inputs.dry_run
    if result.decision is Decision.PROMOTED and inputs.dry_run:
        print("dry run: the promoted model stays on this runner; nothing is pushed or deployed")
    write_outputs(
        {
            "decision": result.decision.value,
            "version": result.version or "",
            "run_id": result.run_id,
            "publish": str(publish).lower(),
        },
        os.environ,
    )
    return result.exit_code


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from pipeline.config import PROJECT_ROOT
    from pipeline.delivery import DeliveryParams, Redactor, ci_run_id, publish

    done = publish(
        PROJECT_ROOT,
        settings.model_dir,
        settings.data_dir,
        DeliveryParams(),
        Redactor.from_env(os.environ),
        ci_run_id(os.environ),
    )
    print(
        f"published {done.version}: data {done.data_md5} pushed to the DVC remote; commit {done.commit[:12]} "
        f"and tag {done.tag} pushed to {done.remote}/{done.branch}"
    )
    return ExitCode.OK


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from pipeline.delivery import DeliveryParams, Redactor, call_deploy_hook

    calls = call_deploy_hook(
        os.environ.get("RENDER_DEPLOY_HOOK", ""), DeliveryParams(), Redactor.from_env(os.environ)
    )
    print(f"deploy hook accepted the deploy (call {calls})")
    return ExitCode.OK


def cmd_wait_deployed(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from pipeline import registry
    from pipeline.delivery import DeliveryParams, Redactor, wait_for_version

    version = args.version
    if not version:
        served = registry.current(settings.model_dir)
        if served is None:
            print(f"error: {settings.model_dir} holds no promoted model to wait for", file=sys.stderr)
            return ExitCode.USAGE
        version = served.version
    seconds = wait_for_version(
        os.environ.get("RENDER_APP_URL", ""), version, DeliveryParams(), Redactor.from_env(os.environ)
    )
    print(f"the app serves {version} (after {seconds:.0f} s)")
    return ExitCode.OK


def cmd_dvc_remote(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from pipeline.config import PROJECT_ROOT
    from pipeline.delivery import Redactor, configure_dvc_remote

    name = configure_dvc_remote(
        PROJECT_ROOT, os.environ.get("DVC_REMOTE_URL", ""), Redactor.from_env(os.environ)
    )
    print(f"DVC remote {name!r} now points at $DVC_REMOTE_URL (in .dvc/config.local, not committed)")
    return ExitCode.OK


def cmd_summary(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from pipeline.delivery import Redactor, append_summary, ci_run_id, latest_report

    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        print("error: GITHUB_STEP_SUMMARY is not set (only GitHub Actions provides it)", file=sys.stderr)
        return ExitCode.USAGE
    report_dir = latest_report(settings.reports_dir, args.run_id or ci_run_id(os.environ))
    append_summary(report_dir, Path(target), Redactor.from_env(os.environ))
    print(f"appended {report_dir / 'report.md' if report_dir else 'a note (no report)'} to the job summary")
    return ExitCode.OK


def cmd_keepalive(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from pipeline.delivery import Redactor, keepalive

    status = keepalive(
        os.environ.get("GITHUB_API_URL", "https://api.github.com"),
        os.environ.get("GITHUB_REPOSITORY", ""),
        args.workflow,
        os.environ.get("GITHUB_TOKEN", ""),
        Redactor.from_env(os.environ),
    )
    print(f"{args.workflow} enabled (HTTP {status}); its 60-day inactivity timer starts again")
    return ExitCode.OK


COMMANDS = {
    "generate": cmd_generate,
    "extract": cmd_extract,
    "validate": cmd_validate,
    "drift": cmd_drift,
    "run": cmd_run,
    "bootstrap": cmd_bootstrap,
    "serve": cmd_serve,
    "history": cmd_history,
    "rollback": cmd_rollback,
    "reproduce": cmd_reproduce,
    "retrain": cmd_retrain,
    "publish": cmd_publish,
    "deploy": cmd_deploy,
    "wait-deployed": cmd_wait_deployed,
    "dvc-remote": cmd_dvc_remote,
    "summary": cmd_summary,
    "keepalive": cmd_keepalive,
}


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    import os

    # OpenMP (XGBoost, scikit-learn) spin-waits between parallel regions by default; on a shared
    # runner the spinning thread takes the core its partner needs, and training ran 4x slower
    # (docs/benchmarks.md, Pipeline scale). libgomp reads this once, when it loads: before any import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from pydantic import ValidationError

    from pipeline.delivery import DeliveryError
    from pipeline.outcomes import SourceError
    from pipeline.registry import RegistryBusy, RegistryError
    from service.artifacts import ModelDirError

    try:
        return COMMANDS[args.command](args, settings or get_settings())
    except (SourceError, ValidationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except RegistryBusy as exc:
        print(f"busy: {exc}", file=sys.stderr)
        return ExitCode.BUSY
    except (RegistryError, ModelDirError) as exc:
        print(f"registry error: {exc}", file=sys.stderr)
        return ExitCode.PROMOTION_FAILED
    except DeliveryError as exc:
        print(f"delivery failed: {exc}", file=sys.stderr)
        return ExitCode.DELIVERY_FAILED
