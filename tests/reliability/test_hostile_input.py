"""Hand-written hostile requests that generators rarely produce: each gets a clear 4xx, never a 500.

Most run in process (TestClient); those that depend on the HTTP server itself (a 50 MB body on the
wire, chunked bodies, malformed HTTP) run against ``python -m service`` on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.features import FEATURE_NAMES
from tests.reliability.service_support import (
    VALID_TRANSACTION,
    LiveService,
    client_of,
    live_service,
    model_dir_with,
    rss_bytes,
)

ROUTES = ("/predict", "/predict/batch")
MAX_BODY_BYTES = Settings.model_fields["max_body_bytes"].default
FIFTY_MB = 50 * 1024 * 1024
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with client_of(model_dir_with(tmp_path_factory.mktemp("hostile"), "v1")) as test_client:
        yield test_client


def _raw_transaction(field: str, token: str) -> str:
    """The valid transaction as JSON text with ``field``'s value replaced by the raw token."""
    parts = [
        f'"{name}": {token if name == field else json.dumps(VALID_TRANSACTION[name])}'
        for name in FEATURE_NAMES
    ]
    return "{" + ", ".join(parts) + "}"


def _body(route: str, transaction_text: str) -> str:
    return transaction_text if route == "/predict" else '{"transactions": [' + transaction_text + "]}"


def _field_loc(route: str, field: str, row: int = 0) -> list[Any]:
    return ["body", field] if route == "/predict" else ["body", "transactions", row, field]


def _assert_refused(response: httpx.Response, status: int, loc: list[Any] | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    if loc is not None:
        assert [issue["loc"] for issue in body["detail"]] == [loc]
        assert all(set(issue) == {"loc", "msg", "type"} for issue in body["detail"])
    return body


# -- numbers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", FEATURE_NAMES)
def test_hostile_non_finite_token_is_422_naming_field(
    client: TestClient, route: str, token: str, field: str
) -> None:
    response = client.post(route, content=_body(route, _raw_transaction(field, token)), headers=JSON)
    _assert_refused(response, 422, _field_loc(route, field))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("token", ["1e308", "-1e308", "1e400", "1" + "0" * 400, "-1" + "0" * 400])
@pytest.mark.parametrize("field", FEATURE_NAMES)
def test_hostile_huge_number_is_422_naming_field(
    client: TestClient, route: str, token: str, field: str
) -> None:
    response = client.post(route, content=_body(route, _raw_transaction(field, token)), headers=JSON)
    _assert_refused(response, 422, _field_loc(route, field))


@pytest.mark.parametrize("route", ROUTES)
def test_hostile_integer_of_5000_digits_is_422_not_500(client: TestClient, route: str) -> None:
    # Python refuses to parse integers over 4,300 digits (a denial-of-service guard of its own).
    response = client.post(route, content=_body(route, _raw_transaction("amount", "9" * 5000)), headers=JSON)
    _assert_refused(response, 422)


@pytest.mark.parametrize("route", ROUTES)
def test_hostile_negative_zero_amount_is_not_positive(client: TestClient, route: str) -> None:
    response = client.post(route, content=_body(route, _raw_transaction("amount", "-0.0")), headers=JSON)
    body = _assert_refused(response, 422, _field_loc(route, "amount"))
    assert body["detail"][0]["type"] == "greater_than"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "field", ["hour", "merchant_category", "distance_from_home", "num_transactions_last_24h"]
)
def test_hostile_negative_zero_is_zero_where_zero_is_allowed(
    client: TestClient, route: str, field: str
) -> None:
    # -0.0 == 0.0, within every bound that includes 0: accepted, and scored exactly like 0.
    minus = client.post(route, content=_body(route, _raw_transaction(field, "-0.0")), headers=JSON)
    zero = client.post(route, content=_body(route, _raw_transaction(field, "0")), headers=JSON)
    assert minus.status_code == zero.status_code == 200
    assert minus.json() == zero.json()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("token", ["true", "false"])
@pytest.mark.parametrize("field", FEATURE_NAMES)
def test_hostile_boolean_is_not_a_number(client: TestClient, route: str, token: str, field: str) -> None:
    response = client.post(route, content=_body(route, _raw_transaction(field, token)), headers=JSON)
    _assert_refused(response, 422, _field_loc(route, field))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("token", ['"150"', '"14"', '"1e3"', '"NaN"', '""', "null", "[1]", '{"v": 1}'])
@pytest.mark.parametrize("field", FEATURE_NAMES)
def test_hostile_number_as_string_or_other_type_is_422(
    client: TestClient, route: str, token: str, field: str
) -> None:
    response = client.post(route, content=_body(route, _raw_transaction(field, token)), headers=JSON)
    _assert_refused(response, 422, _field_loc(route, field))


# -- unknown fields: ignored in a transaction (as the original API did), refused beside a batch -----


