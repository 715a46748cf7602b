"""POST /predict and POST /predict/batch: the original contract, strict input, batches, reasons."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

NAN_BODY = (
    b'{"amount": NaN, "hour": 14, "merchant_category": 2, "distance_from_home": 5.0, '
    b'"num_transactions_last_24h": 3}'
)


def fields_named(response: Any) -> list[Any]:
    return [issue["loc"][-1] for issue in response.json()["detail"]]


# -- the original API's shapes ---------------------------------------------------------------------


def test_predict_valid_request_returns_original_shape(client: TestClient, factories: Any) -> None:
    response = client.post("/predict", json=factories.valid())
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body["is_fraud"], bool)
    assert isinstance(body["fraud_probability"], float)
    assert 0.0 <= body["fraud_probability"] <= 1.0
    assert body["model_version"] == "v1"
    assert body["is_fraud"] is False


def test_predict_no_model_answers_503_with_reason(empty_client: TestClient, factories: Any) -> None:
    response = empty_client.post("/predict", json=factories.valid())
    assert response.status_code == 503
    assert "no model is loaded" in response.json()["detail"]
    assert "meta.json" in response.json()["detail"]


@pytest.mark.parametrize(
    "field", ["amount", "hour", "merchant_category", "distance_from_home", "num_transactions_last_24h"]
)
def test_predict_missing_field_names_it(client: TestClient, factories: Any, field: str) -> None:
    body = factories.valid()
    del body[field]
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert fields_named(response) == [field]
    assert response.json()["detail"][0]["type"] == "missing"


@pytest.mark.parametrize("value", ["abc", "150", None, [1], {"v": 1}])
def test_predict_non_numeric_value_names_field(client: TestClient, factories: Any, value: Any) -> None:
    response = client.post("/predict", json={**factories.valid(), "amount": value})
    assert response.status_code == 422
    assert fields_named(response) == ["amount"]


@pytest.mark.parametrize("amount", [0, 0.0, -1.0, -0.0001])
def test_predict_amount_not_positive_is_refused(client: TestClient, factories: Any, amount: float) -> None:
    response = client.post("/predict", json={**factories.valid(), "amount": amount})
    assert response.status_code == 422
    assert fields_named(response) == ["amount"]


@pytest.mark.parametrize("hour", [-1, 24, 100])
def test_predict_hour_out_of_range_is_refused(client: TestClient, factories: Any, hour: int) -> None:
    response = client.post("/predict", json={**factories.valid(), "hour": hour})
    assert response.status_code == 422
    assert fields_named(response) == ["hour"]


@pytest.mark.parametrize("category", [-1, 10])
def test_predict_merchant_category_out_of_range_is_refused(
    client: TestClient, factories: Any, category: int
) -> None:
    response = client.post("/predict", json={**factories.valid(), "merchant_category": category})
    assert response.status_code == 422
    assert fields_named(response) == ["merchant_category"]


@pytest.mark.parametrize(
    ("field", "value"), [("distance_from_home", -0.5), ("num_transactions_last_24h", -1)]
)
def test_predict_negative_distance_or_count_is_refused(
    client: TestClient, factories: Any, field: str, value: float
) -> None:
    response = client.post("/predict", json={**factories.valid(), field: value})
    assert response.status_code == 422
    assert fields_named(response) == [field]


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", 1_000_000.01), ("distance_from_home", 20_039.0), ("num_transactions_last_24h", 10_001)],
)
def test_predict_above_contract_maximum_is_refused(
    client: TestClient, factories: Any, field: str, value: float
) -> None:
    response = client.post("/predict", json={**factories.valid(), field: value})
    assert response.status_code == 422
    assert fields_named(response) == [field]


def test_predict_version_comes_from_meta_not_env(
    model_dir: Path, make_client: Callable[..., TestClient], factories: Any
) -> None:
    client = make_client(model_dir, model_version="v1.0")
    assert client.post("/predict", json=factories.valid()).json()["model_version"] == "v1"


def test_predict_meta_without_version_is_labelled_by_model_version(
    model_dir: Path, make_client: Callable[..., TestClient], factories: Any
) -> None:
    factories.rewrite_meta(model_dir, lambda raw: raw.pop("version"))
    client = make_client(model_dir, model_version="v1.0")
    response = client.post("/predict", json=factories.valid())
    assert response.status_code == 200
    assert response.json()["model_version"] == "v1.0"


# -- strict input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_predict_non_finite_number_is_refused(client: TestClient, token: bytes) -> None:
    response = client.post(
        "/predict", content=NAN_BODY.replace(b"NaN", token), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert fields_named(response) == ["amount"]


@pytest.mark.parametrize("field", ["amount", "hour", "distance_from_home"])
def test_predict_boolean_is_not_a_number(client: TestClient, factories: Any, field: str) -> None:
    response = client.post("/predict", json={**factories.valid(), field: True})
    assert response.status_code == 422
    assert fields_named(response) == [field]


def test_predict_numeric_string_is_not_coerced(client: TestClient, factories: Any) -> None:
    response = client.post("/predict", json={**factories.valid(), "hour": "14"})
    assert response.status_code == 422
    assert fields_named(response) == ["hour"]


def test_predict_whole_float_for_integer_field_is_accepted(client: TestClient, factories: Any) -> None:
    integral = client.post("/predict", json={**factories.valid(), "hour": 14.0})
    assert integral.status_code == 200
    assert integral.json() == client.post("/predict", json=factories.valid()).json()
    fractional = client.post("/predict", json={**factories.valid(), "hour": 14.5})
    assert fractional.status_code == 422
    assert fields_named(fractional) == ["hour"]


@pytest.mark.parametrize("payload", [b"not json", b"{", b"", b'{"amount": 1,}'])
def test_predict_body_not_json_is_a_clear_422(client: TestClient, payload: bytes) -> None:
    response = client.post("/predict", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_predict_body_not_object_is_a_clear_422(client: TestClient, payload: bytes) -> None:
    response = client.post("/predict", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_predict_unknown_fields_are_ignored(client: TestClient, factories: Any) -> None:
    response = client.post("/predict", json={**factories.valid(), "currency": "EUR"})
    assert response.status_code == 200


# -- threshold and reasons -------------------------------------------------------------------------


def test_predict_carries_threshold_from_meta(
    tmp_path: Path, booster_v1: Any, make_client: Callable[..., TestClient], factories: Any
) -> None:
    directory = tmp_path / "model"
    factories.write_version(directory, "v1", booster_v1, threshold=0.01)
    body = make_client(directory).post("/predict", json=factories.valid()).json()
    assert body["threshold"] == 0.01
    assert body["is_fraud"] is (body["fraud_probability"] >= 0.01)
    assert body["is_fraud"] is True


def test_predict_threshold_decides_is_fraud(
    tmp_path: Path, booster_v1: Any, make_client: Callable[..., TestClient], factories: Any
) -> None:
    probability = None
    for threshold, expected in ((0.0, True), (1.0, False)):
        directory = tmp_path / f"model-{threshold}"
        factories.write_version(directory, "v1", booster_v1, threshold=threshold)
        body = make_client(directory).post("/predict", json=factories.fraud()).json()
        assert body["is_fraud"] is expected
        assert body["threshold"] == threshold
        probability = probability or body["fraud_probability"]
    assert probability is not None and probability < 1.0


def test_predict_flagged_carries_reasons(client: TestClient, factories: Any) -> None:
    body = client.post("/predict", json=factories.fraud()).json()
    assert body["is_fraud"] is True
    reasons = body["reasons"]
    assert 1 <= len(reasons) <= 3
    contributions = [reason["contribution"] for reason in reasons]
    assert contributions == sorted(contributions, reverse=True)
    assert all(c > 0 for c in contributions)
    assert {reason["feature"] for reason in reasons} <= set(factories.fraud())
    for reason in reasons:
        assert reason["value"] == pytest.approx(factories.fraud()[reason["feature"]])


def test_predict_not_flagged_has_no_reasons_unless_asked(client: TestClient, factories: Any) -> None:
    plain = client.post("/predict", json=factories.valid()).json()
    assert plain["is_fraud"] is False
    assert plain["reasons"] is None
    explained = client.post("/predict", params={"explain": "true"}, json=factories.valid()).json()
    assert isinstance(explained["reasons"], list)
    assert explained["fraud_probability"] == plain["fraud_probability"]


# -- batch -----------------------------------------------------------------------------------------


def test_batch_scores_in_order_like_single(client: TestClient, factories: Any) -> None:
    rows = [factories.valid(), factories.fraud(), {**factories.valid(), "amount": 999.0}, factories.fraud()]
    response = client.post("/predict/batch", json={"transactions": rows})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "v1"
    assert len(body["predictions"]) == len(rows)
    for row, prediction in zip(rows, body["predictions"], strict=True):
        assert prediction == client.post("/predict", json=row).json()


def test_batch_empty_returns_empty(client: TestClient) -> None:
    response = client.post("/predict/batch", json={"transactions": []})
    assert response.status_code == 200
    assert response.json()["predictions"] == []


def test_batch_over_limit_answers_413_with_limit(
    model_dir: Path, make_client: Callable[..., TestClient], factories: Any
) -> None:
    client = make_client(model_dir, max_batch_rows=5)
    assert client.post("/predict/batch", json={"transactions": [factories.valid()] * 5}).status_code == 200
    response = client.post("/predict/batch", json={"transactions": [factories.valid()] * 6})
    assert response.status_code == 413
    assert "limit is 5" in response.json()["detail"]


def test_batch_one_invalid_row_rejects_batch_with_index_and_field(client: TestClient, factories: Any) -> None:
    rows = [factories.valid(), factories.valid(), {**factories.valid(), "hour": 30}, factories.valid()]
    response = client.post("/predict/batch", json={"transactions": rows})
    assert response.status_code == 422
    assert [issue["loc"] for issue in response.json()["detail"]] == [["body", "transactions", 2, "hour"]]
    assert "predictions" not in response.json()


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_batch_non_finite_number_names_row_and_field(client: TestClient, token: bytes) -> None:
    body = b'{"transactions": [' + NAN_BODY.replace(b"NaN", token) + b"]}"
    response = client.post("/predict/batch", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert [issue["loc"] for issue in response.json()["detail"]] == [["body", "transactions", 0, "amount"]]


@pytest.mark.parametrize("payload", [b"not json", b"", b"[1, 2]", b'{"rows": []}', b"null"])
def test_batch_body_not_a_batch_is_a_clear_422(client: TestClient, payload: bytes) -> None:
    response = client.post("/predict/batch", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_batch_response_matches_batch_response_model(client: TestClient, factories: Any) -> None:
    from service.schemas import BatchResponse

    rows = [factories.valid(), factories.fraud()]
    response = client.post("/predict/batch", json={"transactions": rows})
    assert response.headers["content-type"] == "application/json"
    parsed = BatchResponse.model_validate_json(response.content)
    assert parsed.model_dump(mode="json") == response.json()


def test_batch_over_limit_is_refused_before_validation(
    model_dir: Path, make_client: Callable[..., TestClient], factories: Any
) -> None:
    client = make_client(model_dir, max_batch_rows=2)
    rows = [{"amount": "not even valid"}] * 3
    response = client.post("/predict/batch", json={"transactions": rows})
    assert response.status_code == 413
    assert "limit is 2" in response.json()["detail"]


def test_batch_not_a_list_is_refused(client: TestClient, factories: Any) -> None:
    response = client.post("/predict/batch", json={"transactions": factories.valid()})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "transactions"]


def test_batch_flagged_rows_carry_reasons(client: TestClient, factories: Any) -> None:
    rows = [factories.valid(), factories.fraud()]
    plain = client.post("/predict/batch", json={"transactions": rows}).json()["predictions"]
    assert plain[0]["reasons"] is None
    assert plain[1]["is_fraud"] is True and plain[1]["reasons"]
    explained = client.post("/predict/batch", params={"explain": "true"}, json={"transactions": rows}).json()
    assert all(isinstance(p["reasons"], list) for p in explained["predictions"])


def test_batch_no_model_answers_503(empty_client: TestClient, factories: Any) -> None:
    response = empty_client.post("/predict/batch", json={"transactions": [factories.valid()]})
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False)]
)
def test_predict_explain_flag_spellings(client: TestClient, factories: Any, raw: str, expected: bool) -> None:
    body = client.post("/predict", params={"explain": raw}, json=factories.valid()).json()
    assert (body["reasons"] is not None) is expected


def test_predict_explain_flag_invalid_is_422(client: TestClient, factories: Any) -> None:
    response = client.post("/predict", params={"explain": "maybe"}, json=factories.valid())
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "explain"]


def test_predict_explain_parameter_is_documented(client: TestClient) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["parameters"]
    assert [(p["name"], p["in"], p["schema"]["type"]) for p in parameters] == [
        ("explain", "query", "boolean")
    ]
