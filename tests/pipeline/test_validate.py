from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ValidateParams
from pipeline.validate import CANONICAL_DTYPES, validate
from tests.pipeline.conftest import make_frame

PARAMS = ValidateParams()


def rules(frame: pd.DataFrame, params: ValidateParams = PARAMS) -> dict[tuple[str, str], int]:
    result = validate(frame, params)
    assert result.ok is not bool(result.violations)
    return {(v.column, v.rule): v.count for v in result.violations}


def test_validate_accepts_clean_data_and_types_it() -> None:
    frame = make_frame(rows=1_000).astype({"hour": "int64", "amount": "float32"})
    result = validate(frame, PARAMS)
    assert result.ok and result.violations == ()
    assert result.frame is not None
    assert {c: str(result.frame[c].dtype) for c in CANONICAL_DTYPES} == CANONICAL_DTYPES
    assert result.rows_out == 1_000


def test_validate_missing_column() -> None:
    assert rules(make_frame(rows=1_000).drop(columns=["hour"])) == {("hour", "missing_column"): 1_000}


def test_validate_non_numeric_column() -> None:
    frame = make_frame(rows=1_000).astype({"amount": "object"})
    frame.loc[3, "amount"] = "twelve"
    assert rules(frame) == {("amount", "type"): 1_000}


def test_validate_boolean_column_is_not_numeric() -> None:
    frame = make_frame(rows=1_000)
    frame["merchant_category"] = frame["merchant_category"] > 4
    assert ("merchant_category", "type") in rules(frame)


def test_validate_unparsable_timestamps() -> None:
    frame = make_frame(rows=1_000).astype({"timestamp": "object"})
    frame.loc[[1, 2], "timestamp"] = "yesterday-ish"
    assert rules(frame) == {("timestamp", "type"): 2}


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("amount", 0.0, "below_minimum"),
        ("amount", -5.0, "below_minimum"),
        ("amount", 2e6, "above_maximum"),
        ("hour", 24, "above_maximum"),
        ("hour", -1, "below_minimum"),
        ("merchant_category", 10, "above_maximum"),
        ("distance_from_home", -0.5, "below_minimum"),
        ("num_transactions_last_24h", -1, "below_minimum"),
        ("amount", np.inf, "not_finite"),
        ("distance_from_home", -np.inf, "not_finite"),
        ("hour", 3.5, "not_integer"),
    ],
)
def test_validate_bounds_match_the_api(column: str, value: float, rule: str) -> None:
    frame = make_frame(rows=1_000).astype({column: "float64"})
    frame.loc[[5, 6, 7], column] = value
    assert rules(frame) == {(column, rule): 3}


def test_validate_too_many_nulls() -> None:
    frame = make_frame(rows=1_000).astype({"distance_from_home": "float64"})
    frame.loc[frame.index[:60], "distance_from_home"] = np.nan
    found = rules(frame)
    assert found == {("distance_from_home", "nulls"): 60}


def test_validate_few_nulls_are_dropped_and_counted() -> None:
    frame = make_frame(rows=1_000)
    frame.loc[frame.index[:30], "amount"] = np.nan
    result = validate(frame, PARAMS)
    assert result.ok
    assert result.dropped_null_rows == 30 and result.rows_out == 970
    assert result.frame is not None and len(result.frame) == 970


def test_validate_too_few_rows() -> None:
    assert rules(make_frame(rows=499, fraud_rate=0.1)) == {("<rows>", "min_rows"): 499}


def test_validate_one_class_only() -> None:
    frame = make_frame(rows=1_000)
    frame["label"] = 0
    assert rules(frame) == {("label", "one_class"): 1_000}


def test_validate_label_not_binary() -> None:
    frame = make_frame(rows=1_000)
    frame.loc[[0, 1], "label"] = 2
    assert rules(frame) == {("label", "label_values"): 2}


def test_validate_duplicate_transaction_ids() -> None:
    frame = make_frame(rows=1_000)
    frame.loc[[10, 11], "transaction_id"] = frame.loc[9, "transaction_id"]
    assert rules(frame) == {("transaction_id", "duplicate_id"): 3}


def test_validate_without_id_column_skips_duplicate_check() -> None:
    assert validate(make_frame(rows=1_000).drop(columns=["transaction_id"]), PARAMS).ok


def test_validate_reports_every_violation_at_once() -> None:
    frame = make_frame(rows=1_000).drop(columns=["merchant_category"])
    frame.loc[[1], "amount"] = -1.0
    frame.loc[[2, 3], "hour"] = 99
    found = rules(frame)
    assert found == {
        ("merchant_category", "missing_column"): 1_000,
        ("amount", "below_minimum"): 1,
        ("hour", "above_maximum"): 2,
    }
    summary = validate(frame, PARAMS).summary()
    assert "merchant_category" in summary and "hour: must be <= 23 (2 rows)" in summary


def test_validate_header_only_file_fails_min_rows() -> None:
    empty = make_frame(rows=1_000).iloc[0:0]
    found = rules(empty)
    assert found[("<rows>", "min_rows")] == 0


def test_validate_leaves_its_input_unchanged() -> None:
    frame = make_frame(rows=1_000).astype({"hour": "int64"})
    frame.loc[5, "amount"] = np.nan
    before = frame.copy()
    result = validate(frame.iloc[::-1], PARAMS)
    assert result.ok and result.frame is not None and result.dropped_null_rows == 1
    pd.testing.assert_frame_equal(frame, before)
    assert result.frame["timestamp"].is_monotonic_increasing


def test_validate_unique_ids_in_any_order_pass() -> None:
    frame = make_frame(rows=1_000)
    frame["transaction_id"] = frame["transaction_id"].to_numpy()[::-1]
    assert validate(frame, PARAMS).ok
