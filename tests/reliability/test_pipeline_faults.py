"""Faults in the pipeline: SIGKILL at random points, two runs at once, a full disk, a read-only model/,
and bad data from every source. Whatever happens, model/, its history and data/ stay one complete,
consistent version, and the run says what happened."""

from __future__ import annotations

import errno
import fnmatch
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline import cli, registry
from pipeline.config import DriftParams, EvaluateParams, ExtractParams, Settings, TrainParams
from pipeline.dataset import dvc_dir_md5
from pipeline.delivery import dvc_file_md5
from pipeline.extract import write_table
from pipeline.outcomes import ExitCode
from service.artifacts import HISTORY_FILE, read_meta
from tests.pipeline.conftest import make_frame, make_settings
from tests.reliability.conftest import (
    SMALL_ROWS,
    PreloadedCli,
    Started,
    check_consistent,
    pipeline_env,
    run_argv,
    served_version,
    snapshot,
)

KILLS = int(os.environ.get("RELIABILITY_KILLS", "50"))
"""SIGKILLed runs in the kill test; raise it (e.g. RELIABILITY_KILLS=500) for a longer soak."""
KILL_SEED = 20261203
PROMOTION_SHARE = 0.4
"""Share of kills aimed at the promotion step, a few hundred ms of a run: drawn uniformly across that
step once the run logs its start. The others are drawn uniformly across the whole run."""

LOG_LINE = re.compile(r"^(\S+ \S+) \w+ (pipeline\.run|pipeline\.registry): (.*)$")


def small_settings(root: Path) -> Settings:
    """The in-process twin of ``SMALL_RUN_ENV``: a few thousand rows, gates that always pass."""
    return make_settings(
        root,
        extract=ExtractParams(rows=SMALL_ROWS, fraud_rate=0.1),
        train=TrainParams(n_estimators=60, nthread=1),
        evaluate=EvaluateParams(min_roc_auc=0.5, max_regression=1),
        drift=DriftParams(reference_rows=1000),
    )


def log_events(text: str) -> list[tuple[float, str]]:
    """(unix time, message) of the run's own log lines: step starts, the registry switch, the decision."""
    events = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            stamp, _, message = match.groups()
            seconds = time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S"))
            events.append((seconds + int(stamp.split(",")[1]) / 1000, message))
    return events


def landed_in(text: str, status: int) -> str:
    """Where a killed run was: the last step it logged, split at promotion's commit point."""
    if status == 0:
        return "completed before the kill"
    messages = [message for _, message in log_events(text)]
    if not messages:
        return "start-up (lock, recovery)"
    last = messages[-1]
    if last.startswith("run "):
        return "report (after the decision)"
    if re.match(r"promote v\d+ \(previous", last):
        return "promote: after the meta.json switch"
    step = re.match(r"step (\w+) started", last)
    assert step, last
    return step.group(1)


