"""The service's security promises: verified model files, the admin token, the reload rate limit,
CORS and the security headers."""

from __future__ import annotations

import hmac
import io
import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.api.routes import model as model_route
from service.api.routes.model import AttemptLimiter
from service.config import Settings
from service.observability import JsonFormatter
from tests.reliability.service_support import (
    ADMIN_TOKEN,
    VALID_TRANSACTION,
    auth,
    booster,
    client_of,
    model_dir_with,
    promote_version,
    rewrite_meta,
    write_version,
)

# -- model files are verified against meta.json's sha256, at start-up and on reload ----------------


def _swap_in_other_booster(model_dir: Path, version: str, donor: str) -> None:
    """Replace ``version``'s booster by a perfectly valid booster of another version, leaving its
    meta.json as it was: only the sha256 check can tell."""
    shutil.copyfile(
        model_dir / "versions" / donor / "booster.ubj", model_dir / "versions" / version / "booster.ubj"
    )


def test_security_start_up_refuses_a_valid_booster_that_is_not_the_hashed_one(tmp_path: Path) -> None:
    model_dir = model_dir_with(tmp_path, "v1", "v2")
    _swap_in_other_booster(model_dir, "v1", donor="v2")
    with client_of(model_dir) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "sha256" in ready.json()["detail"]
        assert "booster" in ready.json()["detail"]
        assert client.get("/health").json() == {
            "status": "ok",
            "model_loaded": False,
            "model_version": "none",
        }
        assert client.post("/predict", json=VALID_TRANSACTION).status_code == 503


def test_security_reload_refuses_a_valid_booster_that_is_not_the_hashed_one(tmp_path: Path) -> None:
    model_dir = model_dir_with(tmp_path, "v1", "v2", "v3")
    with client_of(model_dir) as client:
        assert client.get("/ready").json()["model_version"] == "v1"
        _swap_in_other_booster(model_dir, "v2", donor="v3")
        promote_version(model_dir, "v2")
        response = client.post("/reload-model", headers=auth())
        assert response.status_code == 409
        assert "sha256" in response.json()["detail"]
        assert response.json()["serving_version"] == "v1"
        assert client.post("/predict", json=VALID_TRANSACTION).json()["model_version"] == "v1"


def test_security_start_up_refuses_a_changed_reference_sample(tmp_path: Path) -> None:
    # Every artifact meta.json lists is verified, not only the booster the scorer uses.
    model_dir = model_dir_with(tmp_path, "v1")
    with (model_dir / "versions" / "v1" / "reference.parquet").open("ab") as handle:
        handle.write(b"\0")
    with client_of(model_dir) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "reference" in ready.json()["detail"] and "sha256" in ready.json()["detail"]


def test_security_reload_with_a_recomputed_hash_loads_the_new_bytes(tmp_path: Path) -> None:
    # The control case of the two tests above: the same swap, with meta.json telling the truth, loads.
    import hashlib

    model_dir = model_dir_with(tmp_path, "v1", "v2", "v3")
    _swap_in_other_booster(model_dir, "v2", donor="v3")
    payload = (model_dir / "versions" / "v2" / "booster.ubj").read_bytes()
    promote_version(model_dir, "v2")
    with client_of(model_dir) as client:
        assert client.get("/ready").status_code == 503

        def fix(raw: dict[str, Any]) -> None:
            raw["artifacts"]["booster"].update(sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload))

        rewrite_meta(model_dir, fix)
        response = client.post("/reload-model", headers=auth())
        assert response.status_code == 200, response.text
        assert response.json()["new_version"] == "v2"


# -- the admin token -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        auth(),
        auth("wrong-token-of-32-characters-xxx"),
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["no-header", "the-right-token", "another-token", "basic-auth"],
)
def test_security_reload_without_configured_token_is_disabled(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    model_dir = model_dir_with(tmp_path, "v1", "v2")
    with client_of(model_dir, admin_token=None) as client:
        assert client.get("/ready").json()["model_version"] == "v1"
        promote_version(model_dir, "v2")
        response = client.post("/reload-model", headers=headers)
        assert response.status_code == 403
        assert response.json() == {
            "detail": "model reload is disabled: no ADMIN_TOKEN is configured on this service"
        }
        assert client.get("/ready").json()["model_version"] == "v1"


WRONG_TOKENS = {
    "missing": None,
    "empty": "",
    "prefix": ADMIN_TOKEN[:-1],
    "one-char-longer": ADMIN_TOKEN + "0",
    "same-length-last-char-differs": ADMIN_TOKEN[:-1] + ("0" if ADMIN_TOKEN[-1] != "0" else "1"),
    "same-length-first-char-differs": ("X" if ADMIN_TOKEN[0] != "X" else "Y") + ADMIN_TOKEN[1:],
    "very-long": "a" * 8000,
    "one-char": "a",
    "non-ascii": "tëst-admin-token-0123456789abcdef",
}


def test_security_wrong_tokens_get_identical_answers_through_compare_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int]] = []
    real_compare = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(model_route.hmac, "compare_digest", spy)
    model_dir = model_dir_with(tmp_path, "v1")
    answers = {}
    with client_of(model_dir, reload_rate_limit=100) as client:
        for name, token in WRONG_TOKENS.items():
            # Header values travel as latin-1 bytes; httpx refuses str outside ASCII.
            headers = {} if token is None else {"Authorization": f"Bearer {token}".encode("latin-1")}
            calls_before = len(calls)
            response = client.post("/reload-model", headers=headers)
            # Every wrong token, however long or short, goes through exactly one comparison of two
            # 32-byte digests: the time taken depends on neither its length nor its content.
            assert calls[calls_before:] == [(32, 32)], name
            answers[name] = (
                response.status_code,
                response.json(),
                response.headers.get("www-authenticate"),
                response.headers.get("content-length"),
            )
        right = client.post("/reload-model", headers=auth())
    assert right.status_code == 200
    assert calls[-1] == (32, 32)
    expected = (
        401,
        {"detail": "a valid 'Authorization: Bearer <ADMIN_TOKEN>' header is required"},
        "Bearer",
        answers["missing"][3],
    )
    assert answers == dict.fromkeys(WRONG_TOKENS, expected)