@pytest.mark.parametrize("route", ROUTES)
def test_hostile_unknown_fields_in_a_transaction_are_ignored(client: TestClient, route: str) -> None:
    plain = client.post(route, content=_body(route, json.dumps(VALID_TRANSACTION)), headers=JSON)
    extra = {**VALID_TRANSACTION, "card_number": "4111111111111111", "amount_eur": 1e308, "__proto__": {}}
    padded = client.post(route, content=_body(route, json.dumps(extra)), headers=JSON)
    assert plain.status_code == padded.status_code == 200
    assert padded.json() == plain.json()
    assert "4111" not in padded.text


def test_hostile_unknown_field_beside_a_batch_is_refused(client: TestClient) -> None:
    response = client.post("/predict/batch", json={"transactions": [VALID_TRANSACTION], "priority": "high"})
    body = _assert_refused(response, 422, ["body", "priority"])
    assert body["detail"][0]["type"] == "extra_forbidden"


# -- bodies that are not a transaction -------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "payload",
    [b"", b" ", b"hello", b"{", b'{"amount": 1', b"\xff\xfe\x00", b"\x00" * 64, b"{'amount': 1}"],
    ids=["empty", "blank", "word", "open-brace", "truncated", "bad-utf8", "nul-bytes", "single-quotes"],
)
def test_hostile_body_not_json_is_422(client: TestClient, route: str, payload: bytes) -> None:
    body = _assert_refused(client.post(route, content=payload, headers=JSON), 422)
    assert [issue["type"] for issue in body["detail"]] == ["json_invalid"]
    assert body["detail"][0]["loc"][0] == "body"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("payload", [b"[]", b"[{}]", b"null", b"1", b'"x"', b"true"])
def test_hostile_body_not_an_object_is_422(client: TestClient, route: str, payload: bytes) -> None:
    top = b"[" + json.dumps(VALID_TRANSACTION).encode() + b"]" if payload == b"[{}]" else payload
    body = _assert_refused(client.post(route, content=top, headers=JSON), 422)
    assert body["detail"][0]["loc"][0] == "body"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")], ids=["arrays", "objects"])
