from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml  # type: ignore[import-untyped]

from pipeline.dataset import (
    DATASET_FILE,
    PENDING_FILE,
    commit_dataset,
    dvc_dir_md5,
    reconcile_dataset,
    stage_dataset,
)
from tests.pipeline.conftest import make_frame


def dvc(*args: str, cwd: Path) -> None:
    subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), *args], cwd=cwd, check=True, capture_output=True
    )


def test_dvc_dir_md5_matches_what_dvc_add_records(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stage_dataset(make_frame(rows=500), data)
    commit_dataset(data)
    (data / "nested").mkdir()
    (data / "nested" / "notes.txt").write_text("second file, in a sub-folder\n")
    dvc("init", "--no-scm", cwd=tmp_path)
    dvc("add", "data", cwd=tmp_path)
    recorded = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]["md5"]
    assert dvc_dir_md5(data) == recorded


def test_stage_dataset_reports_md5_of_the_committed_directory_without_replacing_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stage_dataset(make_frame(rows=500, seed=1), data)
    commit_dataset(data)
    before = (data / DATASET_FILE).read_bytes()
    expected = stage_dataset(make_frame(rows=500, seed=2), data)
    assert (data / DATASET_FILE).read_bytes() == before
    commit_dataset(data)
    assert dvc_dir_md5(data) == expected
    assert not (data / PENDING_FILE).exists()


def test_reconcile_dataset_commits_a_promoted_snapshot_and_discards_others(tmp_path: Path) -> None:
    data = tmp_path / "data"
    promoted = stage_dataset(make_frame(rows=500, seed=1), data)
    assert reconcile_dataset(data, promoted) == "committed"
    assert dvc_dir_md5(data) == promoted
    stage_dataset(make_frame(rows=500, seed=2), data)
    assert reconcile_dataset(data, promoted) == "discarded"
    assert dvc_dir_md5(data) == promoted
    assert reconcile_dataset(data, promoted) == "clean"


def test_snapshot_round_trips_exactly(tmp_path: Path) -> None:
    frame = make_frame(rows=500)
    stage_dataset(frame, tmp_path)
    commit_dataset(tmp_path)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / DATASET_FILE), frame)
