from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipeline.config import ExtractParams, TrainParams
from pipeline.extract import (
    COLUMNS,
    Source,
    SourceError,
    extract,
    parse_source,
    read_sql,
    read_table,
    redact_url,
    simulate,
    write_table,
)
from pipeline.train import predict, time_split, train
from service.features import FEATURES, HIGH_RISK_MERCHANTS
from tests.pipeline.conftest import make_frame


def test_simulate_same_seed_gives_identical_frames() -> None:
    pd.testing.assert_frame_equal(make_frame(seed=3), make_frame(seed=3))


def test_simulate_different_seeds_give_different_frames() -> None:
    assert not make_frame(seed=3)["amount"].equals(make_frame(seed=4)["amount"])


def test_simulate_has_contract_columns_sorted_by_timestamp() -> None:
    frame = make_frame(rows=1_000)
    assert tuple(frame.columns) == COLUMNS
    assert frame["timestamp"].is_monotonic_increasing
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert (frame["hour"] == frame["timestamp"].dt.hour).all()
    assert frame["transaction_id"].is_unique


def test_simulate_respects_contract_bounds() -> None:
    frame = make_frame(rows=20_000, seed=9)
    for feature in FEATURES:
        values = frame[feature.name]
        assert values.max() <= feature.maximum
        if feature.exclusive_minimum:
            assert values.min() > feature.minimum
        else:
            assert values.min() >= feature.minimum


@pytest.mark.parametrize("rate", [0.005, 0.02, 0.15])
def test_simulate_fraud_rate_is_configurable(rate: float) -> None:
    frame = make_frame(rows=10_000, fraud_rate=rate)
    assert frame["label"].mean() == pytest.approx(rate, abs=1e-4)


@pytest.mark.parametrize("rate", [0.001, 0.2])
def test_extract_params_reject_fraud_rate_out_of_range(rate: float) -> None:
    with pytest.raises(ValidationError, match="fraud_rate"):
        ExtractParams(fraud_rate=rate)


def test_simulate_fraud_overlaps_legitimate_spending() -> None:
    frame = make_frame(rows=100_000, seed=5)
    fraud, legit = frame[frame["label"] == 1], frame[frame["label"] == 0]
    daytime_common_small_near = (
        fraud["hour"].between(9, 17)
        & ~fraud["merchant_category"].isin(HIGH_RISK_MERCHANTS)
        & (fraud["amount"] < 50)
        & (fraud["distance_from_home"] < 10)
    )
    assert daytime_common_small_near.sum() > 0, "some fraud must look like everyday spending"
    assert (fraud["hour"].between(9, 17)).mean() > 0.2
    assert (legit["amount"] > 500).sum() > 100, "some legitimate spending is large"
    assert (legit["hour"] <= 4).sum() > 100, "some legitimate spending is late"
    assert (legit["distance_from_home"] > 200).sum() > 100, "some legitimate spending is far away"


def test_simulate_default_model_lands_in_realistic_range() -> None:
    frame = make_frame(rows=50_000, seed=11)
    split = time_split(frame, TrainParams())
    model = train(split, TrainParams())
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = predict(model.booster, split.test)
    auc = roc_auc_score(split.test["label"], scores)
    pr_auc = average_precision_score(split.test["label"], scores)
    assert 0.90 <= auc <= 0.98
    assert pr_auc < 0.85


def test_simulate_amount_inflation_scales_legitimate_amounts_only() -> None:
    base = make_frame(rows=5_000, seed=2)
    inflated = make_frame(rows=5_000, seed=2, scenario="amount_inflation", inflation_factor=2.0)
    legit = base["label"] == 0
    assert inflated.loc[legit.to_numpy(), "amount"].median() == pytest.approx(
        2 * base.loc[legit, "amount"].median(), rel=0.1
    )


def test_simulate_new_fraud_pattern_moves_fraud_to_daytime_common_merchants() -> None:
    base = make_frame(rows=50_000, seed=2)
    drifted = make_frame(rows=50_000, seed=2, scenario="new_fraud_pattern")

    def share(frame: pd.DataFrame, mask: pd.Series) -> float:
        return float(mask[frame["label"] == 1].mean())

    assert share(drifted, drifted["hour"].between(8, 20)) > share(base, base["hour"].between(8, 20)) + 0.2
    common = ~drifted["merchant_category"].isin(HIGH_RISK_MERCHANTS)
    assert share(drifted, common) > share(base, ~base["merchant_category"].isin(HIGH_RISK_MERCHANTS)) + 0.3