# --- SIGKILL at random points -----------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_killed_at_random_points_leaves_one_consistent_version(
    tmp_path: Path, preloaded_cli: type[PreloadedCli]
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    server = preloaded_cli(pipeline_env(root, PIPELINE_TRAIN__NTHREAD="1"))
    logs = tmp_path / "logs"
    logs.mkdir()

    # Two uninterrupted runs: v1 (no champion) and v2 (with one), to time a run and its promotion.
    durations = []
    for seed in (1, 2):
        started = server.start(run_argv(seed), logs / f"calibrate-{seed}.log")
        assert server.wait(started) == 0, started.log.read_text()
        durations.append(time.time() - started.t)
    events = log_events(started.log.read_text())
    promote_started = next(t for t, message in events if message == "step promote started")
    promotion = events[-1][0] - promote_started
    duration = durations[-1]  # a run with a champion: it also runs the drift gate
    assert served_version(root) == "v2"

    rng = random.Random(KILL_SEED)
    landed: Counter[str] = Counter()
    scratch = tmp_path / "scratch"
    for kill in range(KILLS):
        aimed = rng.random() < PROMOTION_SHARE
        delay = rng.uniform(0, promotion * 1.2) if aimed else rng.uniform(0, duration)
        started = server.start(run_argv(100 + kill), logs / f"kill-{kill}.log")
        if aimed:
            wait_for_line(started, "step promote started", timeout=300)
            time.sleep(delay)
        else:
            time.sleep(max(0.0, started.t + delay - time.time()))
        os.kill(started.pid, signal.SIGKILL)
        status = server.wait(started)
        assert status in (0, -signal.SIGKILL), started.log.read_text()
        landed[landed_in(started.log.read_text(), status)] += 1
        if status == 0:  # the machine got faster than when calibrating: follow it
            duration = log_events(started.log.read_text())[-1][0] - started.t

        # What a reader sees right now is a complete version (the service's own verification)...
        assert served_version(root) is not None
        # ...and the state the next run starts from recovers to one consistent version.
        check_consistent(root, scratch)

    # The next run recovers whatever the last kill left and promotes.
    final = server.start(run_argv(999), logs / "final.log")
    assert server.wait(final) == 0, final.log.read_text()
    assert "decision: promoted" in final.log.read_text()
    meta = check_consistent(root, scratch)
    assert read_meta(root / "model").version == meta.version
    assert dvc_dir_md5(root / "data") == meta.data.md5

    # data.dvc, as `dvc add` writes it, records exactly the md5 the served model was trained on.
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "--quiet"], cwd=root, check=True, capture_output=True)
    subprocess.run([dvc, "add", "--quiet", "data"], cwd=root, check=True, capture_output=True)
    assert dvc_file_md5(root / "data.dvc") == meta.data.md5

    killed = sum(count for step, count in landed.items() if step != "completed before the kill")
    in_promotion = sum(count for step, count in landed.items() if step.startswith("promote"))
    print(
        f"\n{KILLS} kills (seed {KILL_SEED}), run {duration:.1f} s, promotion {promotion:.2f} s; "
        f"killed {killed}, in promotion {in_promotion}; served after: {meta.version}; "
        f"landed: {dict(sorted(landed.items()))}"
    )
    assert killed >= KILLS * 0.6, landed
    assert in_promotion >= KILLS * PROMOTION_SHARE * 0.5, landed


