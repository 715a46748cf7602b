"""The request models: built from the feature contract; the batch fast path agrees with them."""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from service.features import FEATURE_NAMES, FEATURES
from service.schemas import BatchRequest, Transaction, plainly_valid_batch, plainly_valid_row


def test_schemas_transaction_fields_follow_contract_order_and_bounds() -> None:
    assert tuple(Transaction.model_fields) == FEATURE_NAMES
    schema = Transaction.model_json_schema()["properties"]
    for feature in FEATURES:
        prop = schema[feature.name]
        assert prop["type"] == ("integer" if feature.dtype == "int" else "number")
        assert prop["maximum"] == feature.maximum
        key = "exclusiveMinimum" if feature.exclusive_minimum else "minimum"
        assert prop[key] == feature.minimum
        assert feature.unit in prop["description"]


def _valid_row(rng: random.Random) -> dict[str, Any]:
    return {
        "amount": rng.choice([0.01, 1, 150.0, 999_999.99, 1_000_000]),
        "hour": rng.choice([0, 23, 14, 3.0]),
        "merchant_category": rng.choice([0, 9, 5]),
        "distance_from_home": rng.choice([0, 0.0, 5.5, 20_038]),
        "num_transactions_last_24h": rng.choice([0, 10_000, 7.0]),
    }


MUTATIONS: list[Any] = [
    True,
    False,
    None,
    "1",
    "abc",
    [1],
    {"v": 1},
    -1,
    0,
    -0.0,
    0.5,
    24,
    10,
    1e6 + 1,
    20_038.5,
    10_001,
    2**64,
    14.5,
]


def test_schemas_fast_path_accepts_only_what_validation_accepts_with_same_values() -> None:
    rng = random.Random(0)
    checked_accept = checked_refuse = 0
    for _ in range(3000):
        rows = [_valid_row(rng) for _ in range(rng.randint(1, 4))]
        data: dict[str, Any] = {"transactions": rows}
        if rng.random() < 0.7:
            row = rng.choice(rows)
            action = rng.random()
            if action < 0.7:
                row[rng.choice(FEATURE_NAMES)] = copy.deepcopy(rng.choice(MUTATIONS))
            elif action < 0.8:
                del row[rng.choice(FEATURE_NAMES)]
            elif action < 0.9:
                row["extra"] = 1
            else:
                data["other"] = 1
        fast = plainly_valid_batch(data)
        try:
            validated = BatchRequest.model_validate(data)
        except ValidationError:
            assert fast is None, data
            checked_refuse += 1
            continue
        if fast is not None:
            expected = np.array([t.as_row() for t in validated.transactions], dtype=np.float64)
            np.testing.assert_array_equal(fast, expected)
            np.testing.assert_array_equal(fast.astype(np.float32), expected.astype(np.float32))
            checked_accept += 1
    assert checked_accept > 500 and checked_refuse > 500


def test_schemas_row_fast_path_accepts_only_what_validation_accepts_with_same_values() -> None:
    rng = random.Random(1)
    checked_accept = checked_refuse = 0
    for _ in range(5000):
        row: dict[str, Any] = _valid_row(rng)
        action = rng.random()
        if action < 0.6:
            row[rng.choice(FEATURE_NAMES)] = copy.deepcopy(rng.choice(MUTATIONS))
        elif action < 0.7:
            del row[rng.choice(FEATURE_NAMES)]
        elif action < 0.8:
            row["extra"] = rng.choice(MUTATIONS)
        fast = plainly_valid_row(row)
        try:
            expected = Transaction.model_validate(row).as_row()
        except ValidationError:
            assert fast is None, row
            checked_refuse += 1
            continue
        if fast is not None:
            assert fast == expected, row
            assert [type(value) for value in fast] == [type(value) for value in expected], row
            checked_accept += 1
    assert checked_accept > 1000 and checked_refuse > 1000


@pytest.mark.parametrize("data", [None, [], "x", 1, {}, [_valid_row(random.Random(2))]])
def test_schemas_row_fast_path_defers_on_malformed_rows(data: Any) -> None:
    assert plainly_valid_row(data) is None


@pytest.mark.parametrize(
    "data",
    [None, [], {"transactions": "x"}, {"transactions": [1]}, {"transactions": [], "x": 1}, {"rows": []}],
)
def test_schemas_fast_path_defers_on_malformed_batches(data: Any) -> None:
    assert plainly_valid_batch(data) is None