def test_simulate_volume_spike_multiplies_rows_and_activity() -> None:
    base = make_frame(rows=4_000, seed=2)
    spiked = make_frame(rows=4_000, seed=2, scenario="volume_spike", spike_factor=3.0)
    assert len(spiked) == 12_000
    assert spiked["num_transactions_last_24h"].mean() > 2 * base["num_transactions_last_24h"].mean()


def test_simulate_rejects_unknown_scenario() -> None:
    with pytest.raises(ValueError, match="scenario must be one of"):
        simulate(ExtractParams(rows=10), "meteor_strike")


@pytest.mark.parametrize(
    ("value", "kind"),
    [("simulator", "simulator"), ("data/x.csv", "file"), ("x.parquet", "file"), ("sqlite:///x.db", "sql")],
)
def test_parse_source_picks_kind(value: str, kind: str) -> None:
    assert parse_source(value).kind == kind


def test_parse_source_rejects_unknown_format() -> None:
    with pytest.raises(SourceError, match="x.json"):
        parse_source("x.json")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_then_read_table_round_trips(tmp_path: Path, suffix: str) -> None:
    frame = make_frame(rows=300)
    path = tmp_path / f"tx{suffix}"
    write_table(frame, path)
    back = read_table(path)
    assert len(back) == 300
    np.testing.assert_allclose(back["amount"], frame["amount"])


def test_read_table_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nope.csv: no such file"):
        read_table(tmp_path / "nope.csv")


def test_read_table_empty_csv_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(SourceError, match="empty"):
        read_table(path)


def test_read_table_truncated_parquet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.parquet"
    write_table(make_frame(rows=300), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SourceError, match="cut.parquet: cannot be read"):
        read_table(path)


def _sqlite_with(frame: pd.DataFrame, path: Path) -> str:
    with sqlite3.connect(path) as connection:
        stored = frame.copy()
        stored["timestamp"] = stored["timestamp"].dt.tz_localize(None)
        stored.to_sql("transactions", connection, index=False)
    return f"sqlite:///{path}"


def test_read_sql_returns_the_time_window(tmp_path: Path) -> None:
    frame = make_frame(rows=3_000, seed=4)  # 30 days ending 2026-01-01
    url = _sqlite_with(frame, tmp_path / "tx.db")
    until = datetime(2026, 1, 1, tzinfo=UTC)
    window = read_sql(url, "transactions", 10, until)
    expected = frame[frame["timestamp"] >= pd.Timestamp("2025-12-22", tz="UTC")]
    assert len(window) == len(expected) > 0
    assert window["timestamp"].min() >= pd.Timestamp("2025-12-22", tz="UTC")
    assert list(window["transaction_id"]) == list(expected["transaction_id"])


def test_extract_sql_source_feeds_the_same_columns(tmp_path: Path) -> None:
    url = _sqlite_with(make_frame(rows=1_000), tmp_path / "tx.db")
    result = extract(Source("sql", url), ExtractParams(), until=datetime(2026, 1, 1, tzinfo=UTC))
    assert set(COLUMNS) <= set(result.frame.columns)
    assert result.rows == 1_000


def test_read_sql_missing_table_says_which(tmp_path: Path) -> None:
    url = _sqlite_with(make_frame(rows=100), tmp_path / "tx.db")
    with pytest.raises(SourceError, match="no table named 'payments'"):
        read_sql(url, "payments", 30)


def test_read_sql_unreachable_database_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="query failed"):
        read_sql(f"sqlite:///{tmp_path}/missing/dir/tx.db", "transactions", 30)


def test_redact_url_hides_password() -> None:
    assert "s3cret" not in redact_url("postgresql://fraud:s3cret@db.internal/tx")


def test_extract_scenario_only_applies_to_simulator(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    write_table(make_frame(rows=100), path)
    with pytest.raises(SourceError, match="only applies to the simulator"):
        extract(Source("file", str(path)), ExtractParams(), "amount_inflation")
