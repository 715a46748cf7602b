"""The whole pipeline: extract -> validate -> drift gate -> (train -> evaluate -> promote).

Every run ends in exactly one decision and writes ``reports/<run>/``. Whatever fails, the served
model, the data snapshot and the history are left as they were.
"""

from __future__ import annotations

import io
import logging
import platform
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import registry
from pipeline.config import Settings
from pipeline.dataset import DATASET_FILE, commit_dataset, discard_dataset, reconcile_dataset, stage_dataset
from pipeline.drift import check_decay, decay_sample, detect_drift, reference_sample
from pipeline.evaluate import Metrics, choose_threshold, evaluate, quality_gate, ranking_curves
from pipeline.extract import Source, extract
from pipeline.outcomes import DECISION_EXIT, Decision, ExitCode, SourceError
from pipeline.report import CURVES_PNG, DISTRIBUTIONS_PNG, plot_curves, plot_distributions, write_report
from pipeline.train import load_booster, predict, time_split, train
from pipeline.validate import validate
from service.artifacts import BOOSTER, REFERENCE, ModelDirError, ModelMeta, verify
from service.features import FEATURE_NAMES, LABEL, TIMESTAMP

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    source: Source
    scenario: str = "none"
    force: bool = False
    rows: int | None = None
    seed: int | None = None
    until: datetime | None = None
    """End of the SQL source's time window (default: now)."""


@dataclass(frozen=True)
class RunResult:
    run_id: str
    decision: Decision
    exit_code: int
    reasons: tuple[str, ...]
    version: str | None
    report_dir: Path
    report: dict[str, Any]