def test_security_token_is_never_logged(tmp_path: Path) -> None:
    # The service's own JSON formatter, on a handler of the service's logger: exactly what reaches
    # stdout in production, extra fields included.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    service_logger = logging.getLogger("service")
    service_logger.addHandler(handler)
    level = service_logger.level
    service_logger.setLevel(logging.DEBUG)
    try:
        with client_of(model_dir_with(tmp_path, "v1"), log_level="DEBUG") as client:
            wrong = client.post("/reload-model", headers=auth("wrong-token-of-32-characters-xxx"))
            right = client.post("/reload-model", headers=auth())
    finally:
        service_logger.removeHandler(handler)
        service_logger.setLevel(level)
    assert (wrong.status_code, right.status_code) == (401, 200)
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(line["msg"] == "model reloaded" for line in lines)
    assert any(line.get("status") == 401 for line in lines)
    assert ADMIN_TOKEN not in text and "wrong-token-of-32" not in text


# -- the reload rate limit -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_security_reload_rate_limit_counts_failed_auth_and_answers_429(tmp_path: Path) -> None:
    model_dir = model_dir_with(tmp_path, "v1", "v2")
    clock = FakeClock()
    with client_of(model_dir, reload_rate_limit=3, reload_rate_window=60) as client:
        assert client.get("/ready").json()["model_version"] == "v1"
        client.app.state.reload_limiter = AttemptLimiter(3, 60, clock=clock)  # type: ignore[attr-defined]
        statuses = [client.post("/reload-model", headers=auth("x" * 32)).status_code for _ in range(2)]
        clock.now += 10
        statuses.append(client.post("/reload-model").status_code)
        assert statuses == [401, 401, 401]
        promote_version(model_dir, "v2")
        clock.now += 5
        limited = client.post("/reload-model", headers=auth())
        assert limited.status_code == 429
        # The oldest attempt (at t=0) leaves the 60 s window at t=60; it is now t=15.
        assert limited.headers["retry-after"] == "45"
        assert "RELOAD_RATE_LIMIT" in limited.json()["detail"]
        assert client.get("/ready").json()["model_version"] == "v1"  # the limited attempt did nothing
        clock.now += 44.5
        assert client.post("/reload-model", headers=auth()).status_code == 429
        assert client.post("/reload-model", headers=auth()).headers["retry-after"] == "1"
        clock.now += 0.5
        allowed = client.post("/reload-model", headers=auth())
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["new_version"] == "v2"


def test_security_reload_rate_limit_applies_when_reload_is_disabled(tmp_path: Path) -> None:
    model_dir = model_dir_with(tmp_path, "v1")
    with client_of(model_dir, admin_token=None, reload_rate_limit=2) as client:
        statuses = [client.post("/reload-model", headers=auth()).status_code for _ in range(3)]
    assert statuses == [403, 403, 429]


def test_security_reload_rate_limit_is_per_app_and_read_from_settings(tmp_path: Path) -> None:
    model_dir = model_dir_with(tmp_path, "v1")
    with (
        client_of(model_dir, reload_rate_limit=1) as first,
        client_of(model_dir, reload_rate_limit=2) as second,
    ):
        assert [first.post("/reload-model").status_code for _ in range(2)] == [401, 429]
        assert [second.post("/reload-model").status_code for _ in range(3)] == [401, 401, 429]


def test_security_reload_rate_limit_documented_in_openapi(tmp_path: Path) -> None:
    with client_of(model_dir_with(tmp_path, "v1")) as client:
        responses = client.get("/openapi.json").json()["paths"]["/reload-model"]["post"]["responses"]
    assert {"200", "401", "403", "409", "429"} <= set(responses)
    assert "Retry-After" in responses["429"]["headers"]


