"""The command line, run as a user runs it: ``python -m pipeline`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.pipeline.conftest import make_frame

pytestmark = pytest.mark.slow  # whole pipeline runs

PROJECT = Path(__file__).resolve().parents[2]


def cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PIPELINE_MODEL_DIR": str(root / "model"),
        "PIPELINE_DATA_DIR": str(root / "data"),
        "PIPELINE_REPORTS_DIR": str(root / "reports"),
        "PIPELINE_EXTRACT__ROWS": "20000",
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "--log-level", "WARNING", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_generate_writes_the_format_of_the_suffix(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"tx{suffix}"
    done = cli(
        "generate",
        "--rows",
        "1000",
        "--seed",
        "3",
        "--scenario",
        "volume_spike",
        "--out",
        str(out),
        root=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert len(frame) == 3000 and "timestamp" in frame.columns


def test_generate_is_deterministic(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv"):
        assert (
            cli(
                "generate", "--rows", "500", "--seed", "8", "--out", str(tmp_path / name), root=tmp_path
            ).returncode
            == 0
        )
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_generate_rejects_fraud_rate_out_of_range(tmp_path: Path) -> None:
    done = cli("generate", "--fraud-rate", "0.5", "--out", str(tmp_path / "x.csv"), root=tmp_path)
    assert done.returncode == 2
    assert "fraud_rate" in done.stderr


def test_drift_json_reports_every_feature_and_exits_zero_on_drift(tmp_path: Path) -> None:
    make_frame(rows=5_000, seed=1).to_parquet(tmp_path / "ref.parquet")
    make_frame(rows=5_000, seed=2, scenario="amount_inflation", inflation_factor=2.0).to_csv(
        tmp_path / "cur.csv"
    )
    done = cli("drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.csv"), "--json", root=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["drift"] is True
    amount = result["features"]["amount"]
    assert {"test", "statistic", "p_value_adjusted", "effect_size", "drifted"} <= set(amount)
    assert amount["drifted"] is True
    assert len(result["features"]) == 5


def test_drift_no_drift_exits_zero_with_false(tmp_path: Path) -> None:
    make_frame(rows=5_000, seed=1).to_parquet(tmp_path / "ref.parquet")
    make_frame(rows=5_000, seed=2).to_parquet(tmp_path / "cur.parquet")
    done = cli("drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), "--json", root=tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout)["drift"] is False


def test_drift_bad_input_exits_two_naming_the_problem(tmp_path: Path) -> None:
    make_frame(rows=500).to_csv(tmp_path / "ref.csv")
    make_frame(rows=500).drop(columns=["hour"]).to_csv(tmp_path / "cur.csv")
    missing = cli("drift", str(tmp_path / "ref.csv"), str(tmp_path / "nope.csv"), "--json", root=tmp_path)
    assert missing.returncode == 2 and "nope.csv" in missing.stderr
    no_column = cli("drift", str(tmp_path / "ref.csv"), str(tmp_path / "cur.csv"), "--json", root=tmp_path)
    assert no_column.returncode == 2 and "hour" in no_column.stderr


def test_validate_command_exit_code_and_report(tmp_path: Path) -> None:
    frame = make_frame(rows=1_000)
    frame.loc[[1, 2], "merchant_category"] = 12
    frame.to_csv(tmp_path / "bad.csv", index=False)
    done = cli("validate", str(tmp_path / "bad.csv"), root=tmp_path)
    assert done.returncode == 3
    assert "merchant_category: must be <= 9 (2 rows)" in done.stdout


def test_run_history_rollback_round_trip(tmp_path: Path) -> None:
    first = cli("run", "--seed", "1", root=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "decision: promoted" in first.stdout and "version: v1" in first.stdout
    second = cli("run", "--seed", "2", "--scenario", "amount_inflation", root=tmp_path)
    assert second.returncode == 0 and "version: v2" in second.stdout
    history = cli("history", root=tmp_path)
    lines = history.stdout.splitlines()
    assert lines[1].startswith("v1") and lines[2].startswith("v2") and lines[2].endswith("*")
    rolled = cli("rollback", "v1", root=tmp_path)
    assert rolled.returncode == 0 and "now serving v1" in rolled.stdout
    assert json.loads((tmp_path / "model" / "meta.json").read_text())["version"] == "v1"
    assert cli("rollback", "v9", root=tmp_path).returncode == 6


def test_run_invalid_source_exits_three(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    done = cli("run", "--source", str(tmp_path / "empty.csv"), root=tmp_path)
    assert done.returncode == 3
    assert "decision: invalid_data" in done.stdout and "empty" in done.stdout
    assert not (tmp_path / "model" / "meta.json").exists()


def test_bootstrap_trains_only_when_no_model(tmp_path: Path) -> None:
    first = cli("bootstrap", root=tmp_path)
    assert first.returncode == 0 and "version: v1" in first.stdout
    again = cli("bootstrap", root=tmp_path)
    assert again.returncode == 0 and "already serves v1" in again.stdout