class _Steps:
    """Times each step and records its status, rows and result for the report."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, Any]] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"status": "running", "seconds": 0.0, "rows": None, "result": None}
        self.steps[name] = record
        log.info("step %s started", name)
        started = time.perf_counter()
        try:
            yield record
        except BaseException:
            record["status"] = "failed"
            raise
        finally:
            record["seconds"] = round(time.perf_counter() - started, 4)
            if record["status"] == "running":
                record["status"] = "ok"


class _Background:
    """Work off the run's critical path, on one worker thread: the report's plots, the champion's
    holdout scores and the staging of the data snapshot, none of which needs the candidate.

    XGBoost releases the GIL while it trains and predicts, and with libgomp's passive wait policy
    its two threads leave much of the second core idle, so what runs here meanwhile costs the run
    little (docs/benchmarks.md, Pipeline scale). A plot that fails is logged and listed in the
    report under ``plot_errors``: a picture never changes the decision, nor undoes a promotion.
    Any other task's error is raised where its result is taken. A staged snapshot is put in place
    only by ``commit_snapshot``; every other ending of the run discards it.
    """

    def __init__(self, report_dir: Path) -> None:
        self._report_dir = report_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-background")
        self._plots: list[tuple[str, Future[None]]] = []
        self._snapshot: tuple[Path, Future[str]] | None = None

    def submit(self, task: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._executor.submit(task, *args)

    def plot(self, name: str, draw: Callable[[Path], None]) -> None:
        self._plots.append((name, self._executor.submit(draw, self._report_dir / name)))

    def collect_plots(self, report: dict[str, Any]) -> None:
        """Wait for the plots submitted so far; list the drawn ones and the errors in ``report``."""
        for name, future in self._plots:
            try:
                future.result()
            except Exception as exc:  # recorded, never swallowed: see the class docstring
                log.error("the report plot %s could not be drawn: %r", name, exc)
                report.setdefault("plot_errors", []).append(f"{name}: {exc!r}")
            else:
                report["plots"].append(name)
        self._plots.clear()

    def stage_snapshot(self, frame: pd.DataFrame, data_dir: Path) -> None:
        """Start writing ``frame`` as the pending data snapshot (``pipeline.dataset.stage_dataset``)."""
        self._snapshot = (data_dir, self._executor.submit(stage_dataset, frame, data_dir))

    def staged_md5(self) -> str:
        """The DVC md5 of the staged snapshot, once written; raises the OSError that stopped it."""
        if self._snapshot is None:
            raise RuntimeError("no data snapshot was staged")
        return self._snapshot[1].result()

    def commit_snapshot(self) -> None:
        if self._snapshot is not None:
            commit_dataset(self._snapshot[0])
            self._snapshot = None

    def discard_snapshot(self) -> None:
        """Wait for a staged snapshot and remove it (a no-op when none is pending)."""
        if self._snapshot is None:
            return
        data_dir, future = self._snapshot
        self._snapshot = None
        if not future.cancel():
            exc = future.exception()
            if exc is not None:
                log.warning("staging the data snapshot had failed (%r); it is discarded anyway", exc)
        discard_dataset(data_dir)

    def __enter__(self) -> _Background:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # On an error, tasks not started yet are dropped and a running one is waited for; a
        # snapshot that was not committed goes, so data/ is left as it was.
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.discard_snapshot()


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("xgboost-cpu", "numpy", "pandas", "scikit-learn", "scipy"):
        try:
            versions[name] = package_version(name)
        except PackageNotFoundError:  # a package this install lacks is simply not listed
            continue
    return versions


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _load_champion(settings: Settings) -> tuple[ModelMeta, Any, pd.DataFrame] | None:
    meta = registry.current(settings.model_dir)
    if meta is None:
        return None
    payloads = verify(settings.model_dir, meta)
    reference = pd.read_parquet(io.BytesIO(payloads[REFERENCE]))
    return meta, load_booster(payloads[BOOSTER]), reference


def _record_promotion_failure(
    report: dict[str, Any], report_dir: Path, error: str, background: _Background
) -> None:
    """Write the report of a failed promotion, if the disk still allows it; the error is raised anyway."""
    background.collect_plots(report)
    report.update(decision="promotion_failed", exit_code=ExitCode.PROMOTION_FAILED, reasons=[error])
    try:
        write_report(report, report_dir)
    except OSError as exc:  # the disk that failed the promotion may refuse the report too
        log.warning("could not write the report of the failed promotion to %s: %s", report_dir, exc)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def run_pipeline(settings: Settings, options: RunOptions, run_id: str | None = None) -> RunResult:
    """Run every step once and promote a new model when the gates allow it.

    Args:
        settings: paths and step parameters.
        options: source, scenario, row count, seed and ``force``.
        run_id: name of the report folder (default: the UTC start time).

    Returns:
        The decision, its exit code and the report, also written to ``reports/<run_id>/``.

    Raises:
        registry.RegistryBusy: another run holds the lock (nothing was changed).
        registry.RegistryError: promotion failed (the previous model still serves).
    """
    run_id = run_id or new_run_id()
    report_dir = settings.reports_dir / run_id
    report_dir.mkdir(parents=True, exist_ok=False)
    extract_params = settings.extract.model_copy(
        update={k: v for k, v in (("rows", options.rows), ("seed", options.seed)) if v is not None}
    )
    tracker = _Steps()
    report: dict[str, Any] = {
        "run_id": run_id,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {
            "source": options.source.describe(),
            "scenario": options.scenario,
            "force": options.force,
            "rows": extract_params.rows,
            "seed": extract_params.seed,
        },
        "steps": tracker.steps,
        "plots": [],
    }
    started = time.perf_counter()
    background = _Background(report_dir)

    def finish(decision: Decision, reasons: list[str], version: str | None = None) -> RunResult:
        background.discard_snapshot()  # a no-op once promoted: the snapshot is committed then
        background.collect_plots(report)
        report.update(
            decision=decision.value,
            exit_code=DECISION_EXIT[decision],
            reasons=reasons,
            version=version,
            seconds=round(time.perf_counter() - started, 3),
        )
        write_report(report, report_dir)
        log.info("run %s: %s %s", run_id, decision.value, "; ".join(reasons))
        return RunResult(
            run_id, decision, DECISION_EXIT[decision], tuple(reasons), version, report_dir, report
        )

    # The background work ends before the lock is released: a staged snapshot is never removed
    # under another run's feet.
    with registry.locked(settings.model_dir), background:
        registry.recover(settings.model_dir)
        served = registry.current(settings.model_dir)
        outcome = reconcile_dataset(settings.data_dir, served.data.md5 if served else None)
        if outcome != "clean":
            log.warning("a data snapshot left by an interrupted run was %s", outcome)

        with tracker.step("extract") as record:
            try:
                extracted = extract(options.source, extract_params, options.scenario, options.until)
            except SourceError as exc:
                record["status"] = "failed"
                record["result"] = {"error": str(exc)}
                return finish(Decision.INVALID_DATA, [f"source could not be read: {exc}"])
            record["rows"] = extracted.rows
            record["result"] = {"source": extracted.source, "scenario": extracted.scenario}
            if extracted.rows == 0:
                record["status"] = "failed"
                return finish(
                    Decision.INVALID_DATA,
                    [
                        f"{extracted.source}: the source returned no rows "
                        "(an empty or header-only file, or no transactions in the SQL window)"
                    ],
                )

        with tracker.step("validate") as record:
            validation = validate(extracted.frame, settings.validation)
            record["rows"] = validation.rows_out
            record["result"] = validation.to_dict()
            if not validation.ok or validation.frame is None:
                record["status"] = "failed"
                return finish(
                    Decision.INVALID_DATA,
                    [f"{v.column}: {v.message} ({v.count} rows)" for v in validation.violations],
                )
        frame = validation.frame

        with tracker.step("drift") as record:
            champion = _load_champion(settings)
            reasons: list[str] = []
            drift_result: dict[str, Any] = {}
            if champion is None:
                reasons.append("no promoted model yet: training the first one")
            else:
                meta, booster, reference = champion
                drift = detect_drift(reference, frame, settings.drift)
                holdout = meta.metrics["holdout"]
                checked = decay_sample(frame, settings.drift.decay_rows, settings.train.seed)
                decay = check_decay(
                    checked[LABEL].to_numpy(),
                    predict(booster, checked),
                    float(holdout["roc_auc"]),
                    settings.drift,
                    recorded_positives=int(holdout.get("positives", 0)),
                    recorded_negatives=int(holdout.get("rows", 0)) - int(holdout.get("positives", 0)),
                )
                drift_result = {"champion": meta.version, "input": drift.to_dict(), "decay": decay.to_dict()}
                if drift.drift:
                    reasons.append(f"input drift in {', '.join(drift.drifted_features)}")
                if decay.decayed:
                    reasons.append(f"champion {meta.version} decayed: {decay.reason}")
                background.plot(DISTRIBUTIONS_PNG, lambda path: plot_distributions(reference, frame, path))
            if options.force:
                reasons.append("retraining forced (--force)")
            drift_result["retrain"] = bool(reasons)
            drift_result["reasons"] = reasons
            record["rows"] = len(frame)
            record["result"] = drift_result
        if not reasons:
            return finish(Decision.SKIPPED_NO_DRIFT, ["no material input drift and no performance decay"])

        with tracker.step("train") as record:
            try:
                split = time_split(frame, settings.train)
            except ValueError as exc:
                record["status"] = "failed"
                return finish(Decision.INVALID_DATA, [str(exc)])
            # The champion scores the holdout while the candidate trains: it needs nothing of it.
            champion_scores = (
                None if champion is None else background.submit(predict, champion[1], split.test)
            )
            # Staged beside the current snapshot and renamed into place only after the model is
            # promoted: a failed promotion leaves data/ as it was, reconcile_dataset() finishes a crash.
            background.stage_snapshot(frame, settings.data_dir)
            model = train(split, settings.train)
            record["rows"] = len(split.train)
            record["result"] = {
                "split": split.describe(),
                "best_iteration": model.best_iteration,
                "scale_pos_weight": model.scale_pos_weight,
            }

        with tracker.step("evaluate") as record:
            y_validation = split.validation[LABEL].to_numpy()
            validation_scores = predict(model.booster, split.validation)
            validation_curves = ranking_curves(y_validation, validation_scores)
            threshold = choose_threshold(
                y_validation, validation_scores, settings.evaluate, validation_curves
            )
            validation_metrics = evaluate(
                y_validation, validation_scores, threshold, settings.evaluate, validation_curves
            )
            y_test = split.test[LABEL].to_numpy()
            test_scores = predict(model.booster, split.test)
            curves = {"candidate": ranking_curves(y_test, test_scores)}
            candidate = evaluate(y_test, test_scores, threshold, settings.evaluate, curves["candidate"])
            champion_metrics: Metrics | None = None
            if champion is not None and champion_scores is not None:
                meta = champion[0]
                name = f"champion {meta.version}"
                scores = champion_scores.result()
                curves[name] = ranking_curves(y_test, scores)
                champion_metrics = evaluate(y_test, scores, meta.threshold, settings.evaluate, curves[name])
            gate = quality_gate(candidate, champion_metrics, settings.evaluate)
            record["rows"] = len(split.test)
            record["result"] = {
                "candidate": candidate.to_dict(),
                "validation": validation_metrics.to_dict(),
                "champion": None if champion_metrics is None else champion_metrics.to_dict(),
                "gate": gate.to_dict(),
            }
            base_rate = float(y_test.mean())
            background.plot(CURVES_PNG, lambda path: plot_curves(curves, base_rate, path))

        if not gate.passed:
            candidate_dir = report_dir / "candidate"
            candidate_dir.mkdir()
            (candidate_dir / "booster.ubj").write_bytes(model.model_bytes)
            return finish(Decision.REJECTED_QUALITY, list(gate.reasons))

        with tracker.step("promote") as record:
            try:
                data_md5 = background.staged_md5()
            except OSError as exc:
                background.discard_snapshot()
                record["status"] = "failed"
                _record_promotion_failure(report, report_dir, str(exc), background)
                raise registry.RegistryError(
                    f"could not write the data snapshot under {settings.data_dir}: {exc}; "
                    "nothing was promoted, the served model and data/ are unchanged"
                ) from exc
            sample = reference_sample(frame, settings.drift.reference_rows, settings.train.seed)
            meta_fields = {
                "trained_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "features": list(FEATURE_NAMES),
                "label": LABEL,
                "threshold": threshold,
                "threshold_rule": {
                    "rule": settings.evaluate.threshold_rule,
                    "target": settings.evaluate.threshold_target,
                    "chosen_on": "validation window",
                },
                "metrics": {
                    "holdout": candidate.to_dict(),
                    "validation": validation_metrics.to_dict(),
                    "evaluated_on": f"most recent {settings.train.test_fraction:.0%} of rows by {TIMESTAMP}",
                    "champion_on_holdout": None if champion_metrics is None else champion_metrics.to_dict(),
                },
                "data": {
                    "rows": len(frame),
                    "fraud_rate": float(frame[LABEL].mean()),
                    "md5": data_md5,
                    "source": f"{extracted.source} -> {settings.data_dir.name}/{DATASET_FILE}",
                    "start": frame[TIMESTAMP].min().isoformat(),
                    "end": frame[TIMESTAMP].max().isoformat(),
                },
                "params": {
                    "train": settings.train.model_dump(mode="json"),
                    "evaluate": settings.evaluate.model_dump(mode="json"),
                    "booster": model.params,
                    "extract": {**extract_params.model_dump(mode="json"), "scenario": options.scenario},
                    "split": split.describe(),
                },
                "libraries": _library_versions(),
            }
            files = {
                BOOSTER: ("booster.ubj", model.model_bytes),
                REFERENCE: ("reference.parquet", _parquet_bytes(sample)),
            }
            try:
                promoted = registry.promote(
                    settings.model_dir, meta_fields, files, settings.registry.keep_versions
                )
            except (registry.RegistryError, ModelDirError, OSError) as exc:
                background.discard_snapshot()
                record["status"] = "failed"
                _record_promotion_failure(report, report_dir, str(exc), background)
                if isinstance(exc, OSError):
                    raise registry.RegistryError(
                        f"promotion failed: {exc}; the served model is unchanged"
                    ) from exc
                raise
            background.commit_snapshot()
            record["rows"] = len(frame)
            record["result"] = {"version": promoted.version, "data_md5": data_md5}
        return finish(
            Decision.PROMOTED,
            [*reasons, f"candidate ROC-AUC {candidate.roc_auc:.4f} passed the quality gate"],
            promoted.version,
        )