def test_hostile_json_nested_10000_deep_is_422(
    client: TestClient, route: str, opener: str, closer: str
) -> None:
    deep = opener * 10_000 + "1" + closer * 10_000
    for payload in (deep, _body(route, _raw_transaction("amount", deep))):
        body = _assert_refused(client.post(route, content=payload, headers=JSON), 422)
        assert body["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("route", ROUTES)
def test_hostile_body_of_50_mb_is_413_naming_the_limit(client: TestClient, route: str) -> None:
    payload = b'{"transactions": [' + b" " * FIFTY_MB + b"]}"
    body = _assert_refused(client.post(route, content=payload, headers=JSON), 413)
    assert str(MAX_BODY_BYTES) in body["detail"]
    assert "MAX_BODY_BYTES" in body["detail"]


@pytest.mark.parametrize("route", ROUTES)
def test_hostile_body_just_over_the_limit_is_413_and_at_the_limit_is_read(
    client: TestClient, route: str
) -> None:
    head = _body(route, json.dumps(VALID_TRANSACTION)).encode()
    at_limit = head + b" " * (MAX_BODY_BYTES - len(head))
    assert client.post(route, content=at_limit, headers=JSON).status_code == 200
    _assert_refused(client.post(route, content=at_limit + b" ", headers=JSON), 413)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/octet-stream",
        "jsonp",
    ],
)
def test_hostile_wrong_content_type_is_415(client: TestClient, route: str, content_type: str) -> None:
    payload = _body(route, json.dumps(VALID_TRANSACTION))
    body = _assert_refused(client.post(route, content=payload, headers={"content-type": content_type}), 415)
    assert "application/json" in body["detail"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/problem+json"])
def test_hostile_json_content_type_variants_are_read(
    client: TestClient, route: str, content_type: str
) -> None:
    payload = _body(route, json.dumps(VALID_TRANSACTION))
    assert client.post(route, content=payload, headers={"content-type": content_type}).status_code == 200


# -- batches ---------------------------------------------------------------------------------------


def test_hostile_batch_one_row_over_the_cap_is_413(client: TestClient) -> None:
    cap = Settings.model_fields["max_batch_rows"].default
    response = client.post("/predict/batch", json={"transactions": [VALID_TRANSACTION] * (cap + 1)})
    body = _assert_refused(response, 413)
    assert f"{cap + 1} transactions" in body["detail"] and f"limit is {cap}" in body["detail"]
    at_cap = client.post("/predict/batch", json={"transactions": [VALID_TRANSACTION] * cap})
    assert at_cap.status_code == 200
    assert len(at_cap.json()["predictions"]) == cap


@pytest.mark.parametrize(
    "field,token",
    [("hour", "24"), ("amount", "NaN"), ("amount", '"150"'), ("merchant_category", "true"), ("hour", "14.5")],
)
def test_hostile_batch_whose_last_row_is_invalid_is_422_naming_it(
    client: TestClient, field: str, token: str
) -> None:
    rows = 10_000
    good = json.dumps(VALID_TRANSACTION)
    payload = '{"transactions": [' + ", ".join([good] * (rows - 1) + [_raw_transaction(field, token)]) + "]}"
    response = client.post("/predict/batch", content=payload, headers=JSON)
    _assert_refused(response, 422, ["body", "transactions", rows - 1, field])


def test_hostile_batch_last_row_missing_a_field_is_422_naming_it(client: TestClient) -> None:
    partial = {k: v for k, v in VALID_TRANSACTION.items() if k != "distance_from_home"}
    response = client.post("/predict/batch", json={"transactions": [VALID_TRANSACTION] * 99 + [partial]})
    _assert_refused(response, 422, ["body", "transactions", 99, "distance_from_home"])


@pytest.mark.parametrize("value", ["maybe", "", "2", "TRUE!"])
def test_hostile_explain_flag_that_is_not_a_boolean_is_422(client: TestClient, value: str) -> None:
    for route in ROUTES:
        payload = _body(route, json.dumps(VALID_TRANSACTION))
        response = client.post(f"{route}?explain={value}", content=payload, headers=JSON)
        _assert_refused(response, 422, ["query", "explain"])


# -- over the wire: the real server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    root = tmp_path_factory.mktemp("hostile-live")
    with live_service(model_dir_with(root, "v1"), root / "service.log") as live:
        yield live


def _exchange(port: int, request: bytes, body_chunks: Iterator[bytes] | None = None) -> bytes:
    """Send raw bytes and read the answer; a server that answers and closes mid-upload is fine."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        if body_chunks is not None:
            try:
                for chunk in body_chunks:
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered before the upload ended and closed the connection
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and _complete(received):
                    break
        except ConnectionResetError:
            pass
        return received


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _json_body(response: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(response.partition(b"\r\n\r\n")[2])
    return parsed


def _assert_still_serving(service: LiveService) -> None:
    response = httpx.post(f"{service.url}/predict", json=VALID_TRANSACTION, timeout=30)
    assert response.status_code == 200


@pytest.mark.slow
def test_hostile_wire_50_mb_body_with_content_length_is_413_before_reading(service: LiveService) -> None:
    before = rss_bytes(service.process.pid)
    head = (
        f"POST /predict/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {FIFTY_MB}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = _exchange(service.port, head, iter([b" " * (1 << 20)] * 50))
    elapsed = time.monotonic() - started
    assert _status(answer) == 413, answer[:500]
    assert "MAX_BODY_BYTES" in _json_body(answer)["detail"]
    assert rss_bytes(service.process.pid) - before < 20 * 1024 * 1024  # the 50 MB were never held
    assert elapsed < 30
    _assert_still_serving(service)


@pytest.mark.slow
def test_hostile_wire_50_mb_chunked_body_is_413(service: LiveService) -> None:
    before = rss_bytes(service.process.pid)

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"100000\r\n" + b" " * (1 << 20) + b"\r\n"
        yield b"0\r\n\r\n"

    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = _exchange(service.port, head, chunks())
    assert _status(answer) == 413, answer[:500]
    assert "MAX_BODY_BYTES" in _json_body(answer)["detail"]
    assert rss_bytes(service.process.pid) - before < 20 * 1024 * 1024
    _assert_still_serving(service)


@pytest.mark.slow
def test_hostile_wire_50_mb_through_httpx_is_413(service: LiveService) -> None:
    # The same through an ordinary client, which may see the answer or a closed connection first;
    # the chunked upload (no Content-Length) is read until the cap, so the answer always arrives.
    def body() -> Iterator[bytes]:
        for _ in range(50):
            yield b" " * (1 << 20)

    response = httpx.post(f"{service.url}/predict/batch", content=body(), headers=JSON, timeout=60)
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["detail"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"GARBAGE\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    ],
    ids=["non-numeric-length", "two-lengths", "no-request-line", "bad-header-name"],
)
def test_hostile_wire_malformed_http_is_400(service: LiveService, request_bytes: bytes) -> None:
    # Answered by uvicorn's HTTP parser before the app sees anything: a plain-text 400.
    answer = _exchange(service.port, request_bytes)
    assert _status(answer) == 400, answer[:300]
    _assert_still_serving(service)


@pytest.mark.slow
def test_hostile_wire_nested_json_is_422(service: LiveService) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    response = httpx.post(f"{service.url}/predict", content=deep, headers=JSON, timeout=30)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.slow
def test_hostile_wire_service_logged_no_server_error(service: LiveService) -> None:
    # Last in this module: everything above reached the same server.
    for _ in range(50):
        lines = service.log_lines()
        if any(line.get("route") == "/predict" for line in lines):
            break
        time.sleep(0.1)
    access = [line for line in lines if line.get("logger") == "service.access"]
    assert access
    assert [line for line in access if line["status"] >= 500] == []
    assert [line for line in lines if line.get("level") == "ERROR" or "exc" in line] == []
