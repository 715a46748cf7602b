"""Fuzzing the request parsing and scoring path with hypothesis: no crash, no unhandled exception.

Three layers: the parsing functions alone (``Transaction``, ``BatchRequest``, the fast paths
``plainly_valid_row`` / ``plainly_valid_batch``, which must accept a subset of what the models
accept, with the same values), the scorer on whatever validation lets through, and the whole ASGI
app fed arbitrary JSON, mutated transactions and raw bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.api.routes.predict import _parse_batch
from service.features import FEATURE_NAMES
from service.schemas import BatchRequest, Transaction, plainly_valid_batch, plainly_valid_row
from service.scorer import Scorer
from tests.reliability.service_support import VALID_TRANSACTION, client_of, model_dir_with

EXAMPLES = 1000
# Each test takes 10-30 s on the 2-core machine: all are marked slow.
pytestmark = pytest.mark.slow

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=2e6),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-2, max_value=30),
    st.sampled_from(
        [0, -0.0, 0.0, 1e-320, 23, 24, 9, 10, 10_000, 10_001, 20_038, 20_038.000001, 1e6, 1e6 + 1]
    ),
)
field_values = st.one_of(
    numbers, st.booleans(), st.none(), st.text(max_size=5), st.lists(numbers, max_size=2), st.just({})
)


@st.composite
def transactions(draw: st.DrawFn) -> Any:
    """A transaction-shaped object: each field kept, dropped or replaced; sometimes an extra key."""
    row: dict[str, Any] = {}
    for name in FEATURE_NAMES:
        choice = draw(st.integers(min_value=0, max_value=9))
        if choice == 0:
            continue  # missing
        row[name] = VALID_TRANSACTION[name] if choice < 4 else draw(field_values)
    if draw(st.booleans()):
        row[draw(st.text(max_size=8))] = draw(field_values)
    return row


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=10)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
batches = st.one_of(
    st.fixed_dictionaries({"transactions": st.lists(transactions(), max_size=6)}),
    st.fixed_dictionaries({"transactions": st.lists(st.just(dict(VALID_TRANSACTION)), max_size=3)}),
    st.dictionaries(st.sampled_from(["transactions", "extra"]), json_values, max_size=2),
    json_values,
)


def _validate_row(data: Any) -> tuple[float, ...] | None:
    try:
        return Transaction.model_validate(data).as_row()
    except ValidationError:
        return None


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.one_of(transactions(), json_values))
def test_fuzz_fast_row_path_accepts_a_subset_of_transaction_with_equal_values(data: Any) -> None:
    fast = plainly_valid_row(data)
    validated = _validate_row(data)
    if fast is None:
        return  # Transaction judges it alone, which the property below covers
    assert validated is not None, data
    assert len(fast) == len(validated) == len(FEATURE_NAMES)
    assert all(float(a) == float(b) for a, b in zip(fast, validated, strict=True)), (fast, validated)


@settings(max_examples=EXAMPLES, deadline=None)
@given(batches)
def test_fuzz_fast_batch_path_accepts_a_subset_of_batch_request_with_equal_values(data: Any) -> None:
    fast = plainly_valid_batch(data)
    try:
        validated = [t.as_row() for t in BatchRequest.model_validate(data).transactions]
    except ValidationError:
        validated = None
    if fast is None:
        return
    assert validated is not None, data
    assert np.array_equal(fast, np.asarray(validated, dtype=np.float64).reshape(len(validated), 5)), data


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.one_of(transactions(), json_values))
def test_fuzz_transaction_validation_raises_only_validation_error(data: Any) -> None:
    try:
        row = Transaction.model_validate(data).as_row()
    except ValidationError as exc:
        # Every problem can be reported: locations of str/int parts, a message and a type.
        for error in exc.errors(include_url=False):
            assert isinstance(error["msg"], str) and isinstance(error["type"], str)
        return
    assert all(math.isfinite(value) for value in row)


@settings(max_examples=EXAMPLES, deadline=None)
@given(batches, st.integers(min_value=0, max_value=8))
def test_fuzz_batch_parser_returns_validated_rows_or_raises_a_4xx(data: Any, limit: int) -> None:
    try:
        rows = _parse_batch(data, limit)
    except HTTPException as exc:
        assert exc.status_code == 413
        assert len(data["transactions"]) > limit
        return
    except RequestValidationError as exc:
        assert exc.errors() and all(error["loc"][0] == "body" for error in exc.errors())
        with pytest.raises(ValidationError):
            BatchRequest.model_validate(data)
        return
    expected = [t.as_row() for t in BatchRequest.model_validate(data).transactions]
    assert len(rows) == len(expected) <= limit
    assert np.array_equal(
        np.asarray(rows, dtype=np.float64).reshape(len(expected), 5),
        np.asarray(expected, dtype=np.float64).reshape(len(expected), 5),
    )


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    return Scorer.load(model_dir_with(tmp_path_factory.mktemp("fuzz-scorer"), "v1"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(transactions(), min_size=1, max_size=5))
def test_fuzz_scorer_scores_whatever_validation_accepts(scorer: Scorer, data: list[Any]) -> None:
    rows = [row for row in map(_validate_row, data) if row is not None]
    if not rows:
        return
    scores = scorer.score(rows)
    assert scores.probabilities.shape == (len(rows),)
    assert np.all((scores.probabilities >= 0) & (scores.probabilities <= 1))
    # Invariance: each row scores the same alone as in the batch.
    for index, row in enumerate(rows):
        assert scorer.score([row]).probabilities[0] == scores.probabilities[index]


# -- the whole app ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with client_of(
        model_dir_with(tmp_path_factory.mktemp("fuzz-app"), "v1"), max_batch_rows=5
    ) as test_client:
        yield test_client


DOCUMENTED = {"/predict": {200, 413, 415, 422}, "/predict/batch": {200, 413, 415, 422}}


def _check(response: Any, route: str) -> None:
    assert response.status_code in DOCUMENTED[route], (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code == 200:
        predictions = [body] if route == "/predict" else body["predictions"]
        for prediction in predictions:
            assert 0 <= prediction["fraud_probability"] <= 1
            assert prediction["model_version"] == "v1"
    elif response.status_code == 422:
        assert body["detail"] and all(set(issue) == {"loc", "msg", "type"} for issue in body["detail"])
    else:
        assert isinstance(body["detail"], str)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(sorted(DOCUMENTED)),
    data=st.one_of(transactions(), batches),
    explain=st.sampled_from([None, "true", "false", "x"]),
)
def test_fuzz_app_answers_json_bodies_with_documented_4xx_or_200(
    client: TestClient, route: str, data: Any, explain: str | None
) -> None:
    # allow_nan: NaN and Infinity go over the wire as bare tokens, as a careless client sends them.
    payload = json.dumps(data, allow_nan=True)
    url = route if explain is None else f"{route}?explain={explain}"
    _check(client.post(url, content=payload, headers={"content-type": "application/json"}), route)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(sorted(DOCUMENTED)),
    payload=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda text, cut: text[:cut],
            st.sampled_from(
                [json.dumps(VALID_TRANSACTION), json.dumps({"transactions": [VALID_TRANSACTION] * 2})]
            ),
            st.integers(min_value=0, max_value=300),
        ).map(str.encode),
        st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    ),
    content_type=st.sampled_from(
        [None, "application/json", "text/plain", "application/json; charset=utf-16", "application/x+json", ""]
    ),
)
def test_fuzz_app_answers_raw_bytes_with_documented_4xx_or_200(
    client: TestClient, route: str, payload: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    _check(client.post(route, content=payload, headers=headers), route)
