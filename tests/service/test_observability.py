"""Structured access logs and the Prometheus endpoint."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.observability import BatchingStreamHandler, JsonFormatter


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def logs() -> Iterator[Capture]:
    capture = Capture()
    logger = logging.getLogger("service")
    previous = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    yield capture
    logger.removeHandler(capture)
    logger.setLevel(previous)


def test_observability_one_json_line_per_request(client: TestClient, logs: Capture, factories: Any) -> None:
    response = client.post("/predict", json=factories.valid(), headers={"X-Request-ID": "req-42"})
    access = [line for line in logs.lines if line["logger"] == "service.access"]
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == "req-42" == response.headers["x-request-id"]
    assert line["route"] == "/predict"
    assert line["method"] == "POST"
    assert line["status"] == 200
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0


def test_observability_never_logs_the_admin_token(client: TestClient, logs: Capture, factories: Any) -> None:
    client.post("/reload-model", headers=factories.auth())
    client.post("/reload-model", headers=factories.auth("wrong-token-wrong-token-wrong"))
    text = json.dumps(logs.lines)
    assert factories.admin_token not in text
    assert "wrong-token-wrong-token-wrong" not in text
    assert [line["status"] for line in logs.lines if line["logger"] == "service.access"] == [200, 401]


def test_observability_unmatched_paths_share_one_label(client: TestClient) -> None:
    for path in ("/a", "/b", "/c"):
        client.get(path)
    text = client.get("/metrics").text
    assert 'http_requests_total{method="GET",route="<unmatched>",status="404"} 3.0' in text


def test_metrics_counts_routes_statuses_outcomes_and_version(client: TestClient, factories: Any) -> None:
    client.post("/predict", json=factories.valid())
    client.post("/predict", json=factories.fraud())
    client.post("/predict", json={**factories.valid(), "hour": 99})
    client.post("/predict/batch", json={"transactions": [factories.fraud()] * 3})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'http_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
    assert 'http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'http_request_duration_seconds_count{method="POST",route="/predict",status="200"} 2.0' in text
    assert 'fraud_predictions_total{model_version="v1",outcome="fraud"} 4.0' in text
    assert 'fraud_predictions_total{model_version="v1",outcome="legit"} 1.0' in text
    assert 'fraud_model_info{threshold="0.5",trained_at="2026-01-01T00:00:00+00:00",version="v1"} 1.0' in text
    assert "fraud_model_loaded 1.0" in text


def test_metrics_without_model_reports_not_loaded(empty_client: TestClient) -> None:
    empty_client.get("/health")
    text = empty_client.get("/metrics").text
    assert "fraud_model_loaded 0.0" in text
    assert 'fraud_model_info{threshold="",trained_at="",version="none"} 1.0' in text


@pytest.mark.parametrize(
    "created", [0.0, 1_764_800_000.0, 1_764_800_000.0005, 1_764_800_000.9999, 1_764_800_059.5]
)
def test_json_formatter_timestamp_is_iso_utc_to_the_millisecond(created: float) -> None:
    record = logging.makeLogRecord({"name": "service.test", "msg": "hello", "levelname": "INFO"})
    record.created = created
    line = json.loads(JsonFormatter().format(record))
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert line["ts"] == expected
    assert (line["level"], line["logger"], line["msg"]) == ("INFO", "service.test", "hello")


def test_json_formatter_logs_extras_orjson_cannot_encode() -> None:
    formatter = JsonFormatter()
    record = logging.makeLogRecord({"name": "service.test", "msg": "odd", "huge": 2**70, "path": Path("/x")})
    line = json.loads(formatter.format(record))
    assert line["huge"] == 2**70
    assert line["path"] == "/x"
    # The cached second moves on with the clock.
    for created in (10.25, 11.5):
        record.created = created
        assert json.loads(formatter.format(record))["ts"].startswith(f"1970-01-01T00:00:{int(created):02d}.")


def test_observability_configure_logging_skips_the_fields_no_line_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.observability import configure_logging

    for flag in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, getattr(logging, flag))  # restored after the test
    logger = logging.getLogger("service")
    previous = logger.level
    configure_logging("INFO")
    records: list[logging.LogRecord] = []
    keep = logging.Handler()
    keep.emit = records.append  # type: ignore[method-assign,assignment]
    access = logging.getLogger("service.access")
    access.addHandler(keep)
    try:
        access.info("request", extra={"status": 200})
    finally:
        access.removeHandler(keep)
        logger.setLevel(previous)
    (record,) = records
    assert (record.threadName, record.processName, record.process) == (None, None, None)
    assert (record.pathname, record.funcName) == ("(unknown file)", "(unknown function)")
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "request" and line["status"] == 200 and line["logger"] == "service.access"


class Recorder:
    """A text stream that keeps each write() call apart, to count the writes."""

    def __init__(self, fail: bool = False) -> None:
        self.writes: list[str] = []
        self.fail = fail
        self.flushes = 0

    def write(self, text: str) -> int:
        if self.fail:
            raise OSError(32, "Broken pipe")
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        self.flushes += 1


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "service.test", "msg": message, "levelno": level, "levelname": "X"})


@pytest.fixture
def batching() -> Iterator[Callable[..., tuple[BatchingStreamHandler, Recorder]]]:
    handlers: list[BatchingStreamHandler] = []

    def make(interval: float, **kwargs: Any) -> tuple[BatchingStreamHandler, Recorder]:
        stream = Recorder(fail=kwargs.pop("fail", False))
        handler = BatchingStreamHandler(stream, interval, **kwargs)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(handler)
        return handler, stream

    yield make
    for handler in handlers:
        handler.close()


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_batching_handler_writes_waiting_lines_together(batching: Any) -> None:
    # An interval far longer than the three calls take: the background write cannot come between them.
    handler, stream = batching(1.0)
    for message in ("one", "two", "three"):
        handler.handle(_record(message))
    assert stream.writes == []  # waiting for the interval, not written one by one
    _wait_for(lambda: bool(stream.writes))
    assert stream.writes == ["one\ntwo\nthree\n"]


def test_batching_handler_writes_a_warning_at_once_after_the_lines_before_it(batching: Any) -> None:
    handler, stream = batching(60)
    handler.handle(_record("request 1"))
    handler.handle(_record("request 2"))
    handler.handle(_record("model refused", logging.WARNING))
    assert stream.writes == ["request 1\nrequest 2\nmodel refused\n"]


def test_batching_handler_writes_when_max_bytes_are_pending(batching: Any) -> None:
    handler, stream = batching(60, max_bytes=20)
    handler.handle(_record("x" * 9))
    assert stream.writes == []
    handler.handle(_record("y" * 9))  # 20 bytes with the newlines
    assert stream.writes == ["x" * 9 + "\n" + "y" * 9 + "\n"]


def test_batching_handler_without_interval_writes_every_line(batching: Any) -> None:
    handler, stream = batching(0)
    handler.handle(_record("one"))
    handler.handle(_record("two"))
    assert stream.writes == ["one\n", "two\n"]


def test_batching_handler_flush_and_close_write_what_waits(batching: Any) -> None:
    handler, stream = batching(60)
    handler.handle(_record("before flush"))
    handler.flush()
    assert stream.writes == ["before flush\n"]
    handler.handle(_record("before close"))
    handler.close()
    assert stream.writes[-1] == "before close\n"
    # Closed (as logging.config.dictConfig closes every handler), it writes each line at once.
    handler.handle(_record("after close"))
    assert stream.writes[-1] == "after close\n"


def test_batching_handler_stream_failure_never_reaches_the_caller(
    batching: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    handler, _ = batching(0, fail=True)
    handler.handle(_record("lost"))  # reported on stderr by logging's handleError, not raised
    assert "Broken pipe" in capsys.readouterr().err


def test_configure_logging_replaces_its_handler_when_a_later_setup_closed_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging.config

    from service.observability import configure_logging

    for flag in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, getattr(logging, flag))
    logger = logging.getLogger("service")
    previous_level, previous_handlers = logger.level, list(logger.handlers)
    try:
        for handler in previous_handlers:
            logger.removeHandler(handler)
        configure_logging("INFO", 60)
        (first,) = logger.handlers
        configure_logging("INFO", 60)
        assert logger.handlers == [first]  # idempotent
        # What uvicorn's startup does: dictConfig closes every existing handler.
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
        assert isinstance(first, BatchingStreamHandler) and first.closed
        configure_logging("INFO", 60)
        (second,) = logger.handlers
        assert second is not first and isinstance(second, BatchingStreamHandler) and not second.closed
        second.close()
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in previous_handlers:
            logger.addHandler(handler)
        logger.setLevel(previous_level)