def test_security_attempt_limiter_is_exact_under_threads() -> None:
    limiter = AttemptLimiter(50, 3600)
    allowed: list[bool] = []
    lock = threading.Lock()

    def knock() -> None:
        for _ in range(100):
            result = limiter.attempt() is None
            with lock:
                allowed.append(result)

    threads = [threading.Thread(target=knock) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 800
    assert allowed.count(True) == 50


def test_security_attempt_limiter_window_slides() -> None:
    clock = FakeClock()
    limiter = AttemptLimiter(2, 10, clock=clock)
    assert limiter.attempt() is None
    clock.now += 4
    assert limiter.attempt() is None
    assert limiter.attempt() == pytest.approx(6)
    clock.now += 6  # the first attempt leaves the window
    assert limiter.attempt() is None
    assert limiter.attempt() == pytest.approx(4)


def test_security_reload_rate_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELOAD_RATE_LIMIT", "7")
    monkeypatch.setenv("RELOAD_RATE_WINDOW", "30")
    values = Settings(admin_token=None)
    assert (values.reload_rate_limit, values.reload_rate_window) == (7, 30.0)
    monkeypatch.delenv("RELOAD_RATE_LIMIT")
    monkeypatch.delenv("RELOAD_RATE_WINDOW")
    assert (Settings(admin_token=None).reload_rate_limit, Settings(admin_token=None).reload_rate_window) == (
        10,
        60.0,
    )
    monkeypatch.setenv("RELOAD_RATE_LIMIT", "0")
    with pytest.raises(ValidationError):
        Settings(admin_token=None)


# -- CORS ------------------------------------------------------------------------------------------

ALLOWED = "https://analysts.example"
DISALLOWED = "https://evil.example"


def _preflight(client: Any, origin: str) -> Any:
    return client.options(
        "/predict",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


def test_security_cors_preflight_from_allowed_origin(tmp_path: Path) -> None:
    with client_of(model_dir_with(tmp_path, "v1"), cors_origins=[ALLOWED]) as client:
        response = _preflight(client, ALLOWED)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in response.headers


def test_security_cors_preflight_from_disallowed_origin_is_refused(tmp_path: Path) -> None:
    with client_of(model_dir_with(tmp_path, "v1"), cors_origins=[ALLOWED]) as client:
        response = _preflight(client, DISALLOWED)
        # An origin that only shares a prefix or a suffix with the allowed one is another origin.
        lookalike = _preflight(client, ALLOWED + ".evil.example")
    for answer in (response, lookalike):
        assert answer.status_code == 400
        assert "access-control-allow-origin" not in answer.headers


def test_security_cors_preflight_for_a_method_not_allowed_is_refused(tmp_path: Path) -> None:
    with client_of(model_dir_with(tmp_path, "v1"), cors_origins=[ALLOWED]) as client:
        response = client.options(
            "/predict", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "DELETE"}
        )
    assert response.status_code == 400


def test_security_cors_simple_requests(tmp_path: Path) -> None:
    with client_of(model_dir_with(tmp_path, "v1"), cors_origins=[ALLOWED]) as client:
        allowed = client.post("/predict", json=VALID_TRANSACTION, headers={"Origin": ALLOWED})
        disallowed = client.post("/predict", json=VALID_TRANSACTION, headers={"Origin": DISALLOWED})
        health = client.get("/health", headers={"Origin": DISALLOWED})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    # The server still answers (CORS is enforced by the browser), but without the header the
    # browser will not hand the answer to the disallowed page.
    assert disallowed.status_code == 200
    assert "access-control-allow-origin" not in disallowed.headers
    assert "access-control-allow-origin" not in health.headers


def test_security_no_cors_configured_allows_no_origin(tmp_path: Path) -> None:
    with client_of(model_dir_with(tmp_path, "v1")) as client:
        preflight = _preflight(client, ALLOWED)
        simple = client.post("/predict", json=VALID_TRANSACTION, headers={"Origin": ALLOWED})
    assert preflight.status_code == 405  # no CORS layer: OPTIONS is just a method /predict lacks
    assert "access-control-allow-origin" not in preflight.headers
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers


# -- security headers ------------------------------------------------------------------------------


def test_security_headers_on_every_kind_of_response(tmp_path: Path) -> None:
    model_dir = model_dir_with(tmp_path, "v1")
    write_version(model_dir, "v2", booster("v2"), promote=False)
    with client_of(model_dir, max_batch_rows=2) as client:
        responses = {
            "200": client.post("/predict", json=VALID_TRANSACTION),
            "401": client.post("/reload-model"),
            "404": client.get("/no-such-route"),
            "413": client.post("/predict/batch", json={"transactions": [VALID_TRANSACTION] * 3}),
            "415": client.post("/predict", content=b"amount=1", headers={"content-type": "text/plain"}),
            "422": client.post("/predict", json={}),
            "metrics": client.get("/metrics"),
        }
    for name, response in responses.items():
        assert response.headers["x-content-type-options"] == "nosniff", name
        assert response.headers["x-frame-options"] == "DENY", name
        assert response.headers["referrer-policy"] == "no-referrer", name
        assert response.headers["cache-control"] == "no-store", name
    assert [r.status_code for r in list(responses.values())[:-1]] == [200, 401, 404, 413, 415, 422]