def wait_for_line(started: Started, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.log.exists() and text in started.log.read_text():
            return
        time.sleep(0.005)
    raise AssertionError(f"{text!r} never appeared in {started.log}:\n{started.log.read_text()}")


# --- two runs at once ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_second_run_while_one_runs_exits_busy_and_never_promotes(
    tmp_path: Path, preloaded_cli: type[PreloadedCli]
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    server = preloaded_cli(pipeline_env(root, PIPELINE_TRAIN__NTHREAD="1"))
    first = server.start(run_argv(1), tmp_path / "first.log")
    wait_for_line(first, "step extract started", timeout=120)  # it holds the lock from here on

    second = server.start(run_argv(2), tmp_path / "second.log")
    assert server.wait(second) == ExitCode.BUSY
    rollback = server.start(["rollback", "v1"], tmp_path / "rollback.log")
    assert server.wait(rollback) == ExitCode.BUSY
    assert server.wait(first) == 0, first.log.read_text()

    message = second.log.read_text()
    assert f"busy: another pipeline run holds the lock on {root / 'model'}; wait for it to finish" in message
    assert "step extract started" not in message, "the second run must stop before any step"
    assert "busy: another pipeline run holds the lock" in rollback.log.read_text()
    assert [(e.event, e.version) for e in registry.history(root / "model")] == [("promote", "v1")]
    check_consistent(root, tmp_path / "scratch")


# --- full disk, read-only model/ --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose registry serves v1, promoted by a small run."""
    root = tmp_path_factory.mktemp("bootstrapped")
    assert cli.main(run_argv(1), small_settings(root)) == 0
    return root


@pytest.fixture
def project(bootstrapped: Path, tmp_path: Path) -> Path:
    """A private copy of the bootstrapped project."""
    for folder in ("model", "data"):
        shutil.copytree(bootstrapped / folder, tmp_path / folder)
    return tmp_path


@contextmanager
def disk_full_at(pattern: str) -> Iterator[list[str]]:
    """Make ``os.fsync`` of any file whose path matches ``pattern`` fail with ENOSPC, as a full disk
    does when delayed allocation finally needs a block. Yields the paths it failed."""
    real = os.fsync
    failed: list[str] = []

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if fnmatch.fnmatch(path, pattern):
            failed.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(fd)

    setattr(os, "fsync", fsync)  # noqa: B010 - replaced for every module that calls os.fsync
    try:
        yield failed
    finally:
        setattr(os, "fsync", real)  # noqa: B010


FAILED_WRITES = {
    "data snapshot": "*/data/.transactions.parquet.pending",
    "booster": "*/versions/.staging-*/booster.ubj",
    "reference sample": "*/versions/.staging-*/reference.parquet",
    "version meta.json": "*/versions/.staging-*/meta.json",
    "served meta.json": "*/model/.meta.json.*.tmp",
}


@pytest.mark.slow
@pytest.mark.parametrize("write", list(FAILED_WRITES))
def test_disk_full_during_promotion_fails_clearly_and_keeps_the_old_model(
    project: Path, write: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(project)
    with disk_full_at(FAILED_WRITES[write]) as failed:
        code = cli.main(run_argv(2), small_settings(project))
    assert failed, f"the run never wrote the {write}"
    err = capsys.readouterr().err
    assert code == ExitCode.PROMOTION_FAILED, err
    assert "registry error:" in err and "No space left on device" in err
    assert "unchanged" in err
    assert snapshot(project) == before, "model/ and data/ must be byte-identical"
    assert served_version(project) == "v1"
    reports = sorted((project / "reports").glob("*/report.json"))
    assert len(reports) == 1 and '"decision": "promotion_failed"' in reports[0].read_text()
    # The next run, with space again, promotes.
    assert cli.main(run_argv(3), small_settings(project)) == 0
    assert check_consistent(project, project / "scratch").version == "v2"


@pytest.mark.slow
def test_disk_full_at_the_history_append_still_serves_the_new_model_and_recovers(
    project: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with disk_full_at(f"*/model/.{HISTORY_FILE}.*.tmp") as failed:
        code = cli.main(run_argv(2), small_settings(project))
    assert failed
    out = capsys.readouterr().out
    # Past meta.json's switch the promotion has happened; it must not be reported as failed.
    assert code == 0 and "decision: promoted" in out and "version: v2" in out
    assert "promote v2 is served, but updating" in caplog.text and "No space left on device" in caplog.text
    assert served_version(project) == "v2"
    assert dvc_dir_md5(project / "data") == read_meta(project / "model").data.md5
    assert [e.version for e in registry.history(project / "model")] == ["v1"]
    assert check_consistent(project, project / "scratch").version == "v2"  # the next run's recovery


def can_make_read_only(path: Path) -> Callable[[bool], None]:
    """Make ``path`` read-only for this process (or writable again). chmod does not stop root, so
    as root the folder is made immutable (chattr +i, which needs CAP_LINUX_IMMUTABLE). Where root
    lacks that capability (a default Docker container, such as CI's), creating anything under
    ``path`` fails with EROFS instead, in-process: every registry write starts with a mkdir."""
    if os.geteuid() != 0:

        def chmod(read_only: bool) -> None:
            subprocess.run(["chmod", "-R", "a-w" if read_only else "u+w", str(path)], check=True)

        return chmod
    if chattr_works(path.parent):

        def chattr(read_only: bool) -> None:
            subprocess.run(["chattr", "-R", "+i" if read_only else "-i", str(path)], check=True)

        return chattr
    real_mkdir, real_open = os.mkdir, Path.open

    def refuse(target: str | os.PathLike[str]) -> None:
        if Path(target).resolve().is_relative_to(path.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))

    def mkdir(target: str | os.PathLike[str], mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        refuse(target)
        real_mkdir(target, mode, dir_fd=dir_fd)

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if set(mode) & set("wax+"):
            refuse(self)
        return real_open(self, mode, *args, **kwargs)

    def simulate(read_only: bool) -> None:
        setattr(os, "mkdir", mkdir if read_only else real_mkdir)  # noqa: B010
        setattr(Path, "open", open_ if read_only else real_open)  # noqa: B010

    return simulate


def chattr_works(folder: Path) -> bool:
    probe = folder / ".immutable-probe"
    probe.mkdir(exist_ok=True)
    done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False)
    subprocess.run(["chattr", "-i", str(probe)], capture_output=True, check=False)
    probe.rmdir()
    return done.returncode == 0


@pytest.mark.slow
def test_read_only_model_dir_during_promotion_fails_clearly_and_keeps_the_old_model(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_read_only = can_make_read_only(project / "model")
    real_promote = registry.promote

    def promote_on_a_read_only_disk(*args: object, **kwargs: object) -> object:
        set_read_only(True)  # model/ turns read-only after training, just before promotion
        return real_promote(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(registry, "promote", promote_on_a_read_only_disk)
    before = snapshot(project)
    try:
        code = cli.main(run_argv(2), small_settings(project))
        err = capsys.readouterr().err
        assert code == ExitCode.PROMOTION_FAILED, err
        assert "registry error:" in err
        assert re.search(r"Operation not permitted|Permission denied|Read-only file system", err), err
        assert snapshot(project) == before
        assert served_version(project) == "v1"

        # A run that starts on a read-only model/ stops at once, before extracting anything.
        monkeypatch.setattr(registry, "promote", real_promote)
        code = cli.main(run_argv(3), small_settings(project))
        err = capsys.readouterr().err
        assert code == ExitCode.PROMOTION_FAILED
        assert f"cannot open the registry lock {project / 'model' / registry.LOCK_FILE}" in err
        assert "must be writable; nothing was changed" in err
    finally:
        set_read_only(False)
    assert snapshot(project) == before
    assert cli.main(run_argv(4), small_settings(project)) == 0


# --- bad data from every source -------------------------------------------------------------------------


def _file(name: str, write: Callable[[Path], object]) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        path = folder / name
        write(path)
        return str(path)

    return make


def _wrong_types(path: Path) -> None:
    frame = make_frame(rows=1_000)
    frame["amount"] = frame["amount"].astype(str)
    frame.loc[7, "amount"] = "twelve euros"
    write_table(frame, path)


def _truncated(path: Path) -> None:
    write_table(make_frame(rows=1_000), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _sqlite(rows: pd.DataFrame) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        path = folder / "tx.db"
        stored = rows.copy()
        stored["timestamp"] = stored["timestamp"].dt.tz_localize(None)
        with sqlite3.connect(path) as connection:
            stored.to_sql("transactions", connection, index=False)
        return f"sqlite:///{path}"

    return make


def _not_a_database(folder: Path) -> str:
    (folder / "tx.db").write_bytes(b"this is not an SQLite database\n" * 100)
    return f"sqlite:///{folder / 'tx.db'}"


BAD_SOURCES: dict[str, tuple[Callable[[Path], str], str]] = {
    "csv, empty file": (_file("empty.csv", lambda p: p.write_text("")), r"empty\.csv: the file is empty"),
    "csv, header only": (
        _file("header.csv", lambda p: write_table(make_frame(rows=10).iloc[:0], p)),
        r"file:.*header\.csv: the source returned no rows",
    ),
    "csv, wrong types": (
        _file("types.csv", _wrong_types),
        r"amount: must be numeric, found (str|object) \(1000 rows\)",
    ),
    "parquet, empty file": (
        _file("empty.parquet", lambda p: p.write_bytes(b"")),
        r"empty\.parquet: cannot be read as parquet",
    ),
    "parquet, header only": (
        _file("header.parquet", lambda p: write_table(make_frame(rows=10).iloc[:0], p)),
        r"file:.*header\.parquet: the source returned no rows",
    ),
    "parquet, wrong types": (
        _file("types.parquet", _wrong_types),
        r"amount: must be numeric, found (str|object) \(1000 rows\)",
    ),
    "parquet, truncated": (_file("cut.parquet", _truncated), r"cut\.parquet: cannot be read as parquet"),
    "sql, database down": (_not_a_database, r"source could not be read: sqlite:///.*tx\.db: query failed"),
    "sql, no rows in the window": (
        _sqlite(make_frame(rows=1_000, end="2020-01-01T00:00:00Z")),
        r"sql:sqlite:///.*tx\.db: the source returned no rows",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_data_from_every_source_is_invalid_data_and_promotes_nothing(
    project: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, reason = BAD_SOURCES[case]
    inputs = project / "inputs"
    inputs.mkdir()
    source = make(inputs)
    before = snapshot(project)
    code = cli.main(["run", "--source", source, "--until", "2026-01-01T00:00:00"], small_settings(project))
    out = capsys.readouterr().out
    assert code == ExitCode.INVALID_DATA, out
    assert "decision: invalid_data" in out
    assert re.search(reason, out), out
    assert snapshot(project) == before
    assert served_version(project) == "v1"
    (report,) = (project / "reports").glob("*/report.json")
    assert '"decision": "invalid_data"' in report.read_text()
